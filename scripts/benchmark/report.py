"""The printed report: a table of figures (a column per scheme), one of ratios, the targets.

The mixed load (``--mixed``) has its own: per topology a table of the schemes' latencies,
where the time went, the warm-ups, the CPU, the targets and a verdict, then a summary.

Tables are drawn by ``tabulate``; every number is formatted by ``lib.formatting``, so a figure
reads the same here as on the app's pages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tabulate import tabulate

from lib.formatting import (
    MISSING,
    format_bytes,
    format_error,
    format_factor,
    format_percent,
    format_rate,
    format_seconds,
    is_number,
)
from scripts.benchmark.mixed import (
    SLOW_SCHEME,
    Sample,
    SchemeLoad,
    Topology,
    combined,
    describe_sessions,
    per_session_p50,
    percentile,
    replica_counts,
)
from scripts.benchmark.results import RATIOS, WORKERS, Digits, Measured
from scripts.benchmark.targets import MET, Verdict, all_met, evaluate, evaluate_load, format_count


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned, a rule under the header."""
    if any(len(row) != len(header) for row in rows):
        raise ValueError("every row needs as many cells as the header")
    align = ("left",) + ("right",) * (len(header) - 1)
    return tabulate(
        rows,
        headers=list(header),
        tablefmt="simple",
        colalign=align,
        disable_numparse=True,
        preserve_whitespace=True,
    )


def _count(done: int, out_of: int) -> str:
    return f"{done}/{out_of}" if out_of else MISSING


def _scheme(m: Measured) -> str:
    return m.scheme_id or MISSING


def _rate(m: Measured) -> str:
    return format_rate(m.throughput.per_second) if m.throughput else MISSING


def _verified(m: Measured) -> str:
    return _count(m.throughput.correct, m.throughput.checked) if m.throughput else MISSING


def _field(name: str, show: Callable[[float | None], str]) -> Callable[[Measured], str]:
    """A cell: the field ``name`` of a column, shown by ``show``."""
    return lambda m: show(getattr(m, name))


def figures_table(columns: Sequence[Measured], warm: int, clients: int) -> str:
    """Every figure measured, a column per scheme (the reference first when measured)."""
    seconds, size = format_seconds, format_bytes
    rows: list[tuple[str, Callable[[Measured], str]]] = [
        ("scheme", _scheme),
        ("key generation (client)", _field("keygen_s", seconds)),
        ("public key bytes", _field("key_bytes", size)),
        ("key upload to Azurite", _field("upload_s", seconds)),
        ("encrypt (client)", _field("encrypt_s", seconds)),
        ("request bytes (JSON body)", _field("request_bytes", size)),
        ("  of which ciphertexts (decoded)", _field("ciphertext_bytes", size)),
        ("server, in process, cold (key-cache miss)", _field("inproc_server_cold_s", seconds)),
        (f"server, in process, warm (median of {warm})", _field("inproc_server_warm_s", seconds)),
        ("server, HTTP, cold (key-cache miss)", _field("http_server_cold_s", seconds)),
        (f"server, HTTP, warm (median of {warm})", _field("http_server_warm_s", seconds)),
        ("  of which compute (the rest: parse and checks)", _field("http_compute_warm_s", seconds)),
        ("response bytes (JSON body)", _field("response_bytes", size)),
        ("  of which result ciphertexts (decoded)", _field("result_bytes", size)),
        ("decrypt (client)", _field("decrypt_s", seconds)),
        ("end to end, in process, warm", _field("inproc_e2e_warm_s", seconds)),
        ("end to end, HTTP, warm", _field("http_e2e_warm_s", seconds)),
        ("max |decrypted - plaintext model|", _field("max_error", format_error)),
        ("accuracy vs true labels (HTTP)", lambda m: _count(m.correct, m.digits)),
        ("same label as the plaintext model", lambda m: _count(m.agree, m.digits)),
        ("plaintext model's accuracy, whole real test set", lambda m: format_percent(m.plaintext_accuracy, 2)),
        (f"throughput, HTTP, {WORKERS} workers, {clients} clients", _rate),
        ("  sampled responses decrypted correctly", _verified),
        ("machine CPU used by other processes meanwhile", lambda m: format_percent(m.other_cpu, 0)),
    ]
    return table(
        ["", *(m.name for m in columns)], [[label, *(get(m) for m in columns)] for label, get in rows]
    )


