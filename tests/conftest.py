"""Shared fixtures: real Azurite and scoring-service processes on free ports, one of each per session.

Nothing is assumed to be running: each fixture picks a free port on 127.0.0.1, starts its process in
its own process group with a temporary state directory, waits until it is ready, and stops the whole
process group at the end of the session. A running demo (default ports) never clashes with the tests.

Tests that use ``azurite``, ``scoring_service`` or ``app_env`` are marked ``integration`` automatically.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.local_stack import (
    DEFAULT_ENTRY_SCRIPT,
    DEFAULT_MODEL_DIR,
    HOST,
    azurite_blob_endpoint,
    azurite_connection_string,
    free_port,
    running,
    scoring_base_url,
    scoring_url,
    services,
)

INTEGRATION_FIXTURES = {"azurite", "scoring_service", "app_env"}


@dataclasses.dataclass(frozen=True)
class AzuriteInfo:
    """A running Azurite blob service (development account devstoreaccount1)."""

    port: int
    connection_string: str  # explicit devstoreaccount1 string with BlobEndpoint=http://127.0.0.1:<port>/...
    blob_endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1
    data_dir: Path
    log_path: Path
    pgid: int


@dataclasses.dataclass(frozen=True)
class ScoringServiceInfo:
    """A running scoring service (service/score.py under azureml-inference-server-http, 2 workers)."""

    url: str  # http://127.0.0.1:<port>/score
    base_url: str  # http://127.0.0.1:<port>
    port: int
    log_path: Path
    pgid: int
    allowed_blob_hosts: str  # what ALLOWED_BLOB_HOSTS was set to: 127.0.0.1:<azurite port>


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a real-process fixture as ``integration``."""
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteInfo]:
    """Azurite on a free port with a temporary data directory; stopped at the end of the session."""
    stack_dir, port = tmp_path_factory.mktemp("azurite"), free_port()
    data_dir, log_path = stack_dir / "azurite-data", stack_dir / "azurite.log"
    with running(services.azurite_service(port, data_dir, log_path=log_path)) as proc:
        yield AzuriteInfo(port, azurite_connection_string(port), azurite_blob_endpoint(port), data_dir, log_path, proc.pid)


@pytest.fixture(scope="session")
def scoring_service(azurite: AzuriteInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoringServiceInfo]:
    """service/score.py served by gunicorn (2 workers) on a free port, allowed to fetch from ``azurite``."""
    if not DEFAULT_ENTRY_SCRIPT.is_file():
        pytest.skip(f"{DEFAULT_ENTRY_SCRIPT.relative_to(DEFAULT_ENTRY_SCRIPT.parents[1])} does not exist yet")
    allowed, port = f"{HOST}:{azurite.port}", free_port()
    log_path = tmp_path_factory.mktemp("scoring") / "scoring.log"
    service = services.scoring_service(
        port, 2, entry_script=DEFAULT_ENTRY_SCRIPT, model_dir=DEFAULT_MODEL_DIR, log_path=log_path,
        env=dict(os.environ, ALLOWED_BLOB_HOSTS=allowed), timeout=300.0,
    )  # fmt: skip
    with running(service) as proc:
        yield ScoringServiceInfo(scoring_url(port), scoring_base_url(port), port, log_path, proc.pid, allowed)


@pytest.fixture(scope="session")
def app_env(azurite: AzuriteInfo, scoring_service: ScoringServiceInfo) -> dict[str, str]:
    """The app's settings pointing at the fixtures' services (BLOB_CONNECTION_STRING, SCORING_URL)."""
    return {"BLOB_CONNECTION_STRING": azurite.connection_string, "SCORING_URL": scoring_service.url}


@pytest.fixture(scope="session")
def app_server(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run app.py`` (headless) on a free port against the fixtures' services; yields its URL.

    Started like every service of the local stack (its own process group, stopped at the end of the
    session); ready when Streamlit's own ``/_stcore/health`` says ok.
    """
    service = services.streamlit_service(free_port(), tmp_path_factory.mktemp("streamlit") / "streamlit.log",
                                env=dict(os.environ, **app_env))  # fmt: skip
    with running(service):
        yield f"http://{HOST}:{service.port}"
