"""lib.session_key: the session's key, made, rotated and switched on a background thread.

No services: a fake EncryptedSession (tests/app_fakes.py) stands in for the real one.
"""

from __future__ import annotations

import threading

import pytest
from app_fakes import FakeSession, SchemeStarter, settings, wait_for

from lib.errors import DemoError, StorageUnavailable
from lib.schemes import DEFAULT_SCHEME
from lib.session_key import SessionKey


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


def test_wait_starts_the_key_and_gives_up_with_a_message() -> None:
    starter = SchemeStarter()
    starter.gate.clear()
    key = SessionKey(settings(), starter, scheme="bfv")
    assert not key.started
    with pytest.raises(DemoError, match="still being made after 0 s"):
        key.wait(timeout_s=0.0)  # starts the key, which the gate holds back
    assert key.started and key.status().busy and key.status().target_scheme == "bfv"
    starter.gate.set()
    assert key.wait().scheme_name == "bfv"
    key.close()


def test_a_key_made_after_close_is_deleted_at_once() -> None:
    starter = SchemeStarter()
    starter.gate.clear()
    key = SessionKey(settings(), starter)
    key.start()
    wait_for(lambda: key.status().message == f"Generating the {DEFAULT_SCHEME} key pair")
    key.close()  # the browser session ended while the key was being made
    starter.gate.set()
    wait_for(lambda: len(starter.made) == 1 and starter.made[0].closed)
    assert not key.status().usable


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


def test_an_unexpected_error_is_logged_not_shown_as_a_traceback() -> None:
    key = SessionKey(settings(), lambda s, p, scheme: (_ for _ in ()).throw(RuntimeError("boom")))
    key.start()
    wait_for(lambda: key.status().phase == "failed")
    status = key.status()
    assert "failed unexpectedly (RuntimeError)" in status.message and "boom" not in status.message
    assert not status.failed_on_storage


# --- choosing the scheme -----------------------------------------------------------------------


def started_key(failing: str) -> SessionKey:
    """A ckks SessionKey, started, whose key setup for scheme ``failing`` fails on storage."""
    starter = SchemeStarter()
    starter.fail[failing] = StorageUnavailable("storage is down")
    key = SessionKey(settings(), starter, scheme="ckks")
    key.start()
    return key


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
    key = started_key(failing="ei")
    old = key.wait()
    key.use_scheme("ei")
    wait_for(lambda: key.status().usable and key.status().notice != "")
    status = key.status()
    assert status.scheme == "ckks" and key.scheme == "ckks" and not old.closed  # the choice goes back
    assert "Still using" in status.notice and "storage is down" in status.notice
    key.close()


def test_a_scheme_chosen_after_a_failed_start_starts_again_with_it() -> None:
    key = started_key(failing="ckks")
    wait_for(lambda: key.status().phase == "failed")
    key.use_scheme("bfv")
    wait_for(lambda: key.status().usable)
    assert key.status().scheme == "bfv"
    key.close()
