"""The mixed load, as data: who runs (sessions per scheme), what each request recorded, the statistics.

A mixed run is closed-loop: every session is its own key pair in its own process. Each warms up
first (untimed requests until its key is in every worker's key cache, at most ``warmup``), then all
sessions start the timed phase together: ``predictions`` requests each, back to back. A ``Sample`` is one request: when it was sent and
when its response was read in full (``time.perf_counter``, which is CLOCK_MONOTONIC on Linux and
so comparable between processes), its status, what the server said it spent, and whether the
decrypted answer agreed with the plaintext model. ``summarise`` turns the samples of one
topology into a ``SchemeLoad`` per scheme. Nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_SESSIONS: dict[str, int] = {"bfv": 6, "ckks": 6, "ei": 4}
DEFAULT_PREDICTIONS = 10
DEFAULT_REPLICAS: tuple[int, ...] = (1, 2)
SLOW_SCHEME = "ei"  # "while ei runs": the fast schemes' targets are read over requests overlapping ei's
WARMUP, TIMED = "warm-up", "timed"
LOST_STATUS = -1  # no HTTP status: the connection failed or timed out


def parse_sessions(text: str, known: Sequence[str]) -> dict[str, int]:
    """'bfv=6,ckks=6,ei=4' -> {'bfv': 6, 'ckks': 6, 'ei': 4}; unknown names or bad counts raise ValueError."""
    sessions: dict[str, int] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, count = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in known:
            raise ValueError(f"expected SCHEME=COUNT with a scheme of {', '.join(known)}, got {item!r}")
        if name in sessions:
            raise ValueError(f"scheme {name!r} given twice")
        try:
            sessions[name] = int(count)
        except ValueError:
            raise ValueError(f"the count of {name!r} must be a whole number, got {count.strip()!r}") from None
        if sessions[name] < 0:
            raise ValueError(f"the count of {name!r} must be >= 0")
    sessions = {name: n for name, n in sessions.items() if n > 0}
    if not sessions:
        raise ValueError("no session given")
    return sessions


def parse_replicas(text: str) -> list[int]:
    """'1,2' -> [1, 2] (in order, without repeats); each must be >= 1."""
    counts: list[int] = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        try:
            count = int(raw)
        except ValueError:
            raise ValueError(f"replica counts are whole numbers, got {raw.strip()!r}") from None
        if count < 1:
            raise ValueError("a topology needs at least 1 replica")
        if count not in counts:
            counts.append(count)
    if not counts:
        raise ValueError("no replica count given")
    return counts


def describe_sessions(sessions: Mapping[str, int]) -> str:
    """{'bfv': 6, 'ei': 4} -> '10 sessions (6 bfv, 4 ei)'."""
    total = sum(sessions.values())
    parts = ", ".join(f"{count} {name}" for name, count in sessions.items())
    return f"{total} session{'s' if total != 1 else ''} ({parts})"


def percentile(values: Iterable[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile: the smallest value with at least p% of the values <= it.

    Always a value that was measured (no interpolation): p95 of 60 requests is the 57th smallest, so
    3 requests took longer. None for no values.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class Sample:
    """One request of one session, as measured by the session's process and checked afterwards."""

    scheme: str
    session: int  # the session's number, unique within a run
    phase: str  # WARMUP or TIMED
    digit: int  # index into the run's test digits
    started: float  # perf_counter just before the request was sent
    finished: float  # perf_counter once the whole response was read (or the failure seen)
    status: int  # HTTP status; LOST_STATUS when there was none
    key_cache: str = ""  # the server's "hit" / "miss" ('' unless 200)
    replica: str = ""  # which replica answered (the twin's X-Replica header; '' on the plain service)
    server_s: float | None = None  # server.timings_ms.total
    parse_s: float | None = None  # server.timings_ms.parse
    compute_s: float | None = None  # server.timings_ms.compute
    key_fetch_s: float | None = None  # server.timings_ms.key_fetch
    wrong: bool = False  # a 200 that was malformed, did not decrypt, or disagreed with the plaintext model
    error: str = ""  # why it was lost or wrong (no secrets: a status, an error code, an exception's type)

    @property
    def round_trip_s(self) -> float:
        """Request sent -> full response read: what the user waited for at the service."""
        return self.finished - self.started

    @property
    def ok(self) -> bool:
        """Answered 200 (right or wrong)."""
        return self.status == 200

    @property
    def server_wait_s(self) -> float | None:
        """The server's total minus its parse, key fetch and compute: waiting inside ``run()`` (e.g. for
        the worker's one ei child, busy with another request)."""
        parts = (self.server_s, self.parse_s, self.key_fetch_s, self.compute_s)
        if any(v is None for v in parts):
            return None
        total, parse, fetch, compute = (float(v or 0.0) for v in parts)
        return max(total - parse - fetch - compute, 0.0)

    @property
    def outside_server_s(self) -> float | None:
        """Round trip minus the server's own total: queueing, HTTP and JSON outside ``run()``."""
        return None if self.server_s is None else max(self.round_trip_s - self.server_s, 0.0)

    def overlaps(self, other: Sample) -> bool:
        """Whether the two requests were in flight at the same time."""
        return self.started < other.finished and other.started < self.finished


