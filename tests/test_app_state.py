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

    def __init__(self, key_id: str = "key1", scheme: str = "ckks") -> None:
        self.scheme_name = scheme
        self.scheme = {"name": scheme, "version": "1", "params": {}}
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

    def starter(_settings, progress, _scheme):
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
    key = SessionKey(
        settings(), lambda s, p, scheme: (_ for _ in ()).throw(StorageUnavailable("storage is down"))
    )
    key.start()
    wait_for(lambda: key.status().phase == "failed")
    assert key.status().failed_on_storage and key.status().message == "storage is down"
    with pytest.raises(DemoError, match="no session key yet: storage is down"):
        key.wait()

    fake = FakeSession()
    key = SessionKey(settings(), lambda s, p, scheme: fake)
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

    def starter(_settings, _progress, _scheme):
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
    state = AppState(settings(), lambda s, p, scheme: fake)
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


def test_accuracy_run_stops_rather_than_mix_schemes() -> None:
    labels = np.repeat(np.arange(10), 3)
    images = np.ones((30, 784), dtype=np.float32)
    run = AccuracyRun.plan(labels, 5, seed=2)
    run.step(FakeSession(scheme="ckks"), images, labels, None)
    assert run.scheme == "ckks"
    assert run.step(FakeSession(scheme="bfv"), images, labels, None) is None
    assert not run.active and len(run.items) == 1
    assert "changed from ckks to bfv" in run.errors[0] and "press Start" in run.errors[0]


# --- choosing the scheme -----------------------------------------------------------------------


class SchemeStarter:
    """A starter that makes FakeSessions of the scheme asked for; ``gate`` holds key setup back."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.made: list[FakeSession] = []
        self.fail: dict[str, DemoError] = {}

    def __call__(self, _settings, progress, scheme: str) -> FakeSession:
        progress(f"Generating the {scheme} key pair", 0.4)
        self.gate.wait(5)
        if scheme in self.fail:
            raise self.fail[scheme]
        session = FakeSession(key_id=f"{scheme}-{len(self.made)}", scheme=scheme)
        self.made.append(session)
        return session


def test_switching_the_scheme_makes_a_new_key_and_deletes_the_old_one() -> None:
    starter = SchemeStarter()
    state = AppState(settings(), starter, scheme="ckks")
    state.key.start()
    first = state.key.wait()
    assert first.scheme_name == "ckks" and state.key.status().scheme == "ckks"

    starter.gate.clear()
    state.use_scheme("bfv")
    status = state.key.status()
    assert status.phase == "switching" and status.busy and status.target_scheme == "bfv"
    assert status.scheme == "ckks"  # the current key still is the old one
    assert state.scheme == "bfv"  # the choice is remembered at once
    wait_for(lambda: state.key.status().message == "Generating the bfv key pair")
    starter.gate.set()
    session = state.key.wait()  # waits for the switch: a prediction now uses the chosen scheme
    assert session.scheme_name == "bfv" and first.closed and not session.closed
    status = state.key.status()
    assert status.usable and status.scheme == "bfv" and status.key_id == session.key_id and not status.notice
    assert status.scheme_descriptor["name"] == "bfv"
    with pytest.raises(InvalidInput, match="no scheme 'nope'"):
        state.use_scheme("nope")
    state.close()
    assert session.closed


def test_a_scheme_chosen_while_a_key_is_made_is_followed_afterwards() -> None:
    starter = SchemeStarter()
    starter.gate.clear()
    key = SessionKey(settings(), starter, scheme="ckks")
    key.start()
    wait_for(lambda: key.status().message == "Generating the ckks key pair")
    key.use_scheme("ei")
    key.use_scheme("bfv")  # changed their mind: only the last choice counts
    starter.gate.set()
    wait_for(lambda: key.status().usable and key.status().scheme == "bfv")
    assert [s.scheme_name for s in starter.made] == ["ckks", "bfv"]
    assert starter.made[0].closed
    key.close()


def test_a_failed_switch_keeps_the_old_key_and_says_so() -> None:
    starter = SchemeStarter()
    starter.fail["ei"] = StorageUnavailable("storage is down")
    key = SessionKey(settings(), starter, scheme="ckks")
    key.start()
    old = key.wait()
    key.use_scheme("ei")
    wait_for(lambda: key.status().usable and key.status().notice != "")
    status = key.status()
    assert status.scheme == "ckks" and key.scheme == "ckks" and not old.closed  # the choice goes back
    assert "Still using" in status.notice and "storage is down" in status.notice
    key.close()


def test_a_scheme_chosen_after_a_failed_start_starts_again_with_it() -> None:
    starter = SchemeStarter()
    starter.fail["ckks"] = StorageUnavailable("storage is down")
    key = SessionKey(settings(), starter, scheme="ckks")
    key.start()
    wait_for(lambda: key.status().phase == "failed")
    key.use_scheme("bfv")
    wait_for(lambda: key.status().usable)
    assert key.status().scheme == "bfv"
    key.close()


def test_classify_records_the_scheme_and_does_not_debounce_across_schemes() -> None:
    starter = SchemeStarter()
    state = AppState(settings(), starter, scheme="ckks")
    digit = DigitInput(pixels=np.ones(784, dtype=np.float32), source="drawing")
    first = state.classify(digit)
    assert first.scheme == "ckks"
    state.use_scheme("bfv")
    second = state.classify(digit)  # the same pixels at once, but another scheme: a new prediction
    assert second is not first and second.scheme == "bfv"
    state.close()
