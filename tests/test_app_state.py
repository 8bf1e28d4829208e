"""lib.app_state: one browser session's AppState (health retries, classification, scheme choice).

No services and no Streamlit: a fake EncryptedSession (tests/app_fakes.py) stands in for the real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from app_fakes import FakeSession, SchemeStarter, settings, wait_for

from lib import app_state
from lib.app_state import AppState
from lib.digits import DigitInput
from lib.errors import InvalidInput, StorageUnavailable
from lib.health import Health
from lib.reference import PlaintextModel, load_reference_model


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
    fake = FakeSession(scheme="ckks")  # a linear-model scheme: the reference below is a linear model
    state = AppState(settings(), lambda s, p, scheme: fake, scheme="ckks")
    model = PlaintextModel(
        coef=np.tile(np.arange(10.0)[:, None], (1, 784)) / 784, intercept=np.zeros(10), path=Path("m")
    )
    monkeypatch.setattr(app_state, "load_reference_model", lambda: model)
    digit = DigitInput(pixels=np.ones(784, dtype=np.float32), source="drawing")
    session = state.key.wait()
    first = state.classify(digit, session)
    assert first.label == 9 and first.reference is not None and first.reference.agrees
    assert first.key_id == "key1" and first.correct is None and first.reference_note == ""
    assert first.setup_timings_s == {"keygen": 1.0, "upload": 0.1} and state.last is first
    assert state.classify(digit, session) is first and fake.predictions == 1  # a double click
    assert state.classify(digit, session, debounce_s=0.0) is not first and fake.predictions == 2
    other = DigitInput(pixels=np.zeros(784, dtype=np.float32), source="drawing")
    assert state.classify(other, session).digit is other and fake.predictions == 3  # other pixels


def test_classify_says_why_there_is_no_reference_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        app_state, "load_reference_model", lambda: load_reference_model(tmp_path / "none.npz")
    )
    state = AppState(settings(), lambda s, p, scheme: FakeSession(scheme="ckks"), scheme="ckks")
    result = state.classify(
        DigitInput(pixels=np.ones(784, dtype=np.float32), source="drawing"), state.key.wait()
    )
    assert result.reference is None and "No plaintext model" in result.reference_note and result.label == 9


def test_classify_uses_the_session_it_is_given_and_does_not_wait_again() -> None:
    """The page waits for the key once (with its progress); classify only encrypts and scores."""
    state = AppState(settings(), SchemeStarter())
    given = FakeSession(key_id="given", scheme="bfv")
    result = state.classify(DigitInput(pixels=np.ones(784, dtype=np.float32), source="drawing"), given)
    assert result.key_id == "given" and result.scheme == "bfv" and given.predictions == 1
    assert not state.key.started  # classify neither started nor waited for a key of its own
    state.close()


# --- choosing the scheme -----------------------------------------------------------------------


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


def test_classify_records_the_scheme_and_does_not_debounce_across_schemes() -> None:
    starter = SchemeStarter()
    state = AppState(settings(), starter, scheme="ckks")
    digit = DigitInput(pixels=np.ones(784, dtype=np.float32), source="drawing")
    first = state.classify(digit, state.key.wait())
    assert first.scheme == "ckks"
    state.use_scheme("bfv")
    second = state.classify(digit, state.key.wait())  # the same pixels at once, another scheme: a new one
    assert second is not first and second.scheme == "bfv"
    state.close()
