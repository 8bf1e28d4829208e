"""The local stack: Azurite (blob storage emulator) and the scoring service, as real processes.

Importable (the pytest fixtures use it) and a CLI::

    .venv/bin/python -m scripts.local_stack up [--only azurite|scoring]   # background, waits until healthy
    .venv/bin/python -m scripts.local_stack status
    .venv/bin/python -m scripts.local_stack down                          # idempotent
    .venv/bin/python -m scripts.local_stack run [--only ...] [-- COMMAND ...]  # foreground

Each service runs in its own process group (its own session), so stopping it signals the whole group
and leaves no orphans. Everything binds 127.0.0.1 only. Settings come from the environment
(``AZURITE_PORT``, ``SCORING_PORT``, ``STREAMLIT_PORT``, ``SCORING_WORKERS``, ``STACK_DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite-blob"
VENV_BIN = ROOT / ".venv" / "bin"
DEFAULT_ENTRY_SCRIPT = ROOT / "service" / "score.py"
DEFAULT_MODEL_DIR = ROOT / "service" / "model"

# Azurite's well-known development account. The key is public (documented by Microsoft for the
# emulator) and only ever valid against the local emulator.
DEV_ACCOUNT = "devstoreaccount1"
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

SERVICES = ("azurite", "scoring")
PORT_ENV = {"azurite": "AZURITE_PORT", "scoring": "SCORING_PORT", "streamlit": "STREAMLIT_PORT"}


class StackError(RuntimeError):
    """A service of the local stack could not be started, or did not become ready."""


class PortInUseError(StackError):
    """The port a service should listen on is already taken."""

    def __init__(self, port: int, env_var: str | None = None) -> None:
        hint = f"set {env_var} to a free port" if env_var else "choose a free port"
        stack = env_var in ("AZURITE_PORT", "SCORING_PORT")
        earlier = " (if it is an earlier local stack: .venv/bin/python -m scripts.local_stack down)" if stack else ""
        super().__init__(f"port {port} on {HOST} is already in use; {hint}, or stop what is listening there{earlier}")
        self.port = port
        self.env_var = env_var


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not an integer") from None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Ports, worker count and the state directory, read from the environment."""

    azurite_port: int = 10000
    scoring_port: int = 5001
    streamlit_port: int = 8501
    scoring_workers: int = 2
    stack_dir: Path = ROOT / ".run"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read AZURITE_PORT, SCORING_PORT, STREAMLIT_PORT, SCORING_WORKERS and STACK_DIR."""
        env = os.environ if env is None else env
        stack_dir = env.get("STACK_DIR", "").strip()
        return cls(
            azurite_port=_int_env(env, "AZURITE_PORT", cls.azurite_port),
            scoring_port=_int_env(env, "SCORING_PORT", cls.scoring_port),
            streamlit_port=_int_env(env, "STREAMLIT_PORT", cls.streamlit_port),
            scoring_workers=_int_env(env, "SCORING_WORKERS", cls.scoring_workers),
            stack_dir=Path(stack_dir).resolve() if stack_dir else cls.stack_dir,
        )


def azurite_blob_endpoint(port: int) -> str:
    """The blob endpoint of the local Azurite's development account."""
    return f"http://{HOST}:{port}/{DEV_ACCOUNT}"


