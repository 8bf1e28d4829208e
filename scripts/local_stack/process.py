"""One way to run a service: spawn it in its own process group, wait until it is ready, stop it whole.

A :class:`Service` says what to run (command, environment, port, readiness probes, log file).
:func:`spawn_and_wait` starts it and returns once every probe passes; if the process exits first, or
the time runs out, it stops what it started and raises :class:`StackError` with the log's tail.
:func:`stop` ends the process group and every descendant (psutil), SIGTERM first, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil

from .config import ROOT, StackError
from .net import HttpProbe, ensure_port_free

POLL_S = 0.2


@dataclasses.dataclass(frozen=True)
class Service:
    """What to run and how to tell that it is ready."""

    name: str  # as it reads in messages: "Azurite", "the scoring service", "streamlit"
    command: Sequence[str]
    log_path: Path
    port: int | None = None  # checked to be free before the start
    port_env: str | None = None  # the setting named when the port is taken
    env: Mapping[str, str] | None = None  # None: inherit os.environ
    probes: Sequence[HttpProbe] = ()  # passed in order
    timeout: float = 60.0  # seconds for all probes together


class ServiceProcess(subprocess.Popen[bytes]):
    """A started service: a Popen that knows its :class:`Service` (and so its log)."""

    def __init__(self, service: Service) -> None:
        service.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(service.log_path, "wb") as log:
            super().__init__(
                list(service.command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(service.env) if service.env is not None else None,
                cwd=ROOT,
                start_new_session=True,  # its own process group: stop() signals all of it
            )
        self.service = service

    @property
    def log_path(self) -> Path:
        return self.service.log_path


def spawn(service: Service) -> ServiceProcess:
    """Start ``service`` (after checking its port is free) without waiting for it."""
    if service.port is not None:
        ensure_port_free(service.port, service.port_env)
    return ServiceProcess(service)


def spawn_and_wait(
    service: Service, timeout: float | None = None, on_spawn: Callable[[ServiceProcess], None] | None = None
) -> ServiceProcess:
    """Start ``service`` and wait until it is ready; on any failure stop it and raise.

    ``on_spawn`` runs right after the start (e.g. to write a pid file before the wait).
    """
    proc = spawn(service)
    try:
        if on_spawn is not None:
            on_spawn(proc)
        wait_ready(proc, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


@contextlib.contextmanager
def running(service: Service, timeout: float | None = None) -> Iterator[ServiceProcess]:
    """``with running(service) as proc:`` started and ready inside, stopped (group and all) after."""
    proc = spawn_and_wait(service, timeout)
    try:
        yield proc
    finally:
        stop(proc)


def wait_ready(proc: ServiceProcess, timeout: float | None = None) -> None:
    """Pass each probe of ``proc.service`` in turn, tolerating refusals and read timeouts.

    Raises :class:`StackError` with the log's tail if the process exits first or after ``timeout`` s.
    """
    service = proc.service
    timeout = service.timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    for probe in service.probes:
        last = "no answer"
        while True:
            if proc.poll() is not None:
                excerpt = log_excerpt(proc.log_path)
                where = f"; from {proc.log_path}:\n{excerpt}" if excerpt else f" (log: {proc.log_path})"
                raise StackError(f"{service.name} exited with code {proc.returncode} before it was ready{where}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = log_tail(proc.log_path)
                extra = f"; last lines of {proc.log_path}:\n{tail}" if tail else ""
                raise StackError(
                    f"{service.name} was not ready at {probe.target} after {timeout:.0f} s (last: {last}){extra}"
                )
            seen = probe.check(min(probe.request_timeout, max(remaining, 0.1)))
            if seen is None:
                break
            last = seen
            time.sleep(POLL_S)


# --------------------------------------------------------------------------------------------- logs


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ("" if there is none)."""
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# What azureml-inference-server-http logs when the entry script's init() or import fails.
_INIT_FAILURE_MARKERS = ("User's init function failed", "Failed to import user script", "No score script found")


def log_excerpt(path: Path | None, tail_lines: int = 25) -> str:
    """The start of the entry script's failure (init() or import) if the log has one, then the tail.

    Gunicorn can end the log with its own traceback when every worker fails to boot, which pushes
    the user's error out of a plain tail.
    """
    tail = log_tail(path, tail_lines)
    if path is None or not tail:
        return tail
    lines = Path(path).read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if any(marker in line for marker in _INIT_FAILURE_MARKERS):
            if i >= len(lines) - tail_lines:  # already in the tail
                return tail
            cause = []
            for following in lines[i : i + 40]:
                if not following.strip() or following.startswith("The above exception"):
                    break
                cause.append(following)
            return "\n".join(cause) + f"\n...\n(last {tail_lines} lines:)\n" + tail
    return tail


# --------------------------------------------------------------------------------------------- stopping


def group_alive(pgid: int) -> bool:
    """True while any process (zombies included) is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[psutil.Process]:
    """The processes in process group ``pgid`` now."""
    members = []
    for candidate in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(candidate.pid) == pgid:
                members.append(candidate)
    return members


def _tree(pid: int, pgid: int | None) -> list[psutil.Process]:
    """``pid``, its descendants (also those that left its group) and the members of group ``pgid``."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        leader = psutil.Process(pid)
        found[pid] = leader
        found.update((child.pid, child) for child in leader.children(recursive=True))
    if pgid is not None:
        found.update((member.pid, member) for member in group_members(pgid))
    return list(found.values())


def stop_tree(
    pid: int, grace: float = 5.0, proc: subprocess.Popen[bytes] | None = None, *, group: bool = True
) -> None:
    """Stop ``pid`` and all its descendants, and (``group``) every process of its process group.

    SIGTERM, then SIGKILL after ``grace`` s; returns once they are all gone. ``proc``, our own
    child, is reaped through Popen so that it keeps its exit code.
    """
    pgid = pid if group else None
    procs = [p for p in _tree(pid, pgid) if proc is None or p.pid != proc.pid]
    leader = [proc] if proc is not None else []

    def send(sig: signal.Signals) -> None:
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        for child in leader:
            child.send_signal(sig)  # a no-op once it is reaped
        for other in procs:
            with contextlib.suppress(psutil.Error):
                other.send_signal(sig)

    def gone_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            exited = all(p.poll() is not None for p in leader) and not any(p.is_running() for p in procs)
            if exited and (pgid is None or not group_alive(pgid)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    send(signal.SIGTERM)
    if gone_within(grace):
        return
    send(signal.SIGKILL)
    # Orphans that the SIGKILL made are reaped by init, which can take a second or two.
    if not gone_within(10.0):
        raise StackError(f"process {pid} or one of its group or descendants is still alive after SIGKILL")


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """Stop a process started by this module and its whole process group; return its exit code."""
    stop_tree(proc.pid, grace, proc)
    return proc.returncode