def ratios_table(reference: Measured, schemes: Sequence[Measured]) -> str:
    """How many times faster or smaller than the reference each scheme is, per figure."""
    rows = [[r.label, *(format_factor(r(m, reference)) for m in schemes)] for r in RATIOS]
    return table(["× faster / smaller than the reference", *(m.name for m in schemes)], rows)


def targets_table(verdicts: Sequence[Verdict]) -> str:
    """One line per target: scheme, goal, measured value, verdict."""
    rows = [[v.scheme, v.goal, v.shown, v.verdict] for v in verdicts]
    align = ("left", "left", "right", "left")
    return tabulate(
        rows, headers=["", "target", "measured", ""], tablefmt="simple", colalign=align, disable_numparse=True
    )


def throughput_notes(schemes: Sequence[Measured]) -> list[str]:
    """A line per scheme on how its throughput window went."""
    lines = []
    for m in schemes:
        t = m.throughput
        if t is None:
            continue
        note = f"; first failure: {t.first_failure}" if t.first_failure else ""
        load = t.client_cpu_s / t.seconds if t.seconds > 0 else None
        lines.append(
            f"  {m.name} throughput: {t.ok} OK in {t.seconds:.1f} s after a {t.warmup_s:.1f} s warm-up, "
            f"{t.failed} failed, {t.misses} key-cache misses in the window; {t.requests} requests over "
            f"{t.connections} connections; the load generator used {format_percent(load, 0)} of a "
            f"core; sample max |error| {format_error(t.max_error)}{note}"
        )
    return lines


def render(
    results: Mapping[str, Measured],
    reference: Measured | None,
    digits: Digits,
    *,
    warm: int,
    clients: int,
    reference_runs: int,
    other_cpu: float | None = None,
) -> str:
    """The whole report as text."""
    schemes = list(results.values())
    columns = ([reference] if reference else []) + schemes
    out = [
        "",
        figures_table(columns, warm, clients),
        (
            f"(times are medians; sizes in decimal units, 1 kB = 1000 B; accuracy on the first "
            f"{digits.images.shape[0]} digits of the {digits.source}; the reference runs in process only: "
            f"the seed's client encrypt + EIServer.predict + decrypt, {reference_runs} run(s))"
        ),
        *throughput_notes(schemes),
        "",
    ]
    if reference:
        out += [
            ratios_table(reference, schemes),
            "(× = the reference's figure / this scheme's, both measured in this run)",
        ]
    else:
        out.append("ratios to the reference: not measured (--skip-reference)")
    if other_cpu is not None and is_number(other_cpu) and other_cpu > 0.1:
        out += [
            "",
            (
                f"note: other processes used {format_percent(other_cpu, 0)} of this machine's CPU during the "
                "run (see the last row of the first table): the times above are slower than on a quiet machine."
            ),
        ]
    out += ["", "targets (printed, never asserted)", targets_table(evaluate(results, reference))]
    return "\n".join(out)


# --- the mixed load (``--mixed``) ------------------------------------------------------------------


def _load_row(load: SchemeLoad, slow_ran: bool) -> list[str]:
    during = (
        f"{len(load.during_slow)}/{load.requests}" if slow_ran and load.scheme != SLOW_SCHEME else MISSING
    )
    return [
        load.scheme,
        str(load.sessions),
        str(load.requests),
        format_seconds(load.p50_s),
        format_seconds(load.p95_s),
        format_seconds(load.max_s),
        during,
        format_seconds(load.p95_during_slow_s) if load.scheme != SLOW_SCHEME else MISSING,
        format_rate(load.throughput),
        format_count(load.wrong),
        format_count(load.lost),
        format_count(load.misses),
    ]


