"""The command line: ``up`` (background), ``down``, ``status`` and ``run`` (foreground, with a command)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .config import (
    HOST,
    MAX_REPLICAS,
    PORT_ENV,
    SERVICES,
    Settings,
    StackError,
    azurite_blob_endpoint,
    scoring_base_url,
    scoring_url,
)
from .net import HttpProbe, ensure_port_free
from .pidfile import PidRecord, read_pid_file, remove_pid_file
from .process import ServiceProcess, log_tail, stop_tree
from .services import azurite_probes, scoring_probes
from .stack import LocalStack
from .twin import nginx_status_probe

DOWN_HINT = ".venv/bin/python -m scripts.local_stack down"


def _selected(only: str | None) -> dict[str, bool]:
    return {name: only in (None, name) for name in SERVICES}


_REPLICA_RE = re.compile(r"^replica-(\d+)$")


def members(stack_dir: Path, name: str) -> list[str]:
    """The pid-file names of service ``name``, in stop order: for "scoring", the twin's nginx, then
    its replicas (those with pid files), then the plain service."""
    if name != "scoring":
        return [name]
    found = [m for m in (_REPLICA_RE.match(path.stem) for path in Path(stack_dir).glob("replica-*.pid")) if m]
    replicas = [m.group(0) for m in sorted(found, key=lambda m: int(m.group(1)))]
    return ["nginx", *replicas, "scoring"]


def _records(stack_dir: Path, name: str) -> dict[str, PidRecord]:
    """The pid records of service ``name`` (see :func:`members`) that exist."""
    records = {member: read_pid_file(stack_dir, member) for member in members(stack_dir, name)}
    return {member: record for member, record in records.items() if record is not None}


def _stack(args: argparse.Namespace, settings: Settings, wanted: dict[str, bool]) -> LocalStack:
    return LocalStack(
        azurite=wanted["azurite"],
        scoring=wanted["scoring"],
        settings=settings,
        in_memory=args.in_memory,
        pid_files=True,
        scoring_timeout=args.timeout,
        azurite_timeout=min(args.timeout, 120.0),
        replicas=args.replicas,
    )


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Start in the background, wait until healthy, print the addresses."""
    wanted = _selected(args.only)
    for name in SERVICES:
        if not wanted[name]:
            continue
        for member, record in _records(settings.stack_dir, name).items():
            if record.alive():
                print(f"{name}: already running ({member}: pid {record.pid}, port {record.port}); "
                      "use 'down' first to restart it")  # fmt: skip
                wanted[name] = False
                break
        else:
            for member in members(settings.stack_dir, name):
                remove_pid_file(settings.stack_dir, member)
    if not any(wanted.values()):
        return 0
    stack = _stack(args, settings, wanted).start()
    print(stack.describe())
    print(f"Stop with: {DOWN_HINT}   (state in {settings.stack_dir})")
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    """Stop whatever the pid files name (process group and descendants); nothing to stop is fine."""
    wanted = _selected(args.only)
    for name in reversed(SERVICES):
        if not wanted[name]:
            continue
        records = _records(settings.stack_dir, name)
        if not records:
            print(f"{name}: not running")
        for member, record in records.items():
            if record.alive():
                stop_tree(record.pid)
                print(f"{member}: stopped (pid {record.pid}, port {record.port})")
            else:
                print(f"{member}: not running (stale pid file removed)")
            remove_pid_file(settings.stack_dir, member)
    return 0


def _health_probe(member: str, port: int, settings: Settings) -> tuple[HttpProbe, str]:
    if member == "azurite":
        return azurite_probes(port)[0], azurite_blob_endpoint(port)
    if member == "nginx":
        return nginx_status_probe(port, settings.scoring_key or None), scoring_url(port)
    return scoring_probes(scoring_base_url(port))[0], scoring_url(port)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print each service's state. Exit 0 if all recorded services are up, 3 if none runs, else 1."""
    running = problems = 0
    for name in SERVICES:
        records = _records(settings.stack_dir, name)
        if not records:
            print(f"{name}: not running")
        order = sorted(records, key=lambda m: (m == "nginx", m != "scoring"))  # stable: replicas in order
        for member in order:  # the plain service; or the replicas, then nginx
            record = records[member]
            if not record.alive():
                print(f"{member}: dead (pid {record.pid} is gone; stale pid file); log: {record.log_path}")
                problems += 1
                continue
            probe, url = _health_probe(member, record.port, settings)
            healthy = probe.check(2.0) is None
            state = "running, healthy" if healthy else "running, NOT answering"
            print(f"{member}: {state} (pid {record.pid}) {url}; log: {record.log_path}")
            running += 1
            problems += 0 if healthy else 1
    if problems:
        return 1
    return 0 if running else 3


