"""What the Schemes page shows of a comparison: the metric table, the bar charts' points, the strip.

Plain rows and strings from ``lib.batch_run.SchemeSummary`` values (no streamlit, no charts),
with the shared formatters of ``lib.formatting``, so a figure reads as it does everywhere else.
Every ratio is "this scheme / ``ei``", the seed scheme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lib.batch_run import SchemeRun, SchemeSummary
from lib.formatting import (
    MISSING,
    format_bytes,
    format_error,
    format_percent,
    format_ratio_words,
    format_seconds,
)

__all__ = [
    "BASELINE",
    "METRICS",
    "Metric",
    "chart_points",
    "format_metric",
    "latency_points",
    "metric_rows",
    "ratio",
]

BASELINE = "ei"  # the seed scheme: every ratio is "this scheme / ei"

Unit = Literal["seconds", "bytes", "error", "fraction"]


@dataclass(frozen=True)
class Metric:
    """One row of the comparison table / one chart."""

    key: str  # the SchemeSummary field
    label: str
    unit: Unit
    log_scale: bool
    help: str


METRICS: tuple[Metric, ...] = (
    Metric("keygen_s", "Key generation", "seconds", True, "Making the key pair and the public material."),
    Metric("key_bytes", "Public keys in blob storage", "bytes", True, "Uploaded once per session key."),
    Metric("request_bytes", "Request body", "bytes", True, "JSON with the base64 ciphertext(s), per digit."),
    Metric(
        "server_cold_s", "Server time, key cache cold", "seconds", True,
        "The first request after the key upload: the service downloads and loads the public keys.",
    ),
    Metric(
        "server_warm_s", "Server time, key cache warm", "seconds", True,
        "Median of the other requests: parse and checks plus the homomorphic compute.",
    ),
    Metric("response_bytes", "Response body", "bytes", True, "JSON with the encrypted scores, per digit."),
    Metric("encrypt_s", "Encrypt (app)", "seconds", True, "Median per digit."),
    Metric("decrypt_s", "Decrypt (app)", "seconds", True, "Median per digit."),
    Metric(
        "e2e_warm_s", "End to end, warm", "seconds", True,
        "Median per digit of encrypt, request, server, response and decrypt, key cache warm.",
    ),
    Metric(
        "max_abs_error", "Max |error| vs plaintext", "error", True,
        "Largest difference between a decrypted score and the plaintext model's score, over all digits.",
    ),
    Metric("accuracy", "Accuracy", "fraction", False, "Predictions equal to the true label."),
)

_FORMATTERS = {
    "seconds": format_seconds,
    "bytes": format_bytes,
    "error": format_error,
    "fraction": format_percent,
}


def format_metric(metric: Metric, value: float | None) -> str:
    """A value for the table, in the metric's unit; '–' when not measured."""
    return _FORMATTERS[metric.unit](value)


def ratio(summaries: Sequence[SchemeSummary], metric: Metric, scheme: str) -> float | None:
    """``scheme``'s value over ``ei``'s (None if either is missing or ``ei``'s is 0)."""
    by_name = {s.name: s for s in summaries}
    base, other = by_name.get(BASELINE), by_name.get(scheme)
    if base is None or other is None:
        return None
    a, b = getattr(other, metric.key), getattr(base, metric.key)
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def metric_rows(summaries: Sequence[SchemeSummary]) -> list[dict[str, str]]:
    """The comparison table: one row per metric, a column per scheme, then each one's ratio to ei."""
    others = (
        [s.name for s in summaries if s.name != BASELINE]
        if any(s.name == BASELINE for s in summaries)
        else []
    )
    digits_row = {"metric": "Digits classified"}
    digits_row.update({s.name: f"{s.done} of {s.planned}" for s in summaries})
    digits_row.update({f"{name} / {BASELINE}": "" for name in others})
    rows = [digits_row]
    for metric in METRICS:
        row = {"metric": metric.label}
        row.update({s.name: format_metric(metric, getattr(s, metric.key)) for s in summaries})
        row.update(
            {f"{name} / {BASELINE}": format_ratio_words(ratio(summaries, metric, name)) for name in others}
        )
        rows.append(row)
    return rows


def chart_points(summaries: Sequence[SchemeSummary], metric: Metric) -> list[dict[str, Any]]:
    """One bar per scheme with a value: scheme, value, its label, and the ratio to ei as text."""
    points = []
    for summary in summaries:
        value = getattr(summary, metric.key)
        if value is None:
            continue
        label = format_metric(metric, value)
        if summary.name != BASELINE:
            words = format_ratio_words(ratio(summaries, metric, summary.name))
            if words != MISSING:
                label += f" ({words} than {BASELINE})"
        points.append({"scheme": summary.name, "value": float(value), "label": label})
    return points


def latency_points(schemes: Sequence[SchemeRun]) -> list[dict[str, Any]]:
    """Every digit's end-to-end time for the strip chart: scheme, seconds, key cache ("miss" first)."""
    return [
        {"scheme": run.name, "seconds": d.total_s, "cache": d.key_cache}
        for run in schemes
        for d in run.digits
    ]
