"""Unit tests: the app's side of the browser mode (lib/tab_mode.TabRelay) with a fake session.

What the tab sends is checked before anything is uploaded or relayed; every failure becomes a message
for the tab, never an exception; a new key pair's upload replaces (and deletes) the previous one.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from lib import tab_mode
from lib.errors import ServiceUnavailable
from lib.session import Relayed, Stage
from lib.settings import AppSettings
from tests.node_tab import NodeTab

KEY_REF, OTHER_REF, REQUEST_ID = "0123456789abcdef", "fedcba9876543210", "00112233aabbccdd"


class FakeSession:
    """Stands in for the EncryptedSession that uploads and relays (tests/test_browser_scheme.py runs the real one)."""

    def __init__(self, public_material: bytes) -> None:
        self.public_material = public_material
        self.sent: list[list[str]] = []
        self.closed = False
        self.failure: Exception | None = None

    def relay(self, ciphertexts: list[str]) -> Relayed:
        if self.failure is not None:
            raise self.failure
        self.sent.append(ciphertexts)
        stages = [Stage("request", 0.004, "client"), Stage("compute", 0.06, "server")]
        return Relayed(["UkVTVUxU"], stages, {"ciphertext_bytes": 1}, "hit", {})

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def tab() -> Any:
    node_tab = NodeTab()
    yield {"keys": node_tab.public_material, "ciphertext": node_tab.encrypt(np.zeros(784))}
    node_tab.close()


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[FakeSession]:
    started: list[FakeSession] = []

    def start(_settings: AppSettings, public_material: bytes) -> FakeSession:
        started.append(FakeSession(public_material))
        return started[-1]

    monkeypatch.setattr(tab_mode, "start_relay", start)
    return started


def request(tab: dict[str, str], *, key_ref: str = KEY_REF, keys: bool = True, **changes: Any) -> dict[str, Any]:
    sent = {"id": REQUEST_ID, "key_ref": key_ref, "ciphertext": tab["ciphertext"]}
    if keys:
        sent["public_material"] = tab["keys"]
    return {**sent, **changes}


def test_the_first_request_uploads_the_keys_then_relays(tab, sessions) -> None:
    relay = tab_mode.TabRelay(AppSettings())
    answer = relay.answer(request(tab))
    assert answer["id"] == REQUEST_ID and answer["result"] == "UkVTVUxU" and "error" not in answer
    assert answer["keys_uploaded"] == KEY_REF
    assert [name for name, _, _ in answer["stages"]] == ["upload public keys (once per tab)", "request", "compute"]
    (session,) = sessions
    assert session.public_material == base64.b64decode(tab["keys"])
    assert session.sent == [[tab["ciphertext"]]]
    again = relay.answer(request(tab, keys=False, id="1" * 16))
    assert again["result"] == "UkVTVUxU" and len(sessions) == 1  # no second upload
    assert [name for name, _, _ in again["stages"]] == ["request", "compute"]


def test_a_new_key_pair_replaces_the_old_one_and_close_deletes_it(tab, sessions) -> None:
    relay = tab_mode.TabRelay(AppSettings())
    relay.answer(request(tab))
    assert relay.answer(request(tab, key_ref=OTHER_REF))["keys_uploaded"] == OTHER_REF
    first, second = sessions
    assert first.closed and not second.closed
    relay.close()
    assert second.closed


def test_without_the_keys_the_tab_is_told_to_send_them_again(tab, sessions) -> None:
    relay = tab_mode.TabRelay(AppSettings())
    answer = relay.answer(request(tab, keys=False))
    assert "Press the button again" in answer["error"] and answer["keys_uploaded"] is None
    assert not sessions
    relay.answer(request(tab))
    assert "no longer holds" in relay.answer(request(tab, key_ref=OTHER_REF, keys=False))["error"]


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ("not a dict", "malformed request"),
        ({"id": "../../etc"}, "malformed request"),
        ({"id": REQUEST_ID, "key_ref": 7, "ciphertext": "x"}, "no valid key reference"),
        ({"id": REQUEST_ID, "key_ref": KEY_REF, "ciphertext": "x!"}, "not valid base64"),
        ({"id": REQUEST_ID, "key_ref": KEY_REF}, "no ciphertext"),
    ],
)
def test_malformed_requests_get_a_message_and_touch_nothing(sent, message, sessions) -> None:
    answer = tab_mode.TabRelay(AppSettings()).answer(sent)
    assert message in answer["error"] and "result" not in answer
    assert not sessions


def test_a_service_failure_reaches_the_tab_as_its_message(tab, sessions) -> None:
    relay = tab_mode.TabRelay(AppSettings())
    relay.answer(request(tab))
    sessions[0].failure = ServiceUnavailable("The scoring service is not reachable: start it, then press again.")
    answer = relay.answer(request(tab, keys=False))
    assert answer["error"].startswith("The scoring service is not reachable") and "result" not in answer
    assert answer["keys_uploaded"] == KEY_REF


def test_an_unexpected_failure_is_a_message_and_a_log_line_without_details(tab, sessions, caplog) -> None:
    relay = tab_mode.TabRelay(AppSettings())
    relay.answer(request(tab))
    sessions[0].failure = KeyError("sig=SECRET-SAS-SIGNATURE")
    answer = relay.answer(request(tab, keys=False))
    assert "internal error" in answer["error"] and "SECRET" not in answer["error"]
    assert "KeyError" in caplog.text and "SECRET" not in caplog.text


def test_the_keys_alone_are_uploaded_and_acknowledged(tab, sessions) -> None:
    relay = tab_mode.TabRelay(AppSettings())
    keys_only = {key: value for key, value in request(tab).items() if key != "ciphertext"}
    answer = relay.answer(keys_only)
    assert answer["keys_uploaded"] == KEY_REF and "result" not in answer and "error" not in answer
    (session,) = sessions
    assert session.sent == [] and session.public_material == base64.b64decode(tab["keys"])
    assert relay.answer(request(tab, keys=False))["result"] == "UkVTVUxU"