class _Foreground:
    """Signals during ``run``: while starting they abort the start; afterwards they go to the command."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.starting = True
        self.child: subprocess.Popen[bytes] | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.starting:
            raise KeyboardInterrupt  # LocalStack.start() stops what it started
        child = self.child
        if child is None or child.poll() is not None:
            return
        if signum == signal.SIGINT and _terminal_sent_it_to_child():
            return  # Ctrl-C in the terminal already reached the command (same process group)
        child.send_signal(signum)


def cmd_run(args: argparse.Namespace, settings: Settings, command: list[str]) -> int:
    """Foreground: start the stack, run ``command`` (if any) with the app settings, stop all at the end."""
    for name in SERVICES:
        for member, record in _records(settings.stack_dir, name).items():
            if record.alive():
                print(f"local_stack run: {member} from an earlier 'up' is running (pid {record.pid}, port "
                      f"{record.port}); stop it first: {DOWN_HINT}", file=sys.stderr)  # fmt: skip
                return 1
    if args.app_port is not None:
        ensure_port_free(args.app_port, PORT_ENV["streamlit"])
    fg = _Foreground()
    previous = {s: signal.signal(s, fg) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stack = _stack(args, settings, _selected(args.only))
    try:
        try:
            stack.start()
        except KeyboardInterrupt:
            print("local_stack run: interrupted while starting; stopped", file=sys.stderr)
            return 130
        fg.starting = False  # from now on a signal is recorded (and forwarded), not raised
        print(stack.describe(), flush=True)
        if command:
            try:
                fg.child = subprocess.Popen(command, env={**stack.app_env(), **os.environ})
            except OSError as exc:
                print(f"local_stack run: cannot start {command[0]}: {exc}", file=sys.stderr)
                return 127
        else:
            print("local_stack run: running; Ctrl-C or SIGTERM stops it", flush=True)
        return _supervise(stack, fg, _app_probe(args.app_port))
    finally:
        fg.starting = False
        if fg.child is not None:
            _stop_command(fg.child, grace=0.0 if fg.child.poll() is None and not fg.received else 10.0)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _app_probe(port: int | None) -> HttpProbe | None:
    return HttpProbe(f"http://{HOST}:{port}", request_timeout=1.0) if port is not None else None


def _supervise(stack: LocalStack, fg: _Foreground, app: HttpProbe | None) -> int:
    """Wait for the command to exit, a signal, or a service to die; say "Ready" once the app answers."""
    child = fg.child
    if fg.received and child is not None:  # a signal that came before the command existed
        child.send_signal(fg.received[-1])
    reported: set[str] = set()
    while child is None or child.poll() is None:
        if child is None and fg.received:
            return 0
        dead = stack.dead()
        replicas = stack.replica_procs
        no_replica_left = bool(replicas) and all(proc.poll() is not None for proc in replicas)
        for name, proc in dead.items():
            if name not in reported:
                _report_exit(name, proc, survivable=name.startswith("replica-") and not no_replica_left)
                reported.add(name)
        if no_replica_left or any(not name.startswith("replica-") for name in dead):
            return 1
        # A dead replica is survivable: nginx sends its requests to the others (as an endpoint would).
        if child is not None and fg.received:
            _stop_command(child)  # the command has the signal: time to exit on its own, then insist
            break
        if app is not None and app.check(app.request_timeout) is None:
            print(f"\n  Ready: open {app.target} in a browser   (Ctrl-C stops everything)\n", flush=True)
            app = None
        time.sleep(0.2)
    assert child is not None
    code = child.returncode
    return 128 - code if code < 0 else code


def _report_exit(name: str, proc: ServiceProcess, survivable: bool) -> None:
    going_on = "; the other replicas go on serving" if survivable else ""
    print(f"local_stack run: {name} exited unexpectedly (code {proc.returncode}){going_on}; "
          f"last lines of {proc.log_path}:\n{log_tail(proc.log_path)}", file=sys.stderr)  # fmt: skip


def _stop_command(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Give the command ``grace`` s to exit on its own, then stop it and its descendants."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    stop_tree(proc.pid, 10.0, proc, group=False)  # it shares our process group: not a group stop


def _terminal_sent_it_to_child() -> bool:
    """True if we run in the terminal's foreground process group (so Ctrl-C reached our child too)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _replica_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"{value} is out of range: 0 (no nginx) to {MAX_REPLICAS}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.local_stack",
        description="Azurite + the scoring service on 127.0.0.1 (or N scoring replicas behind nginx, the local "
        "twin of a managed endpoint). Ports etc. from AZURITE_PORT, SCORING_PORT, STREAMLIT_PORT, SCORING_WORKERS, "
        "SCORING_REPLICAS, SCORING_KEY, STACK_DIR.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, start: bool) -> None:
        p.add_argument("--only", choices=SERVICES, help="act on one service only")
        if start:
            p.add_argument("--in-memory", action="store_true", help="Azurite keeps its data in memory")
            p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
            p.add_argument("--replicas", type=_replica_count, metavar="N",
                           help="N scoring replicas behind nginx on SCORING_PORT, which checks SCORING_KEY if set "
                           "(default SCORING_REPLICAS, else 0: one scoring service, no nginx)")  # fmt: skip

    common(sub.add_parser("up", help="start in the background and wait until healthy"), True)
    common(sub.add_parser("down", help="stop what 'up' (or a running 'run') started; idempotent"), False)
    sub.add_parser("status", help="show what runs")
    run = sub.add_parser("run", help="foreground: start, run the command after --, stop everything at the end")
    common(run, True)
    run.add_argument("--app-port", type=int, help="the command serves on this port (STREAMLIT_PORT): check "
                     "it is free first, print its URL once it accepts connections")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
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
