"""Run a benchmark so that Ctrl-C, SIGTERM or SIGHUP stops everything it started, once, and says so."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType


class _StopOnSignal:
    """The first SIGINT/SIGTERM/SIGHUP raises KeyboardInterrupt; later ones are ignored so clean-up finishes."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.fired:
            print("still stopping the local stack ...", file=sys.stderr, flush=True)
            return
        self.fired = True
        raise KeyboardInterrupt(signal.Signals(signum).name)


def run_stoppable(run: Callable[[], int]) -> int:
    """``run()``'s exit status, or 130 after an interrupt (its ``finally`` blocks stop what it started)."""
    handler = _StopOnSignal()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return run()
    except KeyboardInterrupt:
        print("\ninterrupted: everything the benchmark started has been stopped", file=sys.stderr)
        return 130
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
