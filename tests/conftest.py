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

from scripts.local_stack import DEFAULT_ENTRY_SCRIPT, DEFAULT_MODEL_DIR, HOST, LocalStack, free_port

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
    stack_dir = tmp_path_factory.mktemp("azurite")
    stack = LocalStack(azurite=True, scoring=False, azurite_port=free_port(), stack_dir=stack_dir)
    with stack:
        assert stack.azurite_proc is not None
        yield AzuriteInfo(
            port=stack.azurite_port,
            connection_string=stack.connection_string,
            blob_endpoint=stack.blob_endpoint,
            data_dir=stack_dir / "azurite-data",
            log_path=stack.azurite_log_path,
            pgid=stack.azurite_proc.pid,
        )


@pytest.fixture(scope="session")
def scoring_service(azurite: AzuriteInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoringServiceInfo]:
    """service/score.py served by gunicorn (2 workers) on a free port, allowed to fetch from ``azurite``."""
    if not DEFAULT_ENTRY_SCRIPT.is_file():
        pytest.skip(f"{DEFAULT_ENTRY_SCRIPT.relative_to(DEFAULT_ENTRY_SCRIPT.parents[1])} does not exist yet")
    allowed = f"{HOST}:{azurite.port}"
    env = dict(os.environ, ALLOWED_BLOB_HOSTS=allowed)
    stack = LocalStack(
        azurite=False,
        scoring=True,
        azurite_port=azurite.port,
        scoring_port=free_port(),
        workers=2,
        stack_dir=tmp_path_factory.mktemp("scoring"),
        entry_script=DEFAULT_ENTRY_SCRIPT,
        model_dir=DEFAULT_MODEL_DIR,
        env=env,
        scoring_timeout=300.0,
    )
    with stack:
        assert stack.scoring_proc is not None
        yield ScoringServiceInfo(
            url=stack.scoring_url,
            base_url=stack.scoring_base_url,
            port=stack.scoring_port,
            log_path=stack.scoring_log_path,
            pgid=stack.scoring_proc.pid,
            allowed_blob_hosts=allowed,
        )


@pytest.fixture(scope="session")
def app_env(azurite: AzuriteInfo, scoring_service: ScoringServiceInfo) -> dict[str, str]:
    """The app's settings pointing at the fixtures' services (BLOB_CONNECTION_STRING, SCORING_URL)."""
    return {"BLOB_CONNECTION_STRING": azurite.connection_string, "SCORING_URL": scoring_service.url}


@pytest.fixture(scope="session")
def app_server(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run app.py`` (headless) on a free port against the fixtures' services; yields its URL.

    It runs in its own process group, which is stopped at the end of the session. Readiness is
    Streamlit's own ``/_stcore/health``.
    """
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from scripts.local_stack import ROOT, log_tail, stop

    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
        "--server.port", str(port), "--server.address", HOST, "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=dict(os.environ, **app_env), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 90.0
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode}:\n{log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2.0) as answer:
                    if answer.status == 200 and answer.read().strip() == b"ok":
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer /_stcore/health within 90 s:\n{log_tail(log_path)}")
            time.sleep(0.25)
        yield url
    finally:
        stop(proc)