def azurite_connection_string(port: int) -> str:
    """An explicit connection string for Azurite's development account on ``port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};"
        f"BlobEndpoint={azurite_blob_endpoint(port)};"
    )


def scoring_url(port: int) -> str:
    """The scoring endpoint (``POST``) of the local scoring service."""
    return f"http://{HOST}:{port}/score"


def app_env(azurite_port: int, scoring_port: int) -> dict[str, str]:
    """The settings the Streamlit app needs to find the local services."""
    return {
        "BLOB_CONNECTION_STRING": azurite_connection_string(azurite_port),
        "SCORING_URL": scoring_url(scoring_port),
    }


# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something already listens on ``host:port`` (a bind with SO_REUSEADDR fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def ensure_port_free(port: int, env_var: str | None = None) -> None:
    """Raise :class:`PortInUseError` (naming ``env_var``) if ``port`` is taken."""
    if port_in_use(port):
        raise PortInUseError(port, env_var)


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ("" if there is none)."""
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _spawn(cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in a new session (its own process group), stdout and stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=ROOT,
            start_new_session=True,
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def _proc_log(proc: subprocess.Popen) -> Path | None:
    return getattr(proc, "log_path", None)


def start_azurite(
    port: int,
    data_dir: Path,
    in_memory: bool = False,
    log_path: Path | None = None,
) -> subprocess.Popen:
    """Start Azurite's blob service on 127.0.0.1:``port`` with its data in ``data_dir`` (or in memory).

    Fails fast with :class:`PortInUseError` if the port is taken. Does not wait: see :func:`wait_azurite`.
    """
    if not AZURITE_BIN.exists():
        raise StackError(f"{AZURITE_BIN} is missing: run scripts/setup.sh (it runs npm ci)")
    ensure_port_free(port, PORT_ENV["azurite"])
    data_dir = Path(data_dir)
    # Azurite refuses --inMemoryPersistence together with --location.
    where = ["--inMemoryPersistence"] if in_memory else ["--location", str(data_dir)]
    if not in_memory:
        data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(AZURITE_BIN),
        "--blobHost", HOST,
        "--blobPort", str(port),
        *where,
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        "--silent",
    ]  # fmt: skip
    log_path = Path(log_path) if log_path else data_dir.parent / "azurite.log"
    return _spawn(cmd, log_path)


def _gunicorn_cmd() -> list[str]:
    gunicorn = VENV_BIN / "gunicorn"
    return [str(gunicorn)] if gunicorn.exists() else [sys.executable, "-m", "gunicorn"]


