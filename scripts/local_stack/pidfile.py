"""Pid files in the stack directory, so that ``down`` and ``status`` work from another shell."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import psutil

from .process import ServiceProcess, group_alive


def started_after_boot(pid: int) -> float | None:
    """Seconds from boot to the start of ``pid`` (tells a reused pid apart), None if it is gone.

    psutil's ``create_time`` is wall-clock time, which moves when the clock is set; less the boot time
    (read the same way) it does not.
    """
    try:
        return psutil.Process(pid).create_time() - psutil.boot_time()
    except psutil.Error:
        return None


@dataclasses.dataclass
class PidRecord:
    """What a pid file says about a running service (its pid is also its process group)."""

    name: str
    pid: int
    port: int
    started_after_boot_s: float | None
    log_path: str

    def alive(self) -> bool:
        """True if the recorded process group still exists and is ours (not a reused pid)."""
        started = started_after_boot(self.pid)
        if started is not None:
            return self.started_after_boot_s is None or abs(started - self.started_after_boot_s) < 0.05
        # The leader is gone; group members may remain (a pgid is not reused while it has members).
        return group_alive(self.pid)


def pid_file(stack_dir: Path, name: str) -> Path:
    return Path(stack_dir) / f"{name}.pid"


def write_pid_file(stack_dir: Path, name: str, proc: ServiceProcess, port: int) -> Path:
    """Record a started service (JSON: pid = pgid, port, start time, log path)."""
    record = PidRecord(name, proc.pid, port, started_after_boot(proc.pid), str(proc.log_path))
    path = pid_file(stack_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(record)) + "\n")
    return path


def read_pid_file(stack_dir: Path, name: str) -> PidRecord | None:
    """The record in ``<stack_dir>/<name>.pid``, or None (missing or unreadable)."""
    try:
        data = json.loads(pid_file(stack_dir, name).read_text())
        if "start_ticks" in data:  # written by the earlier version: clock ticks from boot
            ticks = data.pop("start_ticks")
            data["started_after_boot_s"] = None if ticks is None else ticks / os.sysconf("SC_CLK_TCK")
        return PidRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def remove_pid_file(stack_dir: Path, name: str) -> None:
    pid_file(stack_dir, name).unlink(missing_ok=True)
