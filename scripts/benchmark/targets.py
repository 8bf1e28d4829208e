"""The goals each scheme should reach, as data, and the one function that checks them.

A target names a metric, a comparison and a threshold; ``evaluate`` reads the metric from the
run's results and says "met", "NOT met" or "not measured". Targets are printed, never asserted:
this machine is shared and noisy (the report says how busy it was).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from lib.formatting import format_bytes, format_error, format_factor, format_rate, format_seconds, is_number
from scripts.benchmark.results import RATIO, WORKERS, Measured

Comparison = Literal["<=", ">="]
MET, NOT_MET, NOT_MEASURED = "met", "NOT met", "not measured"


@dataclass(frozen=True)
class Metric:
    """A figure a target can name: how to read it from a scheme (and the reference) and how to show it."""

    label: str
    read: Callable[[Measured, Measured | None], float | None]
    show: Callable[[float | None], str]


METRICS: dict[str, Metric] = {
    "server_http_warm": Metric("server time (HTTP, warm)", lambda m, _: m.http_server_warm_s, format_seconds),
    "speedup_server_http": Metric(
        "faster than the reference (server, HTTP, warm)", RATIO["server, HTTP, warm"], format_factor
    ),
    "e2e_http_warm": Metric("end to end (HTTP, warm)", lambda m, _: m.http_e2e_warm_s, format_seconds),
    "key_bytes": Metric("public keys", lambda m, _: m.key_bytes, format_bytes),
    "response_bytes": Metric("response (JSON body)", lambda m, _: m.response_bytes, format_bytes),
    "max_error": Metric("max |decrypted - plaintext model|", lambda m, _: m.max_error, format_error),
    "throughput_verified": Metric(
        f"predictions/s ({WORKERS} workers, HTTP, sample decrypts right)",
        lambda m, _: m.throughput_verified,
        format_rate,
    ),
}


@dataclass(frozen=True)
class Target:
    """``scheme``'s ``metric`` must be ``comparison`` ``threshold`` (in the metric's unit: s, bytes, /s)."""

    scheme: str
    metric: str
    comparison: Comparison
    threshold: float


TARGETS: tuple[Target, ...] = (
    # ei: kept from the first version of this benchmark
    Target("ei", "server_http_warm", "<=", 1.3),
    Target("ei", "speedup_server_http", ">=", 15.0),
    Target("ei", "e2e_http_warm", "<=", 1.6),
    Target("ckks", "server_http_warm", "<=", 0.025),
    Target("ckks", "key_bytes", "<=", 0.7e6),
    Target("ckks", "response_bytes", "<=", 130e3),
    Target("ckks", "max_error", "<=", 1e-3),
    Target("ckks", "e2e_http_warm", "<=", 0.050),
    Target("bfv", "server_http_warm", "<=", 0.005),
    Target("bfv", "e2e_http_warm", "<=", 0.020),
    Target("bfv", "throughput_verified", ">=", 300.0),
)


@dataclass(frozen=True)
class Verdict:
    """One checked target: what it asks, what was measured, and the verdict."""

    target: Target
    goal: str  # e.g. "server time (HTTP, warm) <= 25.0 ms"
    value: float | None
    shown: str  # the measured value, formatted
    verdict: str  # MET, NOT_MET or NOT_MEASURED

    @property
    def scheme(self) -> str:
        return self.target.scheme


def verdict_of(value: float | None, comparison: Comparison, threshold: float) -> str:
    """'met', 'NOT met', or 'not measured' (None, NaN)."""
    if value is None or not is_number(value):
        return NOT_MEASURED
    met = value <= threshold if comparison == "<=" else value >= threshold
    return MET if met else NOT_MET


def evaluate(
    results: Mapping[str, Measured], reference: Measured | None, targets: Sequence[Target] = TARGETS
) -> list[Verdict]:
    """Check every target of a scheme that was measured (in ``targets`` order)."""
    verdicts = []
    for target in targets:
        measured = results.get(target.scheme)
        if measured is None:
            continue
        metric = METRICS[target.metric]
        value = metric.read(measured, reference)
        verdicts.append(
            Verdict(
                target=target,
                goal=f"{metric.label} {target.comparison} {metric.show(target.threshold)}",
                value=value,
                shown=metric.show(value),
                verdict=verdict_of(value, target.comparison, target.threshold),
            )
        )
    return verdicts
