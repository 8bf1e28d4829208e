"""The mixed load against one topology: its own stack, a process per session, the samples checked.

``run_topology`` starts Azurite and the scoring service with ``scripts.local_stack.LocalStack`` on
free ports, with its own STACK_DIR under a temporary folder: one replica is today's plain service
(2 gunicorn workers, no nginx), N >= 2 is the local twin (N replicas behind nginx, with an endpoint
key sent as ``Authorization: Bearer``). It then starts one process per session (spawn context),
releases them together once every key is uploaded and every body encrypted, measures the CPU of
the stack and of the machine while they run, and checks every decrypted answer against the
plaintext model (``lib.reference.reference_check``). The stack is stopped before it returns.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
import os
import queue
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from lib.reference import PlaintextModel, reference_check
from scripts.benchmark.cpu import CpuMeter, process_tree_seconds
from scripts.benchmark.mixed import Sample, Topology, summarise
from scripts.benchmark.mixed_session import BARRIER_TIMEOUT_S, SessionJob, SessionOutcome, session_main
from scripts.benchmark.results import WORKERS, Digits

CONTAINER = "public-keys"
OUTCOME_TIMEOUT_S = 300.0  # decrypting and checking one session's answers, after the timed phase


def twin_available() -> bool:
    """Whether ``LocalStack`` can run replicas behind nginx (the twin's ``replicas`` parameter)."""
    from scripts.local_stack import LocalStack

    return "replicas" in inspect.signature(LocalStack).parameters


def topology_label(replicas: int) -> str:
    """How a topology reads in the report."""
    if replicas == 1:
        return f"1 replica: the plain scoring service ({WORKERS} workers), no nginx"
    return f"{replicas} replicas behind nginx (the local twin, {WORKERS} workers each)"


def key_caches(replicas: int) -> int:
    """Key caches behind the URL: one per gunicorn worker process (of every replica)."""
    return replicas * WORKERS


def default_warmup(replicas: int) -> int:
    """At most this many untimed requests per session, each on a new connection: enough, mostly, for
    any worker to have taken one of them (the warm-up stops at the last cache's miss)."""
    return 3 * key_caches(replicas)


def jobs_for(
    sessions: Mapping[str, int],
    predictions: int,
    warmup: int,
    digits: Digits,
    *,
    scoring_url: str,
    connection_string: str,
    scoring_key: str = "",
    caches: int = 1,
) -> list[SessionJob]:
    """One job per session, schemes in order; the digits are dealt out in turn, each used once if enough."""
    per_session = warmup + predictions
    count = len(digits.labels)
    jobs = []
    number = 0
    for scheme, how_many in sessions.items():
        for _ in range(how_many):
            picks = tuple((number * per_session + i) % count for i in range(per_session))
            jobs.append(
                SessionJob(
                    scheme=scheme,
                    number=number,
                    scoring_url=scoring_url,
                    connection_string=connection_string,
                    container=CONTAINER,
                    digits=picks,
                    pixels=digits.images[list(picks)],
                    warmup=warmup,
                    caches=caches,
                    scoring_key=scoring_key,
                )
            )
            number += 1
    return jobs


def samples_of(outcome: SessionOutcome, model: PlaintextModel, digits: Digits) -> list[Sample]:
    """The session's answers as samples, each 200 checked against the plaintext model's label."""
    samples = []
    for a in outcome.answers:
        wrong, error = False, a.error
        if a.status == 200:
            if a.scores is None:
                wrong = True  # malformed or undecryptable (a.error says why)
            else:
                try:
                    check = reference_check(model, digits.images[a.digit], a.scores, outcome.scheme)
                    wrong = not check.agrees
                    if wrong:
                        error = f"label {check.encrypted_label}, the plaintext model says {check.plain_label}"
                except ValueError as exc:
                    wrong, error = True, f"bad answer: {exc}"

        def seconds(name: str, timings: Mapping[str, float] = a.timings_ms) -> float | None:
            value = timings.get(name)
            return None if value is None else value / 1000.0

        samples.append(
            Sample(
                scheme=outcome.scheme,
                session=outcome.number,
                phase=a.phase,
                digit=a.digit,
                started=a.started,
                finished=a.finished,
                status=a.status,
                key_cache=a.key_cache,
                replica=a.replica,
                server_s=seconds("total"),
                parse_s=seconds("parse"),
                compute_s=seconds("compute"),
                key_fetch_s=seconds("key_fetch"),
                wrong=wrong,
                error=error,
            )
        )
    return samples


def _stack_kwargs(replicas: int) -> tuple[dict[str, Any], str]:
    """LocalStack's topology arguments and the endpoint key to send ('' for none)."""
    from scripts.local_stack import LocalStack

    params = inspect.signature(LocalStack).parameters
    if replicas == 1:
        return ({"replicas": 0} if "replicas" in params else {}), ""
    kwargs: dict[str, Any] = {"replicas": replicas}
    key = ""
    if "scoring_key" in params:
        key = secrets.token_urlsafe(24)  # this run's endpoint key: nginx checks it; never printed
        kwargs["scoring_key"] = key
    return kwargs, key


def _stack_pids(stack: Any) -> list[int]:
    procs = list(stack.processes().values()) + list(getattr(stack, "replica_procs", None) or [])
    return sorted({p.pid for p in procs if p is not None and p.poll() is None})


@contextlib.contextmanager
def _processes(jobs: list[SessionJob]) -> Iterator[tuple[list[Any], Any, Any, Any, Any]]:
    """Spawned session processes (not started) with their barriers and queue; ended on the way out."""
    ctx = multiprocessing.get_context("spawn")
    ready, warm, done = (ctx.Barrier(len(jobs) + 1) for _ in range(3))  # the sessions and this process
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=session_main,
            args=(job, ready, warm, done, out),
            name=f"session-{job.scheme}-{job.number}",
            daemon=True,
        )
        for job in jobs
    ]
    finished = threading.Event()

    def watch() -> None:
        """A session that dies before the last barrier (it could not even start) breaks the barriers,
        so this process stops waiting at once instead of after BARRIER_TIMEOUT_S."""
        while not finished.wait(0.5):
            if any(proc.exitcode not in (None, 0) for proc in procs):
                for barrier in (ready, warm, done):
                    barrier.abort()
                return

    threading.Thread(target=watch, name="session-watch", daemon=True).start()
    try:
        yield procs, ready, warm, done, out
    finally:
        finished.set()
        for barrier in (ready, warm, done):
            barrier.abort()  # a session still waiting stops waiting
        for proc in procs:
            if proc.pid is not None:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=10)
        out.close()
        out.cancel_join_thread()


