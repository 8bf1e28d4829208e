"""Unit tests of the app's shared logic (lib.app_state, lib.display, lib.reference, lib.accuracy).

No services and no Streamlit: a fake EncryptedSession stands in for the real one.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from lib import app_state
from lib.accuracy import AccuracyRun, balanced_order
from lib.app_state import AppState, DigitInput, Health, SessionKey
from lib.display import (
    ciphertext_hex,
    human_bytes,
    human_seconds,
    redact_sas,
    request_preview,
    sas_fields,
    waterfall_rows,
)
from lib.errors import DemoError, InvalidInput, StorageUnavailable
from lib.reference import PlaintextModel, ReferenceUnavailable, load_reference_model, reference_check
from lib.session import Prediction, Stage
from lib.settings import AppSettings, azurite_connection_string

SAS_URL = (
    "http://127.0.0.1:10000/devstoreaccount1/public-keys/abc?st=2026-01-01T00%3A00%3A00Z"
    "&se=2026-01-01T01%3A00%3A00Z&sp=r&sv=2025-11-05&sr=b&sig=SECRETSIG%2Babc%3D"
)


class FakeSession:
    """What SessionKey and AppState use of an EncryptedSession."""

    def __init__(self, key_id: str = "key1") -> None:
        self.key_id = key_id
        self.key_bytes = 8_978_344
        self.key_blob_url = f"http://127.0.0.1:10000/devstoreaccount1/public-keys/{key_id}"
        self.sas_expires_at = datetime(2030, 1, 1, tzinfo=UTC)
        self.setup_timings_s = {"keygen": 1.0, "upload": 0.1}
        self.closed = False
        self.predictions = 0
        self.fail_rotation: DemoError | None = None

    def rotate_key(self, progress) -> None:
        progress("Generating", 0.5)
        if self.fail_rotation is not None:
            raise self.fail_rotation
        self.key_id = self.key_id + "+"

    def close(self) -> None:
        self.closed = True

    def predict(self, pixels: np.ndarray) -> Prediction:
        self.predictions += 1
        scores = np.arange(10, dtype=float) * float(np.asarray(pixels).sum() > 0)
        return Prediction(
            scores=scores,
            label=int(np.argmax(scores)),
            stages=[Stage("encrypt", 0.05, "client"), Stage("compute", 1.0, "server")],
            sizes={
                "ciphertext_bytes": 1,
                "request_bytes": 2,
                "response_bytes": 3,
                "result_bytes": 4,
                "key_bytes": 5,
            },
            key_cache="miss",
            total_s=1.1,
            request_body={"ciphertexts": ["AAAA"], "keys": {"url": SAS_URL, "sha256": "0" * 64}},
        )


def settings() -> AppSettings:
    return AppSettings(
        blob_connection_string=azurite_connection_string(1), scoring_url="http://127.0.0.1:1/score"
    )


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


# --- display -----------------------------------------------------------------------------------


def test_units() -> None:
    assert human_bytes(164_895) == "165 KB"
    assert human_bytes(8_978_344) == "8.98 MB"
    assert human_bytes(512) == "512 B"
    assert human_seconds(0.0482) == "48 ms"
    assert human_seconds(1.234) == "1.23 s"


def test_waterfall_puts_key_setup_apart_and_stages_end_to_end() -> None:
    stages = [
        Stage("encrypt", 0.1, "client"),
        Stage("key fetch (cache miss)", 0.2, "server"),
        Stage("decrypt", 0.3, "client"),
    ]
    rows = waterfall_rows(stages, {"keygen": 2.0, "upload": 0.5})
    assert [r.phase for r in rows] == ["Once per session"] * 2 + ["This prediction"] * 3
    assert [r.stage for r in rows[2:]] == ["Encrypt (app)", "Server: key fetch (cache miss)", "Decrypt (app)"]
    assert rows[1].start_s == pytest.approx(2.0) and rows[1].end_s == pytest.approx(2.5)
    assert rows[2].start_s == 0.0 and rows[4].end_s == pytest.approx(0.6)
    assert [r.where for r in rows[2:]] == ["app", "server", "app"]


def test_sas_signature_is_hidden_and_the_body_is_truncated_not_mutated() -> None:
    assert "SECRETSIG" not in redact_sas(SAS_URL) and "sig=<signature hidden>" in redact_sas(SAS_URL)
    assert sas_fields(SAS_URL)["sp"] == "r" and "sig" not in sas_fields(SAS_URL)
    body = {"ciphertexts": ["x" * 1000], "keys": {"url": SAS_URL, "sha256": "ab"}}
    preview = request_preview(body, keep_chars=10)
    assert preview["ciphertexts"][0].startswith("x" * 10 + "… [990 more")
    assert "SECRETSIG" not in str(preview)
    assert body["ciphertexts"][0] == "x" * 1000 and body["keys"]["url"] == SAS_URL


def test_ciphertext_hex_dumps_the_first_bytes() -> None:
    assert ciphertext_hex("XqEQAwUB", n_bytes=4, per_line=2) == "0000  5e a1\n0002  10 03"


# --- reference ---------------------------------------------------------------------------------


def test_reference_check(tmp_path: Path) -> None:
    with pytest.raises(ReferenceUnavailable):
        load_reference_model(tmp_path / "missing.npz")
    coef = np.zeros((10, 784))
    coef[3] = 1.0
    np.savez(tmp_path / "m.npz", coef=coef, intercept=np.zeros(10))
    model = load_reference_model(tmp_path / "m.npz")
    pixels = np.full(784, 0.5)
    check = reference_check(model, pixels, model.scores(pixels) + 1e-6)
    assert check.agrees and check.plain_label == 3 and check.max_abs_error == pytest.approx(1e-6)
    assert not reference_check(model, pixels, np.eye(10)[5] * 1e4).agrees


# --- session key -------------------------------------------------------------------------------


def test_session_key_is_made_in_the_background_with_progress() -> None:
    release = threading.Event()

    def starter(_settings, progress):
        progress("Generating the key pair", 0.3)
        release.wait(5)
        return FakeSession()

    key = SessionKey(settings(), starter)
    key.start()
    wait_for(lambda: key.status().message == "Generating the key pair")
    assert key.status().busy and key.status().fraction == pytest.approx(0.3)
    seen: list[str] = []
    threading.Timer(0.2, release.set).start()
    session = key.wait(lambda message, _fraction: seen.append(message))
    assert session.key_id == "key1" and "Generating the key pair" in seen
    status = key.status()
    assert status.usable and status.key_id == "key1" and status.key_bytes == 8_978_344
    key.close()
    assert session.closed


def test_failed_setup_is_reported_and_rotation_failure_keeps_the_old_key() -> None:
    key = SessionKey(settings(), lambda s, p: (_ for _ in ()).throw(StorageUnavailable("storage is down")))
    key.start()
    wait_for(lambda: key.status().phase == "failed")
    assert key.status().failed_on_storage and key.status().message == "storage is down"
    with pytest.raises(DemoError, match="no session key yet: storage is down"):
        key.wait()

    fake = FakeSession()
    key = SessionKey(settings(), lambda s, p: fake)
    key.start()
    key.wait()
    key.rotate()
    wait_for(lambda: key.status().usable)
    assert key.status().key_id == "key1+"
    fake.fail_rotation = StorageUnavailable("storage is down")
    key.rotate()
    wait_for(lambda: key.status().usable and key.status().notice != "")
    assert key.status().key_id == "key1+" and "current key still works" in key.status().notice


def test_app_state_retries_key_setup_once_storage_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    storage_up = {"ok": False}
    calls = {"n": 0}

    def starter(_settings, _progress):
        calls["n"] += 1
        if not storage_up["ok"]:
            raise StorageUnavailable("storage is down")
        return FakeSession()

    def health(store, scorer) -> Health:
        return Health(storage_up["ok"], True, store.endpoint, scorer.url)

    monkeypatch.setattr(app_state, "check_health", health)
    monkeypatch.setattr(app_state, "_AUTO_RETRY_EVERY_S", 0.0)
    state = AppState(settings(), starter)
    assert not state.refresh().storage_ok
    wait_for(lambda: state.key.status().phase == "failed")
    state.refresh()  # storage still down: no retry
    assert calls["n"] == 1
    storage_up["ok"] = True
    assert state.refresh().all_ok
    wait_for(lambda: state.key.status().usable)
    assert calls["n"] == 2


def test_classify_runs_the_reference_check_and_debounces_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSession()
    state = AppState(settings(), lambda s, p: fake)
    model = PlaintextModel(
        coef=np.tile(np.arange(10.0)[:, None], (1, 784)) / 784, intercept=np.zeros(10), path=Path("m")
    )
    monkeypatch.setattr(app_state, "load_reference_model", lambda: model)
    digit = DigitInput(pixels=np.ones(784, dtype=np.float32), source="drawing")
    first = state.classify(digit)
    assert first.label == 9 and first.reference is not None and first.reference.agrees
    assert first.key_id == "key1" and first.correct is None
    assert state.classify(digit) is first and fake.predictions == 1  # a double click
    assert state.classify(digit, debounce_s=0.0) is not first and fake.predictions == 2


def test_digit_inputs() -> None:
    with pytest.raises(InvalidInput, match="draw a digit"):
        DigitInput.from_drawing(None)
    with pytest.raises(InvalidInput, match="draw a digit"):
        DigitInput.from_drawing(np.zeros((280, 280, 4), dtype=np.uint8))
    picked = DigitInput.from_gallery(0)
    assert picked.true_label is not None and picked.pixels.shape == (784,)


# --- accuracy run ------------------------------------------------------------------------------


def test_accuracy_run_is_balanced_stoppable_and_summarised() -> None:
    labels = np.repeat(np.arange(10), 3)
    order = balanced_order(labels, np.random.default_rng(0))
    assert sorted(order) == list(range(30))
    assert sorted(labels[order[:10]]) == list(range(10))

    run = AccuracyRun.plan(labels, 4, seed=1)
    images = np.ones((30, 784), dtype=np.float32)
    session = FakeSession()
    assert run.step(session, images, labels, None).encrypted_label == 9
    run.stopped = True
    assert not run.active and len(run.items) == 1
    run.stopped = False
    while run.active:
        run.step(session, images, labels, None)
    summary = run.summary()
    assert summary.done == 4 and summary.agreement is None
    assert summary.accuracy == sum(labels[i] == 9 for i in run.indices) / 4
    assert summary.latency_p50_s == pytest.approx(1.1)
