"""Shared fixtures: real Azurite and scoring-service processes on free ports, one of each per session.

Nothing is assumed to be running: each fixture picks a free port on 127.0.0.1, starts its process in
its own process group with a temporary state directory, waits until it is ready, and stops the whole
process group at the end of the session. A running demo (default ports) never clashes with the tests.

The ``twin`` fixture is the local twin of a managed endpoint: nginx in front of 2 scoring replicas,
checking an endpoint key; ``twin_factory`` starts private twins (their own Azurite if asked) for tests
that kill a replica or storage.

Tests that use ``azurite``, ``scoring_service``, ``app_env``, ``twin`` or ``twin_factory`` are marked
``integration`` automatically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from scripts.chromium import CHROMIUM, CHROMIUM_FLAGS
from scripts.local_stack import (
    DEFAULT_ENTRY_SCRIPT,
    DEFAULT_MODEL_DIR,
    HOST,
    LocalStack,
    azurite_blob_endpoint,
    azurite_connection_string,
    free_port,
    running,
    scoring_base_url,
    scoring_url,
    services,
)
from scripts.local_stack.twin import TwinLimits

INTEGRATION_FIXTURES = {"azurite", "scoring_service", "app_env", "twin", "twin_factory"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser), one per test module."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (scripts/setup.sh --dev installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


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


# ---------------------------------------------------------------------------------------------- the twin


@dataclasses.dataclass(frozen=True)
class TwinInfo:
    """A running twin: nginx on ``port`` checking ``key``, in front of the replicas on ``replica_ports``."""

    stack: LocalStack  # started; its replica_procs, nginx_proc, logs and STACK_DIR
    key: str = dataclasses.field(repr=False)

    @property
    def url(self) -> str:
        return self.stack.scoring_url

    @property
    def base_url(self) -> str:
        return self.stack.scoring_base_url

    @property
    def port(self) -> int:
        return self.stack.scoring_port

    @property
    def replica_ports(self) -> tuple[int, ...]:
        return tuple(proc.service.port or 0 for proc in self.stack.replica_procs)

    @property
    def headers(self) -> dict[str, str]:
        """The endpoint key as the app sends it."""
        return {"Authorization": f"Bearer {self.key}"}


TwinFactory = Callable[..., TwinInfo]


def start_twin(
    stack_dir: Path,
    *,
    azurite_port: int | None,
    entry_script: Path | None = None,
    model_dir: Path | None = None,
    limits: TwinLimits | None = None,
    env: Mapping[str, str] | None = None,
    replicas: int = 2,
) -> tuple[LocalStack, str]:
    """A twin (``replicas`` x 1 worker) with a new key; its own in-memory Azurite if ``azurite_port`` is None."""
    key = secrets.token_urlsafe(32)
    own_azurite = azurite_port is None
    port = free_port() if azurite_port is None else azurite_port
    child_env = {k: v for k, v in os.environ.items() if k not in ("SCORING_KEY", "ALLOWED_BLOB_HOSTS")}
    child_env.update(ALLOWED_BLOB_HOSTS=f"{HOST}:{port}", **(env or {}))
    stack = LocalStack(
        azurite=own_azurite, in_memory=True, azurite_port=port, scoring_port=free_port(), stack_dir=stack_dir,
        workers=1, replicas=replicas, scoring_key=key, env=child_env, twin_limits=limits,
        entry_script=entry_script, model_dir=model_dir, scoring_timeout=300.0,
    )  # fmt: skip
    return stack.start(), key


@pytest.fixture(scope="session")
def twin(azurite: AzuriteInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinInfo]:
    """The local twin on ``azurite``: nginx (key checked; clients silent for 3 s are cut off) in front of
    2 replicas of service/score.py, 1 worker each."""
    if not DEFAULT_ENTRY_SCRIPT.is_file():
        pytest.skip(f"{DEFAULT_ENTRY_SCRIPT.relative_to(DEFAULT_ENTRY_SCRIPT.parents[1])} does not exist yet")
    stack, key = start_twin(tmp_path_factory.mktemp("twin"), azurite_port=azurite.port,
                            limits=TwinLimits(client_timeout_s=3.0))  # fmt: skip
    try:
        yield TwinInfo(stack, key)
    finally:
        stack.stop()


@pytest.fixture
def twin_factory(tmp_path: Path) -> Iterator[TwinFactory]:
    """Start private twins: ``twin_factory(azurite_port=..., entry_script=..., limits=..., env=...)``
    (``azurite_port=None``: with their own in-memory Azurite); all are stopped after the test."""
    count = itertools.count(1)
    with contextlib.ExitStack() as started:

        def factory(**kwargs: object) -> TwinInfo:
            stack, key = start_twin(tmp_path / f"twin-{next(count)}", **kwargs)  # type: ignore[arg-type]
            started.callback(stack.stop)
            return TwinInfo(stack, key)

        yield factory