def _collect(out: Any, count: int, procs: list[Any], timeout_s: float) -> list[SessionOutcome]:
    """Up to ``count`` outcomes from the queue; stops early once no session process is left to send one."""
    outcomes: list[SessionOutcome] = []
    deadline = time.monotonic() + timeout_s
    while len(outcomes) < count and time.monotonic() < deadline:
        try:
            outcomes.append(out.get(timeout=1.0))
        except queue.Empty:
            if not any(proc.is_alive() for proc in procs):
                with contextlib.suppress(queue.Empty):
                    while len(outcomes) < count:
                        outcomes.append(out.get(timeout=1.0))
                break
    return outcomes


def _failures(outcomes: list[SessionOutcome], procs: list[Any]) -> str:
    reasons = [f"{o.scheme} session {o.number}: {o.failure}" for o in outcomes if o.failure]
    reported = {o.number for o in outcomes}
    reasons += [
        f"{proc.name}: exited with {proc.exitcode} without a report"
        for number, proc in enumerate(procs)  # job numbers are the processes' order
        if number not in reported
    ]
    return "; ".join(reasons[:5]) or "a session process did not reach the barrier"


def run_topology(
    replicas: int,
    sessions: Mapping[str, int],
    predictions: int,
    warmup: int | None,
    digits: Digits,
    model: PlaintextModel,
    *,
    log: Any = None,
) -> Topology:
    """Start the topology's stack, run the mixed load against it, stop it; the samples summarised."""
    from lib.blob_store import PublicKeyStore
    from scripts.local_stack import LocalStack, free_port

    log = log or sys.stdout
    warmup = default_warmup(replicas) if warmup is None else warmup
    label = topology_label(replicas)
    topology = Topology(replicas, label, dict(sessions), predictions, warmup)

    def say(text: str) -> None:
        print(f"[{replicas} replica{'s' if replicas > 1 else ''}] {text}", file=log, flush=True)

    if replicas > 1 and not twin_available():
        topology.skipped = (
            "skipped: scripts.local_stack.LocalStack has no `replicas` parameter yet (the local twin behind "
            "nginx has not landed); this topology runs as soon as it has"
        )
        say(topology.skipped)
        return topology

    kwargs, key = _stack_kwargs(replicas)
    with contextlib.ExitStack() as cleanup:
        stack_dir = Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix=f"benchmark-mixed-{replicas}-"))
        )
        azurite_port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("SCORING_KEY", "SCORING_REPLICAS")}
        env["ALLOWED_BLOB_HOSTS"] = f"127.0.0.1:{azurite_port}"
        say(f"starting Azurite and the scoring service on free ports ({label}) ...")
        stack = LocalStack(
            azurite_port=azurite_port,
            scoring_port=free_port(),
            workers=WORKERS,
            stack_dir=stack_dir,
            env=env,
            **kwargs,
        )
        cleanup.callback(stack.stop)  # registered before start: a Ctrl-C while starting stops it too
        stack.start()
        PublicKeyStore(stack.connection_string, CONTAINER).ensure_container()

        jobs = jobs_for(
            sessions, predictions, warmup, digits,
            scoring_url=stack.scoring_url, connection_string=stack.connection_string, scoring_key=key,
            caches=key_caches(replicas),
        )  # fmt: skip
        procs, ready, warm, done, out = cleanup.enter_context(_processes(jobs))
        say(f"{len(jobs)} session processes: key pairs, key uploads, encrypting every request ...")
        for proc in procs:
            proc.start()
        stack_roots = [psutil.Process(pid) for pid in _stack_pids(stack)]
        meter = CpuMeter(pid for pid in _stack_pids(stack))
        try:
            ready.wait(BARRIER_TIMEOUT_S)
            say(
                f"warming up: each session until its key is in all {key_caches(replicas)} workers' caches "
                f"(at most {warmup} requests) ..."
            )
            warm.wait(BARRIER_TIMEOUT_S)
            start, service_start = meter.snapshot(), process_tree_seconds(stack_roots)
            say(f"all sessions released together: {predictions} timed predictions each ...")
            done.wait(BARRIER_TIMEOUT_S)
            service_end, topology.other_cpu = process_tree_seconds(stack_roots), meter.other_share(start)
            topology.wall_s = time.perf_counter() - start.wall_s
        except threading.BrokenBarrierError:
            outcomes = _collect(out, len(jobs), procs, 30.0)
            raise RuntimeError(f"the mixed load could not run: {_failures(outcomes, procs)}") from None
        topology.service_cpu_s = service_end - service_start
        topology.cpus = meter.cpus
        say("timed phase over: decrypting and checking every answer ...")
        outcomes = _collect(out, len(jobs), procs, OUTCOME_TIMEOUT_S)
        failed = [o for o in outcomes if o.failure]
        if len(outcomes) < len(jobs) or failed:
            raise RuntimeError(f"the mixed load did not finish: {_failures(outcomes, procs)}")
        topology.client_cpu_s = sum(o.client_cpu_s for o in outcomes)
        samples = [s for o in outcomes for s in samples_of(o, model, digits)]
        topology.loads = summarise(samples, sessions)
        dead = stack.dead()
        if dead:
            say(f"note: {', '.join(dead)} exited during the run (see its log)")
        say("stopping the stack ...")
    return topology