@dataclass
class SchemeLoad:
    """One scheme's requests in one topology: the timed ones and the warm-ups, kept apart."""

    scheme: str
    sessions: int = 0
    timed: list[Sample] = field(default_factory=list)
    warmups: list[Sample] = field(default_factory=list)
    during_slow: list[Sample] = field(default_factory=list)  # timed ones overlapping a SLOW_SCHEME request

    @property
    def requests(self) -> int:
        return len(self.timed)

    def _times(self, samples: Sequence[Sample] | None = None) -> list[float]:
        """Round trips of the 200 answers (a lost request has no latency; it is counted as lost)."""
        return [s.round_trip_s for s in (self.timed if samples is None else samples) if s.ok]

    @property
    def p50_s(self) -> float | None:
        return percentile(self._times(), 50)

    @property
    def p95_s(self) -> float | None:
        return percentile(self._times(), 95)

    @property
    def max_s(self) -> float | None:
        times = self._times()
        return max(times) if times else None

    @property
    def p95_during_slow_s(self) -> float | None:
        """p95 of the timed requests that were in flight while a SLOW_SCHEME request was."""
        return percentile(self._times(self.during_slow), 95)

    @property
    def span_s(self) -> float | None:
        """First timed request sent -> last timed response read, for this scheme."""
        if not self.timed:
            return None
        return max(s.finished for s in self.timed) - min(s.started for s in self.timed)

    @property
    def throughput(self) -> float | None:
        """Right answers per second over the scheme's timed span."""
        span = self.span_s
        right = sum(1 for s in self.timed if s.ok and not s.wrong)
        return right / span if span and span > 0 else None

    @property
    def wrong(self) -> int:
        return sum(1 for s in self.timed + self.warmups if s.wrong)

    @property
    def lost(self) -> int:
        return sum(1 for s in self.timed + self.warmups if not s.ok)

    @property
    def misses(self) -> int:
        """Key-cache misses among the timed requests (0 when the warm-ups reached every worker)."""
        return sum(1 for s in self.timed if s.key_cache == "miss")

    def server_percentile(self, what: str, p: float) -> float | None:
        """``p``-th percentile of a figure of the timed 200s: 'server', 'compute', 'key_fetch', 'wait' or
        'outside'."""
        read = {
            "server": lambda s: s.server_s,
            "compute": lambda s: s.compute_s,
            "key_fetch": lambda s: s.key_fetch_s,
            "wait": lambda s: s.server_wait_s,
            "outside": lambda s: s.outside_server_s,
        }[what]
        return percentile([v for s in self.timed if s.ok and (v := read(s)) is not None], p)

    @property
    def first_errors(self) -> list[str]:
        """The distinct reasons of lost or wrong requests, first seen first (at most 3)."""
        seen: list[str] = []
        for s in self.warmups + self.timed:
            if (s.wrong or not s.ok) and s.error and s.error not in seen:
                seen.append(s.error)
        return seen[:3]


def per_session_p50(load: SchemeLoad) -> list[float]:
    """Each session's median timed round trip, in session order (shows sessions that queued more)."""
    by_session: dict[int, list[float]] = {}
    for s in load.timed:
        if s.ok:
            by_session.setdefault(s.session, []).append(s.round_trip_s)
    return [p for _, times in sorted(by_session.items()) if (p := percentile(times, 50)) is not None]


def replica_counts(loads: Mapping[str, SchemeLoad]) -> dict[str, int]:
    """Timed answers per replica (X-Replica), all schemes together; empty on the plain service."""
    counts: dict[str, int] = {}
    for load in loads.values():
        for s in load.timed:
            if s.replica:
                counts[s.replica] = counts.get(s.replica, 0) + 1
    return dict(sorted(counts.items()))


def summarise(samples: Iterable[Sample], sessions: Mapping[str, int]) -> dict[str, SchemeLoad]:
    """A ``SchemeLoad`` per scheme of ``sessions`` (in its order), the timed requests marked "during ei"."""
    loads = {name: SchemeLoad(name, sessions=count) for name, count in sessions.items()}
    every = list(samples)
    for s in every:
        load = loads.setdefault(s.scheme, SchemeLoad(s.scheme))
        (load.timed if s.phase == TIMED else load.warmups).append(s)
    slow = [s for s in every if s.scheme == SLOW_SCHEME]  # warm-ups too: they are ei work in flight
    for load in loads.values():
        load.timed.sort(key=lambda s: s.started)
        load.warmups.sort(key=lambda s: s.started)
        if load.scheme != SLOW_SCHEME:
            load.during_slow = [s for s in load.timed if any(s.overlaps(e) for e in slow)]
    return loads


def combined(loads: Mapping[str, SchemeLoad]) -> SchemeLoad:
    """Every scheme's requests as one (the "all" row)."""
    every = SchemeLoad("all", sessions=sum(load.sessions for load in loads.values()))
    for load in loads.values():
        every.timed += load.timed
        every.warmups += load.warmups
    every.timed.sort(key=lambda s: s.started)
    return every


@dataclass
class Topology:
    """One topology's run: how it was set up and what it measured (or why it was skipped)."""

    replicas: int
    label: str
    sessions: dict[str, int]
    predictions: int
    warmup: int
    loads: dict[str, SchemeLoad] = field(default_factory=dict)
    skipped: str = ""  # why it did not run ('' if it ran)
    wall_s: float | None = None  # the timed phase: all sessions released -> all sessions done
    service_cpu_s: float | None = None  # CPU seconds of the stack (scoring, nginx, Azurite) meanwhile
    client_cpu_s: float | None = None  # CPU seconds the session processes used in their request loops
    other_cpu: float | None = None  # share of the machine's capacity other processes used meanwhile
    cpus: int = 1


def samples_json(topologies: Sequence[Topology]) -> str:
    """Every request of every topology that ran, as JSON (times in seconds, perf_counter clock)."""
    out = []
    for t in topologies:
        if t.skipped:
            continue
        samples = [
            {**dataclasses.asdict(s), "round_trip_s": s.round_trip_s, "server_wait_s": s.server_wait_s}
            for load in t.loads.values()
            for s in load.warmups + load.timed
        ]
        out.append({"replicas": t.replicas, "label": t.label, "sessions": t.sessions, "samples": samples})
    return json.dumps(out, indent=1)
