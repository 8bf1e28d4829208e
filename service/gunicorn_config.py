"""gunicorn's settings for the scoring service: the local stack and the image both start it with these.

Each worker is a process with a pool of threads (``gthread``), so one worker serves several
requests at once: a ckks or bfv request never waits behind an ei request, which waits, niced, in
the replica's one first-come, first-served ei pool (service/schemes/ei_pool.py). Connections are not
kept alive, so every request goes to whichever worker accepts it first: a busy one accepts later.
Replicas share nothing but blob storage. Settings from the environment:
- ``SCORING_WORKERS`` (2): worker processes;
- ``SCORING_THREADS`` (8): request threads per worker;
- ``EI_POOL_SIZE`` (one per core; 0: a child per worker instead): native ei children in the replica's pool, which the
  master starts before the workers (service/schemes/ei_pool.py) and stops when it exits.
The bind address is given on the command line (127.0.0.1 locally, 0.0.0.0 in the container).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `import service.*` in the master

from service.schemes.ei_pool import SIZE_ENV, EiPool
from service.settings import ServiceSettings, SettingsError
from service.shared.model_files import MODEL_DIR


def _count(name: str, default: int, least: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    value = int(raw) if raw.isdigit() else default
    if value < least:
        raise SystemExit(f"{name} must be a positive integer, got {raw!r}")
    return value


wsgi_app = "service.wsgi:app"  # the AzureML server's Flask app, its own errors in the contract's JSON
worker_class = "gthread"
workers = _count("SCORING_WORKERS", 2)
threads = _count("SCORING_THREADS", 8)
timeout = 300  # a worker that answers nothing for this long is replaced (ei on a cold key takes ~1 s)
graceful_timeout = 30
keepalive = 0  # a kept-alive connection would tie a session to one worker, however busy
control_socket_disable = True  # gunicorn >= 25 would otherwise share ~/.gunicorn/gunicorn.ctl between instances


_pool: EiPool | None = None


def on_starting(server: Any) -> None:
    """Start the replica's ei pool; the workers forked after this find it in their environment."""
    global _pool
    size = _count(SIZE_ENV, os.cpu_count() or 1, least=0)
    if size == 0:
        return  # no pool: each worker starts an ei child of its own
    model_dir = os.environ.get("AZUREML_MODEL_DIR", str(MODEL_DIR))
    try:
        _pool = EiPool(model_dir, size, ServiceSettings.from_env().key_cache_bytes)
    except (RuntimeError, SettingsError) as error:
        # e.g. no model where AZUREML_MODEL_DIR points, or a bad setting: each worker's init() says so itself.
        server.log.warning("%s; each worker starts an ei child of its own", error)
        return
    os.environ.update(_pool.environment())
    server.log.info("ei pool: %d native children", size)


def on_exit(server: Any) -> None:
    """Stop the ei pool with the master."""
    if _pool is not None:
        _pool.stop()
