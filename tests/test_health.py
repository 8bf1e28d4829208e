"""lib.health: probing blob storage and the scoring service, and saying what to do when one is down."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from http_stub import serve

from lib.blob_store import PublicKeyStore
from lib.health import START_STACK, Health, check_health
from lib.scoring_client import ScoringClient
from lib.settings import azurite_connection_string
from scripts.local_stack import free_port


class _Healthy(BaseHTTPRequestHandler):
    """Answers ``GET /`` like the AzureML inference server: 200 "Healthy"."""

    def do_GET(self) -> None:
        body = b"Healthy"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def healthy_url() -> Iterator[str]:
    with serve(_Healthy) as url:
        yield f"{url}/score"


def test_problems_name_each_service_that_is_down_and_what_to_do() -> None:
    up = Health(True, True, "http://storage", "http://scoring/score")
    assert up.all_ok and up.problems() == []
    storage_down = Health(False, True, "http://storage", "http://scoring/score")
    (message,) = storage_down.problems()
    assert not storage_down.all_ok
    assert "Blob storage at http://storage is not reachable" in message and START_STACK in message
    assert "BLOB_CONNECTION_STRING" in message
    both_down = Health(False, False, "http://storage", "http://scoring/score")
    storage, scoring = both_down.problems()
    assert storage == message  # the same message, whatever else is down
    assert "scoring service at http://scoring/score is not reachable" in scoring and "SCORING_URL" in scoring
    assert "scripts.local_stack up" in START_STACK and "scripts/run_demo.sh" in START_STACK


def test_check_health_probes_both_services(healthy_url: str) -> None:
    store = PublicKeyStore(azurite_connection_string(free_port()), "public-keys")  # nothing listens there
    scorer = ScoringClient(healthy_url, 5.0)
    try:
        health = check_health(store, scorer)
        assert not health.storage_ok and health.scoring_ok and not health.all_ok
        assert health.storage_endpoint == store.endpoint and health.scoring_url == healthy_url
        closed = ScoringClient(f"http://127.0.0.1:{free_port()}/score", 5.0)
        assert not check_health(store, closed).scoring_ok
        closed.close()
    finally:
        scorer.close()


def test_a_refused_key_is_not_a_stack_to_start() -> None:
    def health(storage: bool, scoring: bool, refuses: bool) -> Health:
        return Health(storage, scoring, "http://storage", "http://scoring/score", scoring_refuses_key=refuses)

    assert not health(True, True, False).stack_down
    assert not health(True, False, True).stack_down  # up, but wants SCORING_KEY: starting a stack won't help
    assert health(True, False, False).stack_down and health(False, True, False).stack_down
