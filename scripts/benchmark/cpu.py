"""How busy the machine was with *other* work while the benchmark measured (psutil).

Ours is this process and every process it started, however deep (the local stack's Azurite, the
scoring service and its workers, the ei scheme's native child), including children that have
exited since; the machine's figure is all CPU time the kernel counted busy. A high share of
other work means the figures measured meanwhile are slower than on a quiet machine.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

import psutil

from lib.formatting import is_number


class CpuSnapshot(NamedTuple):
    wall_s: float
    machine_busy_s: float
    ours_s: float


def other_cpu_share(machine_busy_s: float, ours_s: float, wall_s: float, cpus: int) -> float | None:
    """The share of the machine's CPU capacity that other processes used: (busy - ours) / (wall * cpus)."""
    if not all(is_number(v) for v in (machine_busy_s, ours_s, wall_s)) or wall_s <= 0 or cpus <= 0:
        return None
    return min(max((machine_busy_s - ours_s) / (wall_s * cpus), 0.0), 1.0)


def machine_busy_seconds() -> float:
    """CPU seconds the kernel counted busy on all CPUs since boot (everything but idle and I/O wait)."""
    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system
    for name in ("irq", "softirq", "steal"):  # Linux; guest time is already inside user
        busy += getattr(times, name, 0.0)
    return busy


def process_tree_seconds(roots: Iterable[psutil.Process]) -> float:
    """CPU seconds of ``roots`` and all their descendants, children that were waited for included."""
    tree: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            tree.setdefault(root.pid, root)
            for child in root.children(recursive=True):
                tree.setdefault(child.pid, child)
        except psutil.Error:
            continue  # exited meanwhile: its parent's children_* times hold it now
    total = 0.0
    for proc in tree.values():
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuMeter:
    """Snapshots of (wall, machine busy, ours); ``other_share`` turns two into a share of capacity."""

    def __init__(self, extra_pids: Iterable[int] = ()) -> None:
        """Ours = this process's tree, plus the trees of ``extra_pids`` (e.g. services started detached)."""
        self.roots = [psutil.Process()]
        for pid in extra_pids:
            try:
                self.roots.append(psutil.Process(pid))
            except psutil.Error:
                continue
        self.cpus = psutil.cpu_count() or 1

    def snapshot(self) -> CpuSnapshot:
        """Now: wall clock, machine busy CPU seconds, our CPU seconds."""
        return CpuSnapshot(time.perf_counter(), machine_busy_seconds(), process_tree_seconds(self.roots))

    def other_share(self, start: CpuSnapshot | None) -> float | None:
        """Share of the machine's capacity that other processes used since ``start`` (None without one)."""
        if start is None:
            return None
        end = self.snapshot()
        return other_cpu_share(
            end.machine_busy_s - start.machine_busy_s,
            end.ours_s - start.ours_s,
            end.wall_s - start.wall_s,
            self.cpus,
        )


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used: the load generator's share."""
    t = psutil.Process().cpu_times()
    return t.user + t.system
