"""The printed report: a table of figures (a column per scheme), one of ratios, the targets.

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
from scripts.benchmark.results import RATIOS, WORKERS, Digits, Measured
from scripts.benchmark.targets import Verdict, evaluate


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
