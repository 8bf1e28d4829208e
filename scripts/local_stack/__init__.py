"""The local stack: Azurite (blob storage emulator) and the scoring service, as real processes.

Importable (the pytest fixtures and the benchmark use it) and a CLI::

    .venv/bin/python -m scripts.local_stack up [--only azurite|scoring] [--replicas N]  # background, until healthy
    .venv/bin/python -m scripts.local_stack status
    .venv/bin/python -m scripts.local_stack down                          # idempotent
    .venv/bin/python -m scripts.local_stack run [--only ...] [--replicas N] [-- COMMAND ...]  # foreground

Each service is a :class:`Service` (command, environment, port, readiness probes, log file), started
by the one :func:`spawn_and_wait` in its own process group, so that :func:`stop` ends the whole group
and leaves no orphans. Everything binds 127.0.0.1 only. Settings come from the environment
(``AZURITE_PORT``, ``SCORING_PORT``, ``STREAMLIT_PORT``, ``SCORING_WORKERS``, ``SCORING_REPLICAS``,
``SCORING_KEY``, ``STACK_DIR``). With ``--replicas N`` (``SCORING_REPLICAS``) the scoring service is
the local twin of a managed endpoint: N replicas behind nginx, which checks ``SCORING_KEY``.

Modules: ``config`` (paths, settings, addresses, errors), ``net`` (ports, HTTP, probes), ``process``
(spawn, wait, stop), ``services`` (Azurite, scoring service, streamlit), ``twin`` (nginx in front of
the replicas), ``pidfile``, ``stack`` (:class:`LocalStack`), ``cli``.
"""

from .config import (
    DEFAULT_ENTRY_SCRIPT,
    DEFAULT_MODEL_DIR,
    HOST,
    ROOT,
    PortInUseError,
    Settings,
    StackError,
    app_env,
    azurite_blob_endpoint,
    azurite_connection_string,
    scoring_base_url,
    scoring_url,
)  # fmt: skip
from .net import HttpAnswer, HttpProbe, free_port, http_request, port_in_use
from .pidfile import PidRecord, pid_file, read_pid_file
from .process import (
    Service,
    ServiceProcess,
    group_members,
    log_tail,
    running,
    spawn,
    spawn_and_wait,
    stop,
    stop_tree,
    wait_ready,
)
from .services import azurite_service, scoring_service, streamlit_service
from .stack import LocalStack
from .twin import TwinLimits, nginx_service

__all__ = [
    "DEFAULT_ENTRY_SCRIPT",
    "DEFAULT_MODEL_DIR",
    "HOST",
    "ROOT",
    "HttpAnswer",
    "HttpProbe",
    "LocalStack",
    "PidRecord",
    "PortInUseError",
    "Service",
    "ServiceProcess",
    "Settings",
    "StackError",
    "TwinLimits",
    "app_env",
    "azurite_blob_endpoint",
    "azurite_connection_string",
    "azurite_service",
    "free_port",
    "group_members",
    "http_request",
    "log_tail",
    "nginx_service",
    "pid_file",
    "port_in_use",
    "read_pid_file",
    "running",
    "scoring_base_url",
    "scoring_service",
    "scoring_url",
    "spawn",
    "spawn_and_wait",
    "stop",
    "stop_tree",
    "streamlit_service",
    "wait_ready",
]  # fmt: skip
