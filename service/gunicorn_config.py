"""gunicorn's settings for the scoring service: the local stack and the image both start it with these.

Each worker is a process with a pool of threads (``gthread``), so one worker serves several
requests at once: a ckks or bfv request never waits behind an ei request that the same worker is
evaluating (ei runs in the worker's niced child process; see service/schemes/ei_isolated.py).
Replicas share nothing but blob storage. Settings from the environment:
- ``SCORING_WORKERS`` (2): worker processes;
- ``SCORING_THREADS`` (8): request threads per worker.
The bind address is given on the command line (127.0.0.1 locally, 0.0.0.0 in the container).
"""
from __future__ import annotations

import os


def _count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    value = int(raw) if raw.isdigit() else default
    if value < 1:
        raise SystemExit(f"{name} must be a positive integer, got {raw!r}")
    return value


wsgi_app = "service.wsgi:app"  # the AzureML server's Flask app, its own errors in the contract's JSON
worker_class = "gthread"
workers = _count("SCORING_WORKERS", 2)
threads = _count("SCORING_THREADS", 8)
timeout = 300  # a worker that answers nothing for this long is replaced (ei on a cold key takes ~1 s)
graceful_timeout = 30
keepalive = 5
control_socket_disable = True  # gunicorn >= 25 would otherwise share ~/.gunicorn/gunicorn.ctl between instances