def load_table(loads: Mapping[str, SchemeLoad]) -> str:
    """A row per scheme and one for all: requests, p50, p95, max, throughput, wrong, lost (timed requests)."""
    slow_ran = SLOW_SCHEME in loads
    header = [
        "scheme", "sessions", "requests", "p50", "p95", "max", f"while {SLOW_SCHEME} ran",
        f"p95 while {SLOW_SCHEME} ran", "predictions/s", "wrong", "lost", "key-cache misses",
    ]  # fmt: skip
    rows = [_load_row(load, slow_ran) for load in loads.values()]
    every = combined(loads)
    rows.append(_load_row(every, False))
    rows[-1][6] = rows[-1][7] = MISSING
    return table(header, rows)


def time_split_table(loads: Mapping[str, SchemeLoad]) -> str:
    """Where the round trip went, p50 / p95: the server's own figures (timings_ms) and the rest."""

    def pair(load: SchemeLoad, what: str) -> str:
        return f"{format_seconds(load.server_percentile(what, 50))} / {format_seconds(load.server_percentile(what, 95))}"

    header = [
        "p50 / p95", "round trip", "server total", "  compute", "  key fetch",
        "  waiting in the server", "outside run() (queue, HTTP, JSON)",
    ]  # fmt: skip
    rows = [
        [
            load.scheme,
            f"{format_seconds(load.p50_s)} / {format_seconds(load.p95_s)}",
            *(pair(load, what) for what in ("server", "compute", "key_fetch", "wait", "outside")),
        ]
        for load in loads.values()
    ]
    return table(header, rows)


def per_session_line(loads: Mapping[str, SchemeLoad]) -> str:
    """Each session's median timed round trip, per scheme: sessions that queued more stand out."""
    parts = [
        f"{load.scheme} {', '.join(format_seconds(p) for p in per_session_p50(load))}"
        for load in loads.values()
        if load.timed
    ]
    return "p50 of each session: " + "; ".join(parts)


def replicas_line(loads: Mapping[str, SchemeLoad]) -> str | None:
    """How many timed answers each replica gave (the twin only)."""
    counts = replica_counts(loads)
    if not counts:
        return None
    return "timed answers per replica (X-Replica): " + ", ".join(f"{r} {n}" for r, n in counts.items())


def warmup_line(loads: Mapping[str, SchemeLoad]) -> str:
    """The untimed warm-ups per scheme: how many, and each session's first request (its key-cache miss)."""
    parts = []
    for load in loads.values():
        if not load.warmups:
            continue
        firsts: dict[int, Sample] = {}
        for s in load.warmups:  # in the order sent
            firsts.setdefault(s.session, s)
        first = [s.round_trip_s for s in firsts.values() if s.ok]
        parts.append(
            f"{load.scheme} {len(load.warmups)} requests, each session's first p50 "
            f"{format_seconds(percentile(first, 50))}, max {format_seconds(max(first) if first else None)}"
        )
    return "warm-ups (untimed, before the timed phase, not in the tables above): " + (
        "; ".join(parts) or "none"
    )


def cpu_line(topology: Topology) -> str:
    """How busy the machine was during the timed phase, and with what."""
    wall, cpus = topology.wall_s, topology.cpus
    capacity = wall * cpus if wall and wall > 0 else None

    def share(seconds: float | None) -> str:
        if seconds is None or capacity is None:
            return MISSING
        return format_percent(seconds / capacity, 0)

    return (
        f"CPU during the timed phase ({format_seconds(wall)} wall, {cpus} cores): the stack (scoring, "
        f"Azurite{', nginx' if topology.replicas > 1 else ''}) {format_seconds(topology.service_cpu_s)} "
        f"({share(topology.service_cpu_s)} of the machine), the session processes' request loops "
        f"{format_seconds(topology.client_cpu_s)} ({share(topology.client_cpu_s)}), other processes "
        f"{format_percent(topology.other_cpu, 0)}"
    )