def start_scoring_service(
    port: int,
    workers: int,
    *,
    entry_script: Path | None = None,
    model_dir: Path | None = None,
    log_path: Path | None = None,
    azurite_port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Start the AzureML inference server (gunicorn) on 127.0.0.1:``port`` with ``workers`` workers.

    ``entry_script`` and ``model_dir`` default to service/score.py and service/model. The environment
    (``env``, default ``os.environ``) is passed through; ``ALLOWED_BLOB_HOSTS`` defaults to the local
    Azurite (``127.0.0.1:<azurite_port>``) when it is not set. Does not wait: see
    :func:`wait_scoring_service`.
    """
    entry_script = Path(entry_script or DEFAULT_ENTRY_SCRIPT).resolve()
    model_dir = Path(model_dir or DEFAULT_MODEL_DIR).resolve()
    if not entry_script.is_file():
        raise StackError(
            f"the scoring service's entry script {entry_script} does not exist (to start only Azurite: --only azurite)"
        )
    ensure_port_free(port, PORT_ENV["scoring"])
    child_env = dict(os.environ if env is None else env)
    if azurite_port is None:
        azurite_port = Settings.from_env(child_env).azurite_port
    child_env.setdefault("ALLOWED_BLOB_HOSTS", f"{HOST}:{azurite_port}")
    child_env["AZUREML_ENTRY_SCRIPT"] = str(entry_script)
    child_env["AZUREML_MODEL_DIR"] = str(model_dir)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [
        *_gunicorn_cmd(),
        "-b", f"{HOST}:{port}",
        "-w", str(workers),
        "--timeout", "300",
        "--no-control-socket",  # gunicorn >= 25 would otherwise share ~/.gunicorn/gunicorn.ctl between instances
        "azureml_inference_server_http.server.entry:app",
    ]  # fmt: skip
    log_path = Path(log_path) if log_path else Settings.from_env(child_env).stack_dir / "scoring.log"
    return _spawn(cmd, log_path, child_env)


def group_alive(pgid: int) -> bool:
    """True while any process (zombies included) is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            proc.poll()  # reap our own child, or its zombie keeps the group alive
        if not group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_group(pgid: int, grace: float = 5.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM process group ``pgid``, SIGKILL it after ``grace`` seconds, wait until it is gone."""
    _signal_group(pgid, signal.SIGTERM)
    if _wait_group_gone(pgid, grace, proc):
        return
    _signal_group(pgid, signal.SIGKILL)
    # Orphans that the SIGKILL made are reaped by init, which can take a second or two.
    if not _wait_group_gone(pgid, 10.0, proc):
        raise StackError(f"process group {pgid} is still alive after SIGKILL")


def stop(proc: subprocess.Popen, grace: float = 5.0) -> int | None:
    """Stop a process started by this module and its whole process group; return its exit code."""
    stop_group(proc.pid, grace, proc)
    with contextlib.suppress(subprocess.TimeoutExpired):  # the group is gone, so is the leader
        proc.wait(timeout=5)
    return proc.returncode


# --------------------------------------------------------------------------------------------
# Readiness
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class HttpAnswer:
    """An HTTP answer, whatever its status."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def http_request(
    url: str, method: str = "GET", body: bytes | None = None, timeout: float = 5.0
) -> HttpAnswer | None:
    """One request; the answer for any HTTP status, or None if no HTTP answer came (refused, timeout)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpAnswer(resp.status, resp.headers.get("Content-Type", ""), resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpAnswer(exc.code, exc.headers.get("Content-Type", ""), exc.read())
    except (urllib.error.URLError, OSError, ValueError):
        # ConnectionRefused/Reset, socket timeouts, RemoteDisconnected, BadStatusLine, ...
        return None


_INIT_FAILURE_MARKERS = ("User's init function failed", "Failed to import user script", "No score script found")


def log_excerpt(path: Path | None, tail_lines: int = 25) -> str:
    """The start of the entry script's failure (init() or import) if the log has one, then the tail.

    Gunicorn can end the log with its own traceback when every worker fails to boot, which pushes
    the user's error out of a plain tail.
    """
    tail = log_tail(path, tail_lines)
    if path is None or not tail:
        return tail
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return tail
    for i, line in enumerate(lines):
        if any(marker in line for marker in _INIT_FAILURE_MARKERS):
            cause = []
            for following in lines[i : i + 40]:
                if not following.strip() or following.startswith("The above exception"):
                    break
                cause.append(following)
            if i >= len(lines) - tail_lines:  # already in the tail
                return tail
            return "\n".join(cause) + f"\n...\n(last {tail_lines} lines:)\n" + tail
    return tail


def _exited_error(name: str, proc: subprocess.Popen) -> StackError:
    log = _proc_log(proc)
    excerpt = log_excerpt(log)
    where = f"; from {log}:\n{excerpt}" if excerpt else f" (log: {log})"
    return StackError(f"{name} exited with code {proc.returncode} before it was ready{where}")


def wait_healthy(
    url: str,
    timeout: float = 60.0,
    *,
    ready: Callable[[HttpAnswer], bool] = lambda answer: True,
    method: str = "GET",
    body: bytes | None = None,
    proc: subprocess.Popen | None = None,
    name: str = "service",
    request_timeout: float = 5.0,
) -> HttpAnswer:
    """Poll ``url`` until ``ready(answer)``; tolerate refused connections and read timeouts.

    Raises :class:`StackError` with the tail of the log if ``proc`` exits first, or on ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if proc is not None and proc.poll() is not None:
            raise _exited_error(name, proc)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log = _proc_log(proc) if proc is not None else None
            tail = log_tail(log)
            extra = f"; last lines of {log}:\n{tail}" if tail else ""
            raise StackError(f"{name} was not ready at {url} after {timeout:.0f} s (last: {last}){extra}")
        answer = http_request(url, method, body, timeout=min(request_timeout, max(remaining, 0.1)))
        if answer is not None:
            if ready(answer):
                return answer
            last = f"HTTP {answer.status} {answer.body[:200]!r}"
        time.sleep(0.2)


def wait_azurite(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until Azurite answers HTTP on ``port`` (any status: it wants auth for a container list)."""
    wait_healthy(f"{azurite_blob_endpoint(port)}?comp=list", timeout, proc=proc, name="Azurite")


def _is_json_4xx(answer: HttpAnswer) -> bool:
    if not 400 <= answer.status < 500 or "json" not in answer.content_type:
        return False
    try:
        answer.json()
    except ValueError:
        return False
    return True


def wait_scoring_service(base_url: str, timeout: float = 300.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``GET /`` says Healthy and ``POST /score`` with ``{}`` gets a JSON 4xx (run() is live)."""
    deadline = time.monotonic() + timeout
    wait_healthy(
        base_url.rstrip("/") + "/",
        timeout,
        ready=lambda a: a.status == 200 and b"healthy" in a.body.lower(),
        proc=proc,
        name="the scoring service",
    )
    wait_healthy(
        base_url.rstrip("/") + "/score",
        max(deadline - time.monotonic(), 5.0),
        ready=_is_json_4xx,
        method="POST",
        body=b"{}",
        proc=proc,
        name="the scoring service (POST /score)",
        request_timeout=30.0,
    )


# --------------------------------------------------------------------------------------------
# Pid files (for `up` / `down` / `status`)
# --------------------------------------------------------------------------------------------


def _proc_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (to tell a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of stat(5); fields[0] is field 3


@dataclasses.dataclass
class PidRecord:
    """What a pid file says about a running service."""

    name: str
    pid: int
    port: int
    start_ticks: int | None
    log_path: str

    def path(self, stack_dir: Path) -> Path:
        return pid_file(stack_dir, self.name)

    def alive(self) -> bool:
        """True if the recorded process group still exists and is ours (not a reused pid)."""
        ticks = _proc_start_ticks(self.pid)
        if ticks is not None:
            return self.start_ticks is None or ticks == self.start_ticks
        # The leader is gone; group members may remain (a pgid is not reused while it has members).
        return group_alive(self.pid)


def pid_file(stack_dir: Path, name: str) -> Path:
    return Path(stack_dir) / f"{name}.pid"


def write_pid_file(stack_dir: Path, name: str, proc: subprocess.Popen, port: int) -> Path:
    """Record a started service (JSON: pid = pgid, port, start time, log path)."""
    record = PidRecord(name, proc.pid, port, _proc_start_ticks(proc.pid), str(_proc_log(proc) or ""))
    path = pid_file(stack_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(record)) + "\n")
    return path


def read_pid_file(stack_dir: Path, name: str) -> PidRecord | None:
    """The record in ``<stack_dir>/<name>.pid``, or None (missing or unreadable)."""
    path = pid_file(stack_dir, name)
    try:
        data = json.loads(path.read_text())
        return PidRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def remove_pid_file(stack_dir: Path, name: str) -> None:
    pid_file(stack_dir, name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# LocalStack
# --------------------------------------------------------------------------------------------


class LocalStack:
    """Start Azurite and/or the scoring service, wait until they are ready, stop them on exit.

    >>> with LocalStack(scoring=False, azurite_port=free_port(), stack_dir=tmp) as stack:
    ...     stack.connection_string
    """

    def __init__(
        self,
        *,
        azurite: bool = True,
        scoring: bool = True,
        settings: Settings | None = None,
        stack_dir: Path | None = None,
        azurite_port: int | None = None,
        scoring_port: int | None = None,
        workers: int | None = None,
        in_memory: bool = False,
        entry_script: Path | None = None,
        model_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        pid_files: bool = False,
        azurite_timeout: float = 60.0,
        scoring_timeout: float = 300.0,
    ) -> None:
        settings = settings or Settings.from_env(os.environ if env is None else env)
        self.run_azurite = azurite
        self.run_scoring = scoring
        self.stack_dir = Path(stack_dir or settings.stack_dir)
        self.azurite_port = azurite_port or settings.azurite_port
        self.scoring_port = scoring_port or settings.scoring_port
        self.workers = workers or settings.scoring_workers
        self.in_memory = in_memory
        self.entry_script = entry_script
        self.model_dir = model_dir
        self.env = env
        self.pid_files = pid_files
        self.azurite_timeout = azurite_timeout
        self.scoring_timeout = scoring_timeout
        self.azurite_proc: subprocess.Popen | None = None
        self.scoring_proc: subprocess.Popen | None = None

    # ---- addresses
    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.azurite_port)

    @property
    def blob_endpoint(self) -> str:
        return azurite_blob_endpoint(self.azurite_port)

    @property
    def scoring_base_url(self) -> str:
        return f"http://{HOST}:{self.scoring_port}"

    @property
    def scoring_url(self) -> str:
        return scoring_url(self.scoring_port)

    @property
    def azurite_log_path(self) -> Path:
        return self.stack_dir / "azurite.log"

    @property
    def scoring_log_path(self) -> Path:
        return self.stack_dir / "scoring.log"

    def app_env(self) -> dict[str, str]:
        """BLOB_CONNECTION_STRING and SCORING_URL for the app."""
        return app_env(self.azurite_port, self.scoring_port)

    def processes(self) -> dict[str, subprocess.Popen]:
        """The started services by name."""
        procs = {"azurite": self.azurite_proc, "scoring": self.scoring_proc}
        return {name: proc for name, proc in procs.items() if proc is not None}

    # ---- lifecycle
    def start(self) -> Self:
        """Start the selected services and wait until each is ready; on any failure stop them all."""
        if self.run_azurite:
            ensure_port_free(self.azurite_port, PORT_ENV["azurite"])
        if self.run_scoring:
            ensure_port_free(self.scoring_port, PORT_ENV["scoring"])
            entry_script = Path(self.entry_script or DEFAULT_ENTRY_SCRIPT)
            if not entry_script.is_file():
                raise StackError(
                    f"the scoring service's entry script {entry_script} does not exist "
                    "(to start only Azurite: --only azurite)"
                )
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.run_azurite:
                self.azurite_proc = start_azurite(
                    self.azurite_port, self.stack_dir / "azurite-data", self.in_memory, self.azurite_log_path
                )
                if self.pid_files:
                    write_pid_file(self.stack_dir, "azurite", self.azurite_proc, self.azurite_port)
                wait_azurite(self.azurite_port, self.azurite_timeout, self.azurite_proc)
            if self.run_scoring:
                self.scoring_proc = start_scoring_service(
                    self.scoring_port,
                    self.workers,
                    entry_script=self.entry_script,
                    model_dir=self.model_dir,
                    log_path=self.scoring_log_path,
                    azurite_port=self.azurite_port,
                    env=self.env,
                )
                if self.pid_files:
                    write_pid_file(self.stack_dir, "scoring", self.scoring_proc, self.scoring_port)
                wait_scoring_service(self.scoring_base_url, self.scoring_timeout, self.scoring_proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop whatever was started (scoring service first), no orphans; idempotent."""
        for name in ("scoring", "azurite"):
            proc = self.processes().get(name)
            if proc is not None:
                stop(proc)
                if self.pid_files:
                    remove_pid_file(self.stack_dir, name)
        self.azurite_proc = self.scoring_proc = None

    def dead(self) -> dict[str, subprocess.Popen]:
        """Services that were started and have exited since."""
        return {name: proc for name, proc in self.processes().items() if proc.poll() is not None}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def describe(self) -> str:
        """Human-readable addresses of the started services."""
        lines = []
        if self.azurite_proc is not None:
            lines += [
                f"Azurite (blob)    {self.blob_endpoint}   [AZURITE_PORT={self.azurite_port}]",
                f"  BLOB_CONNECTION_STRING={self.connection_string}",
                f"  log: {self.azurite_log_path}",
            ]
        if self.scoring_proc is not None:
            lines += [
                f"Scoring service   {self.scoring_url}   [SCORING_PORT={self.scoring_port}, {self.workers} workers]",
                f"  SCORING_URL={self.scoring_url}",
                f"  log: {self.scoring_log_path}",
            ]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _selected(only: str | None) -> tuple[bool, bool]:
    return (only in (None, "azurite"), only in (None, "scoring"))


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Start in the background, wait until healthy, print the addresses."""
    want_azurite, want_scoring = _selected(args.only)
    for name, wanted in (("azurite", want_azurite), ("scoring", want_scoring)):
        record = read_pid_file(settings.stack_dir, name)
        if wanted and record is not None:
            if record.alive():
                print(f"{name}: already running (pid {record.pid}, port {record.port}); "
                      f"use 'down' first to restart it")
                want_azurite = want_azurite and name != "azurite"
                want_scoring = want_scoring and name != "scoring"
            else:
                remove_pid_file(settings.stack_dir, name)
    if not (want_azurite or want_scoring):
        return 0
    stack = LocalStack(
        azurite=want_azurite,
        scoring=want_scoring,
        settings=settings,
        in_memory=args.in_memory,
        pid_files=True,
        scoring_timeout=args.timeout,
        azurite_timeout=min(args.timeout, 120.0),
    )
    try:
        stack.start()
    except StackError as exc:
        print(f"local_stack up: {exc}", file=sys.stderr)
        return 1
    print(stack.describe())
    print(f"Stop with: .venv/bin/python -m scripts.local_stack down   (state in {settings.stack_dir})")
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    """Stop whatever the pid files name (by process group); nothing to stop is fine."""
    want_azurite, want_scoring = _selected(args.only)
    names = [n for n, w in (("scoring", want_scoring), ("azurite", want_azurite)) if w]
    for name in names:
        record = read_pid_file(settings.stack_dir, name)
        if record is None:
            if pid_file(settings.stack_dir, name).exists():
                remove_pid_file(settings.stack_dir, name)
            print(f"{name}: not running")
            continue
        if record.alive():
            stop_group(record.pid)
            print(f"{name}: stopped (pid {record.pid}, port {record.port})")
        else:
            print(f"{name}: not running (stale pid file removed)")
        remove_pid_file(settings.stack_dir, name)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print each service's state. Exit 0 if all recorded services are up, 3 if none runs, else 1."""
    running = problems = 0
    for name in SERVICES:
        record = read_pid_file(settings.stack_dir, name)
        if record is None:
            print(f"{name}: not running")
            continue
        if not record.alive():
            print(f"{name}: dead (pid {record.pid} is gone; stale pid file); log: {record.log_path}")
            problems += 1
            continue
        if name == "azurite":
            answer = http_request(f"{azurite_blob_endpoint(record.port)}?comp=list", timeout=2.0)
            healthy = answer is not None
            url = azurite_blob_endpoint(record.port)
        else:
            answer = http_request(f"http://{HOST}:{record.port}/", timeout=2.0)
            healthy = answer is not None and answer.status == 200
            url = scoring_url(record.port)
        state = "running, healthy" if healthy else "running, NOT answering"
        print(f"{name}: {state} (pid {record.pid}) {url}; log: {record.log_path}")
        running += 1
        problems += 0 if healthy else 1
    if problems:
        return 1
    return 0 if running else 3


def cmd_run(args: argparse.Namespace, settings: Settings, command: list[str]) -> int:
    """Foreground: start the stack, run ``command`` (if any) with the app settings, stop all at the end."""
    want_azurite, want_scoring = _selected(args.only)
    for name in SERVICES:
        record = read_pid_file(settings.stack_dir, name)
        if record is not None and record.alive():
            print(f"local_stack run: {name} from an earlier 'up' is running (pid {record.pid}, port "
                  f"{record.port}); stop it first: .venv/bin/python -m scripts.local_stack down", file=sys.stderr)
            return 1
    if args.app_port is not None:
        try:
            ensure_port_free(args.app_port, PORT_ENV["streamlit"])
        except PortInUseError as exc:
            print(f"local_stack run: {exc}", file=sys.stderr)
            return 1

    received: list[int] = []
    state: dict[str, subprocess.Popen | bool | None] = {"child": None, "starting": True}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if state["starting"]:
            raise KeyboardInterrupt  # abort the start-up; LocalStack.start() stops what it started
        child = state["child"]
        if not isinstance(child, subprocess.Popen) or child.poll() is not None:
            return
        if signum == signal.SIGINT and _terminal_sent_it_to_child():
            return  # Ctrl-C in the terminal already reached the command (same process group)
        child.send_signal(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stack = LocalStack(
        azurite=want_azurite,
        scoring=want_scoring,
        settings=settings,
        in_memory=args.in_memory,
        pid_files=True,
        scoring_timeout=args.timeout,
        azurite_timeout=min(args.timeout, 120.0),
    )
    child: subprocess.Popen | None = None
    try:
        try:
            stack.start()
        except StackError as exc:
            print(f"local_stack run: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("local_stack run: interrupted while starting; stopped", file=sys.stderr)
            return 130
        state["starting"] = False  # from now on a signal is recorded (and forwarded), not raised
        print(stack.describe(), flush=True)
        if args.app_port is not None:
            print(f"\n  Ready: open http://{HOST}:{args.app_port} in a browser   (Ctrl-C stops everything)\n",
                  flush=True)
        env = dict(os.environ)
        for key, value in stack.app_env().items():
            env.setdefault(key, value)
        if command:
            try:
                child = subprocess.Popen(command, env=env)
                state["child"] = child
            except OSError as exc:
                print(f"local_stack run: cannot start {command[0]}: {exc}", file=sys.stderr)
                return 127
        else:
            print("local_stack run: running; Ctrl-C or SIGTERM stops it", flush=True)
        if received and child is not None:  # a signal that came before the command existed
            child.send_signal(received[-1])
        while True:
            if child is not None and child.poll() is not None:
                break
            if child is None and received:
                return 0
            dead = stack.dead()
            if dead:
                for name, proc in dead.items():
                    print(f"local_stack run: {name} exited unexpectedly (code {proc.returncode}); "
                          f"last lines of {_proc_log(proc)}:\n{log_tail(_proc_log(proc))}", file=sys.stderr)
                return 1
            if child is not None and received:
                # The command has the signal: give it time to exit on its own, then insist.
                _stop_command(child)
                break
            time.sleep(0.2)
        assert child is not None
        code = child.returncode
        return 128 - code if code < 0 else code
    finally:
        state["starting"] = False
        if child is not None:
            _stop_command(child, grace=0.0 if child.poll() is None and not received else 10.0)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_command(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Wait up to ``grace`` s for the command to exit, then SIGTERM it, then SIGKILL it."""
    for action in (None, proc.terminate, proc.kill):
        if proc.poll() is not None:
            return
        if action is not None:
            action()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace if action is None else 10.0)


def _terminal_sent_it_to_child() -> bool:
    """True if we run in the terminal's foreground process group (so Ctrl-C reached our child too)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.local_stack",
        description="Azurite + the scoring service on 127.0.0.1. Ports etc. from AZURITE_PORT, SCORING_PORT, "
        "STREAMLIT_PORT, SCORING_WORKERS, STACK_DIR.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, start: bool) -> None:
        p.add_argument("--only", choices=SERVICES, help="act on one service only")
        if start:
            p.add_argument("--in-memory", action="store_true", help="Azurite keeps its data in memory")
            p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")

    common(sub.add_parser("up", help="start in the background and wait until healthy"), True)
    common(sub.add_parser("down", help="stop what 'up' (or a running 'run') started; idempotent"), False)
    sub.add_parser("status", help="show what runs")
    run = sub.add_parser("run", help="foreground: start, run the command after --, stop everything at the end")
    common(run, True)
    run.add_argument("--app-port", type=int, help="the command serves on this port (STREAMLIT_PORT): check "
                     "it is free first, print its URL when the stack is ready")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    args = build_parser().parse_args(argv)
    if command and args.command != "run":
        print("local_stack: only 'run' takes a command after --", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        if args.command == "up":
            return cmd_up(args, settings)
        if args.command == "down":
            return cmd_down(args, settings)
        if args.command == "status":
            return cmd_status(args, settings)
        return cmd_run(args, settings, command)
    except StackError as exc:
        print(f"local_stack {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
