"""The app recovers by itself when a worker dies mid-request or the service loses its keys.

Real processes only: the session Azurite and a scoring service of this module's own (its workers
are killed here, so no other test shares it). The service's gunicorn master replaces a killed
worker; the app resends the request once (lib/session.py) and the answer is the plaintext model's.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import psutil
import pytest

from lib.errors import ServiceRejected
from lib.session import EncryptedSession, Prediction
from lib.settings import AppSettings
from scripts.local_stack import (
    DEFAULT_ENTRY_SCRIPT,
    DEFAULT_MODEL_DIR,
    HOST,
    free_port,
    running,
    scoring_url,
    services,
)
from service.scoring import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_service(azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, int]]:
    """A scoring service with 2 workers; yields (url, port, gunicorn master pid)."""
    port = free_port()
    service = services.scoring_service(
        port, 2, entry_script=DEFAULT_ENTRY_SCRIPT, model_dir=DEFAULT_MODEL_DIR,
        log_path=tmp_path_factory.mktemp("recovery") / "scoring.log",
        env=dict(os.environ, ALLOWED_BLOB_HOSTS=f"{HOST}:{azurite.port}"),
    )  # fmt: skip
    with running(service) as proc:
        yield scoring_url(port), port, proc.pid


@pytest.fixture
def settings(azurite, own_service: tuple[str, int, int]) -> AppSettings:
    return AppSettings(blob_connection_string=azurite.connection_string, blob_container="recovery-tests",
                       scoring_url=own_service[0], scoring_timeout_s=60)  # fmt: skip


def expected_label(pixels: np.ndarray) -> int:
    coef, intercept = load_model(DEFAULT_MODEL_DIR)
    return int(np.argmax(coef @ pixels + intercept))


def pool_process(master_pid: int) -> psutil.Process:
    """The replica's ei pool (service/schemes/ei_pool.py), a child of gunicorn's master."""
    (pool,) = [child for child in psutil.Process(master_pid).children() if "ei_pool" in " ".join(child.cmdline())]
    return pool


def workers(master_pid: int) -> list[psutil.Process]:
    return [child for child in psutil.Process(master_pid).children() if "gunicorn" in " ".join(child.cmdline())]


def worker_holding_a_request(master_pid: int, port: int) -> psutil.Process | None:
    """The worker that has accepted a connection on ``port`` (an open request), if any."""
    for worker in workers(master_pid):
        for connection in worker.net_connections(kind="tcp"):
            if connection.laddr.port == port and connection.status == psutil.CONN_ESTABLISHED:
                return worker
    return None


def test_a_worker_killed_mid_request_costs_one_retry_not_a_wrong_answer(
    settings: AppSettings, own_service: tuple[str, int, int]
) -> None:
    _, port, master_pid = own_service
    pixels = np.random.default_rng(11).random(784)
    with EncryptedSession.start(settings, scheme="ei") as session:
        # Freeze the pool's native children, so a request stays in its worker until that worker is killed.
        children = pool_process(master_pid).children()
        assert len(children) == os.cpu_count(), "the pool runs one ei child per core"
        for child in children:
            child.send_signal(signal.SIGSTOP)
        outcome: dict[str, Prediction | BaseException] = {}

        def predict() -> None:
            try:
                outcome["prediction"] = session.predict(pixels)
            except Exception as error:  # noqa: BLE001 - reported by the assertions below
                outcome["error"] = error

        thread = threading.Thread(target=predict)
        thread.start()
        deadline = time.monotonic() + 60
        worker = None
        while worker is None and time.monotonic() < deadline and thread.is_alive():
            worker = worker_holding_a_request(master_pid, port)
            time.sleep(0.05)
        assert worker is not None, f"the request never reached a worker: {outcome}"
        worker.kill()
        for child in children:
            child.send_signal(signal.SIGCONT)
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    prediction = outcome["prediction"]
    assert isinstance(prediction, Prediction)
    assert "retry (service restarting)" in [stage.name for stage in prediction.stages]
    assert prediction.label == expected_label(pixels)


def test_after_a_restart_that_lost_the_keys_the_app_uploads_them_again(
    settings: AppSettings, own_service: tuple[str, int, int]
) -> None:
    """The service restarts (every worker replaced: caches empty) and storage lost the key blob (an
    in-memory Azurite restarted): the service answers 404 key_not_found and the app re-uploads."""
    _, _, master_pid = own_service
    pixels = np.random.default_rng(12).random(784)
    with EncryptedSession.start(settings, scheme="bfv") as session:
        assert session.predict(pixels).label == expected_label(pixels)
        session._store.delete(session.key_id)
        for worker in workers(master_pid):
            worker.kill()
        prediction = session.predict(pixels)
    assert "re-upload keys" in [stage.name for stage in prediction.stages]
    assert prediction.key_cache == "miss"
    assert prediction.label == expected_label(pixels)


def test_a_killed_ei_pool_is_started_again(settings: AppSettings, own_service: tuple[str, int, int]) -> None:
    """The replica's shared ei pool dies: gunicorn's master starts it again at the same address, the
    workers reconnect, and ei answers are right again (meanwhile ei requests get 503 not_ready)."""
    _, _, master_pid = own_service
    pixels = np.random.default_rng(13).random(784)
    old_pool = pool_process(master_pid)
    with EncryptedSession.start(settings, scheme="ei") as session:
        assert session.predict(pixels).label == expected_label(pixels)
        old_pool.kill()
        old_pool.wait(10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                new_pool = pool_process(master_pid)
                break
            except ValueError:  # not there yet
                time.sleep(0.2)
        assert new_pool.pid != old_pool.pid
        answers = []
        while len(answers) < 2 and time.monotonic() < deadline:
            try:
                answers.append(session.predict(pixels))
            except ServiceRejected as rejected:
                assert (rejected.status, rejected.code) == (503, "not_ready")
                time.sleep(0.5)
    assert [prediction.label for prediction in answers] == [expected_label(pixels)] * 2