def topology_report(topology: Topology) -> str:
    """One topology: its load table, where the time went, warm-ups, CPU, targets and the verdict."""
    out = ["", f"== {topology.label} ==", ""]
    if topology.skipped:
        return "\n".join([*out, topology.skipped])
    plan = describe_sessions(topology.sessions)
    out += [
        (
            f"{plan}; each first warms up (untimed, each request on a new connection, until its key is in "
            f"every worker's key cache, at most {topology.warmup} requests; shown below, not in the tables), "
            f"then all start together: {topology.predictions} timed predictions each, back to back over "
            "one kept-alive connection (closed loop, no think time)"
        ),
        "",
        load_table(topology.loads),
        (
            "(round trip = request sent -> full response read, per request, timed 200s only; p95 is nearest-"
            f"rank; 'while {SLOW_SCHEME} ran' = timed requests overlapping an {SLOW_SCHEME} request in "
            "flight; predictions/s = right answers / the scheme's first-sent-to-last-read span; wrong and "
            "lost count warm-ups too)"
        ),
    ]
    for load in topology.loads.values():
        for error in load.first_errors:
            out.append(f"  {load.scheme}: {error}")
    out += [
        "",
        time_split_table(topology.loads),
        (
            "(server total, compute, key fetch: the service's timings_ms; waiting in the server = total - "
            "parse - key fetch - compute, e.g. for the worker's one ei child; outside run() = round trip - "
            "server total)"
        ),
        "",
        per_session_line(topology.loads),
        *([line] if (line := replicas_line(topology.loads)) else []),
        warmup_line(topology.loads),
        cpu_line(topology),
    ]
    if topology.other_cpu is not None and is_number(topology.other_cpu) and topology.other_cpu > 0.1:
        out.append(
            "note: other processes were busy meanwhile; the times above are slower than on a quiet machine"
        )
    verdicts = evaluate_load(topology.loads)
    met = sum(v.verdict == MET for v in verdicts)
    out += [
        "",
        "targets (printed, never asserted)",
        targets_table(verdicts),
        "",
        f"result: {'PASS' if all_met(verdicts) else 'FAIL'} ({met} of {len(verdicts)} targets met)",
    ]
    return "\n".join(out)


def summary_table(topologies: Sequence[Topology]) -> str:
    """p95 (and, for the fast schemes, p95 while ei ran) per scheme and topology, side by side."""
    ran = [t for t in topologies if not t.skipped]
    schemes: list[str] = []
    for t in ran:
        schemes += [name for name in t.loads if name not in schemes]
    header = [
        "p95 (p95 while ei ran)",
        *(f"{t.replicas} replica{'s' if t.replicas > 1 else ''}" for t in ran),
    ]
    rows = []
    for name in schemes:
        row = [name]
        for t in ran:
            load = t.loads.get(name)
            if load is None:
                row.append(MISSING)
                continue
            cell = format_seconds(load.p95_s)
            if name != SLOW_SCHEME and load.during_slow:
                cell += f" ({format_seconds(load.p95_during_slow_s)})"
            row.append(cell)
        rows.append(row)
    rows.append(["result", *("PASS" if all_met(evaluate_load(t.loads)) else "FAIL" for t in ran)])
    return table(header, rows)


def mixed_report(topologies: Sequence[Topology]) -> str:
    """The whole mixed-load report: every topology, then a summary when more than one ran."""
    out = [topology_report(t) for t in topologies]
    if sum(1 for t in topologies if not t.skipped) > 1:
        out += ["", "== summary ==", "", summary_table(topologies)]
    return "\n".join(out)
