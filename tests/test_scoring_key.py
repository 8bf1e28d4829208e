"""The endpoint key (SCORING_KEY): read like every setting, sent as a Bearer header, never shown.

Azure ML managed endpoints refuse requests without ``Authorization: Bearer <key>``; the stub
below does the same so the client's side can be checked here (the real endpoint is in Azure).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from http_stub import serve
from streamlit.testing.v1 import AppTest

from lib.blob_store import PublicKeyStore
from lib.errors import ServiceRejected, SettingsError
from lib.health import check_health
from lib.scoring_client import ScoringClient
from lib.settings import AppSettings, azurite_connection_string
from scripts.local_stack import ROOT, free_port

KEY = "s3cr3t-EndpointKey_0123456789abcdefABCDEF"
seen_headers: list[str | None] = []


class KeyedEndpoint(BaseHTTPRequestHandler):
    """401 without a Bearer header, 403 with the wrong key, the contract's body with the right one."""

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        auth = self.headers.get("Authorization")
        seen_headers.append(auth)
        if auth is None:
            status, body = 401, b'{"message": "key_auth_access_denied"}'
        elif auth != f"Bearer {KEY}":
            status, body = 403, b'{"message": "key_auth_bad_key"}'
        else:
            status, body = 200, (b"Healthy" if self.command == "GET" else json.dumps({"ok": True}).encode())
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with serve(KeyedEndpoint) as url:
        yield f"{url}/score"


def test_the_key_goes_as_a_bearer_header(endpoint: str) -> None:
    seen_headers.clear()
    with ScoringClient(endpoint, 5, KEY) as client:
        assert client.score({"x": 1}).body == {"ok": True}
        assert client.is_healthy()
    assert seen_headers == [f"Bearer {KEY}", f"Bearer {KEY}"]


def test_no_key_is_sent_when_none_is_set(endpoint: str) -> None:
    seen_headers.clear()
    with ScoringClient(endpoint, 5) as client, pytest.raises(ServiceRejected) as info:
        client.score({})
    assert seen_headers == [None]
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    assert "needs an endpoint key" in info.value.message and "Set SCORING_KEY" in info.value.message


def test_a_refused_key_says_what_to_set_and_never_shows_the_key(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + KEY
    caplog.set_level(logging.DEBUG)
    with ScoringClient(endpoint, 5, wrong) as client:
        with pytest.raises(ServiceRejected) as info:
            client.score({})
        assert not client.is_healthy()
        assert wrong not in repr(client) and "sends_key=True" in repr(client)
    assert (info.value.status, info.value.code) == (403, "unauthorized")
    assert "refused the endpoint key in SCORING_KEY" in info.value.message
    assert wrong not in info.value.message and KEY not in str(info.value)
    assert wrong not in caplog.text


def test_settings_read_the_key_and_hide_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORING_URL", "https://demo.westeurope.inference.ml.azure.com/score")
    monkeypatch.setenv("SCORING_KEY", KEY)
    settings = AppSettings.load()
    assert settings.scoring_key == KEY and KEY not in repr(settings)
    assert ScoringClient.from_settings(settings).sends_key
    monkeypatch.delenv("SCORING_KEY")
    assert AppSettings.load({"SCORING_KEY": KEY}).scoring_key == KEY  # from secrets.toml
    assert AppSettings.load().scoring_key == ""


@pytest.mark.parametrize(
    ("url", "key", "match"),
    [
        ("https://demo.inference.ml.azure.com/score", "two words", "one line without spaces"),
        ("https://demo.inference.ml.azure.com/score", "line\nbreak", "one line without spaces"),
        ("http://demo.example.com/score", KEY, "would travel unencrypted"),
    ],
)
def test_bad_keys_and_plain_http_are_refused_without_quoting_the_key(url: str, key: str, match: str) -> None:
    with pytest.raises(SettingsError, match=match) as info:
        AppSettings(scoring_url=url, scoring_key=key)
    assert key not in info.value.message


def test_loopback_over_http_may_carry_a_key() -> None:
    assert AppSettings(scoring_url="http://127.0.0.1:5001/score", scoring_key=KEY).scoring_key == KEY


def test_health_tells_a_refused_key_from_a_service_that_is_down(endpoint: str) -> None:
    store = PublicKeyStore(azurite_connection_string(free_port()), "public-keys")  # nothing listens there
    for key, expected in (("", "unauthorized"), ("wrong", "unauthorized"), (KEY, "healthy")):
        with ScoringClient(endpoint, 5, key) as client:
            assert client.probe() == expected
            health = check_health(store, client)
        assert health.scoring_ok is (expected == "healthy")
        assert health.scoring_refuses_key is (expected == "unauthorized")
        scoring_messages = [m for m in health.problems() if "scoring service" in m]
        if expected == "unauthorized":
            (message,) = scoring_messages
            assert "refuses this app's requests" in message and "set SCORING_KEY" in message
            assert "not reachable" not in message and (not key or key not in message)
        else:
            assert scoring_messages == []
    with ScoringClient(f"http://127.0.0.1:{free_port()}/score", 5, KEY) as closed:
        assert closed.probe() == "down"
        assert not check_health(store, closed).scoring_refuses_key


@pytest.mark.parametrize("key", ["", "wrong-key-Zq81"])
def test_the_app_says_to_set_scoring_key(monkeypatch: pytest.MonkeyPatch, endpoint: str, key: str) -> None:
    monkeypatch.setenv("BLOB_CONNECTION_STRING", azurite_connection_string(free_port()))
    monkeypatch.setenv("SCORING_URL", endpoint)
    monkeypatch.setenv("SCORING_KEY", key)
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert any("refuses this app's requests" in e and "set SCORING_KEY" in e for e in errors), errors
    page = "\n".join(str(m.value) for m in [*app.markdown, *app.caption, *app.error])
    assert "refuses the endpoint key" in page
    assert not key or key not in page
    app.session_state["app_state"].close()


@pytest.mark.parametrize("key", ["", KEY])
def test_the_cli_sends_the_key_and_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], endpoint: str, azurite, key: str
) -> None:
    from lib import cli

    monkeypatch.setenv("BLOB_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("SCORING_URL", endpoint)
    monkeypatch.setenv("SCORING_KEY", key)
    seen_headers.clear()
    assert cli.main(["predict", "--mnist-index", "0", "--scheme", "bfv"]) != 0
    captured = capsys.readouterr()
    assert seen_headers == [f"Bearer {KEY}" if key else None]
    if key:  # the stub accepts the key but answers no contract: the CLI says so
        assert "bad_response" in captured.err or "contract" in captured.err, captured.err
    else:
        assert "needs an endpoint key" in captured.err and "SCORING_KEY" in captured.err, captured.err
    assert KEY not in captured.out + captured.err
