"""One scheme's part of a batch run: its digits (the plan), what each digit measured, its summary.

``plan_schemes`` picks each scheme's digits from one label-balanced order of the gallery;
``DigitResult`` holds one prediction's times, sizes and the plaintext model's check of the same
pixels (``lib.reference.reference_check``); ``SchemeRun.summary`` turns a part's digits into
the medians, percentiles, error and accuracy that the pages show. ``lib.batch_run`` advances
the parts; nothing here talks to a service.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lib.reference import PlaintextModel, reference_check
from lib.session import Prediction

__all__ = [
    "DigitResult",
    "Phase",
    "SchemeRun",
    "SchemeSummary",
    "balanced_order",
    "estimate_seconds",
    "plan_schemes",
    "step_weights",
]

Phase = Literal["waiting", "running", "done", "failed", "stopped"]

# Rough seconds for planning only (estimates on the pages, the progress bar's weights): key setup
# and one prediction end to end, on a 2-core machine. Never asserted anywhere.
_ESTIMATES_S: dict[str, tuple[float, float]] = {
    "ei": (3.0, 1.5), "ckks": (0.5, 0.05), "bfv": (0.3, 0.03), "network": (0.8, 0.12),
}
_UNKNOWN_ESTIMATE_S = (1.0, 0.5)


def step_weights(scheme: str) -> tuple[float, float]:
    """Rough seconds of a scheme's key setup and of one of its predictions (for planning only)."""
    return _ESTIMATES_S.get(scheme, _UNKNOWN_ESTIMATE_S)


def estimate_seconds(scheme: str, digits: int) -> float:
    """A rough time for one scheme's part of a run (key setup plus ``digits`` predictions)."""
    setup, per_digit = step_weights(scheme)
    return setup + digits * per_digit


# --- the plan -----------------------------------------------------------------------------------


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> list[int]:
    """All gallery indices, interleaved by label: one shuffled digit of each class, then the next...

    So the first N digits of any run cover every label evenly.
    """
    per_class = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    order: list[int] = []
    for round_ in range(max(len(p) for p in per_class)):
        classes = rng.permutation(len(per_class))
        order += [int(per_class[c][round_]) for c in classes if round_ < len(per_class[c])]
    return order


def plan_schemes(
    digits_per_scheme: Mapping[str, int], labels: np.ndarray, seed: int | None = None
) -> list[SchemeRun]:
    """One part per scheme (in the given order) over the first ``n`` digits of one balanced order.

    Every scheme starts at the same digit, so a scheme with fewer digits runs a subset of the
    others' digits. A scheme named "" takes the name of the first session it is given.
    """
    order = balanced_order(np.asarray(labels), np.random.default_rng(seed))
    parts = []
    for name, n in digits_per_scheme.items():
        if not 1 <= int(n) <= len(order):
            where = f" for {name}" if name else ""
            raise ValueError(f"the number of digits{where} must be between 1 and {len(order)}, got {n}")
        parts.append(SchemeRun(name=name, indices=order[: int(n)]))
    return parts


# --- what gets measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitResult:
    """One digit through one scheme, and the plaintext model's verdict on the same pixels."""

    index: int
    true_label: int
    encrypted_label: int
    plain_label: int | None  # None without a plaintext model
    max_abs_error: float | None
    key_cache: str
    total_s: float
    encrypt_s: float
    decrypt_s: float
    server_s: float  # every server stage: parse and checks, key fetch, compute
    compute_s: float
    request_bytes: int
    response_bytes: int
    ciphertext_bytes: int
    result_bytes: int

    @classmethod
    def measure(
        cls,
        index: int,
        true_label: int,
        pixels: np.ndarray,
        prediction: Prediction,
        model: PlaintextModel | None,
        scheme: str,
    ) -> DigitResult:
        """The numbers of one prediction, with ``scheme``'s plaintext model's check of the same pixels."""
        check = reference_check(model, pixels, prediction.scores, scheme) if model is not None else None
        sizes = prediction.sizes
        return cls(
            index=index,
            true_label=true_label,
            encrypted_label=prediction.label,
            plain_label=check.plain_label if check is not None else None,
            max_abs_error=check.max_abs_error if check is not None else None,
            key_cache=prediction.key_cache,
            total_s=prediction.total_s,
            encrypt_s=prediction.stage_seconds("encrypt"),
            decrypt_s=prediction.stage_seconds("decrypt"),
            server_s=prediction.server_seconds,
            compute_s=prediction.stage_seconds("compute"),
            request_bytes=int(sizes.get("request_bytes", 0)),
            response_bytes=int(sizes.get("response_bytes", 0)),
            ciphertext_bytes=int(sizes.get("ciphertext_bytes", 0)),
            result_bytes=int(sizes.get("result_bytes", 0)),
        )

    @property
    def correct(self) -> bool:
        """The encrypted prediction is the true label."""
        return self.encrypted_label == self.true_label

    @property
    def agrees(self) -> bool | None:
        """The encrypted and plaintext predictions are the same (None without a plaintext model)."""
        return None if self.plain_label is None else self.encrypted_label == self.plain_label


@dataclass(frozen=True)
class SchemeSummary:
    """One scheme's numbers for the pages' metrics, table and charts (None: not measured)."""

    name: str
    phase: Phase
    planned: int
    done: int
    error: str
    keygen_s: float | None
    upload_s: float | None
    key_bytes: int | None
    request_bytes: float | None
    ciphertext_bytes: float | None
    response_bytes: float | None
    result_bytes: float | None
    cold_cache: str | None  # the first request's key cache: "miss" expected with a fresh key
    server_cold_s: float | None
    server_warm_s: float | None
    compute_warm_s: float | None
    encrypt_s: float | None
    decrypt_s: float | None
    e2e_cold_s: float | None
    e2e_warm_s: float | None
    latency_p50_s: float | None  # end to end over every digit, the first one included
    latency_p90_s: float | None
    latency_max_s: float | None
    max_abs_error: float | None
    accuracy: float | None
    plain_accuracy: float | None  # the plaintext model on the same digits
    agreement: float | None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _share(hits: Sequence[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


@dataclass
class SchemeRun:
    """One scheme's part of a run: its digits, its key setup, and its results so far."""

    name: str
    indices: list[int]
    phase: Phase = "waiting"
    keygen_s: float | None = None
    upload_s: float | None = None
    key_bytes: int | None = None
    digits: list[DigitResult] = field(default_factory=list)
    error: str = ""
    notice: str = ""  # a problem that did not spoil the numbers, e.g. the key blob not deleted

    @property
    def planned(self) -> int:
        """How many digits this scheme classifies."""
        return len(self.indices)

    @property
    def left(self) -> int:
        """How many of its digits are still to classify."""
        return self.planned - len(self.digits)

    @property
    def open(self) -> bool:
        """Still to do (waiting) or under way (running)."""
        return self.phase in ("waiting", "running")

    def summary(self) -> SchemeSummary:
        """Medians, cold versus warm, latency percentiles, error and accuracy over the digits done."""
        digits = self.digits
        cold, warm = (digits[0], digits[1:]) if digits else (None, [])
        errors = [d.max_abs_error for d in digits if d.max_abs_error is not None]
        checked = [d for d in digits if d.plain_label is not None]
        latencies = [d.total_s for d in digits]
        return SchemeSummary(
            name=self.name,
            phase=self.phase,
            planned=self.planned,
            done=len(digits),
            error=self.error,
            keygen_s=self.keygen_s,
            upload_s=self.upload_s,
            key_bytes=self.key_bytes,
            request_bytes=_median([d.request_bytes for d in digits]),
            ciphertext_bytes=_median([d.ciphertext_bytes for d in digits]),
            response_bytes=_median([d.response_bytes for d in digits]),
            result_bytes=_median([d.result_bytes for d in digits]),
            cold_cache=cold.key_cache if cold is not None else None,
            server_cold_s=cold.server_s if cold is not None else None,
            server_warm_s=_median([d.server_s for d in warm]),
            compute_warm_s=_median([d.compute_s for d in warm]),
            encrypt_s=_median([d.encrypt_s for d in digits]),
            decrypt_s=_median([d.decrypt_s for d in digits]),
            e2e_cold_s=cold.total_s if cold is not None else None,
            e2e_warm_s=_median([d.total_s for d in warm]),
            latency_p50_s=_median(latencies),
            latency_p90_s=_percentile(latencies, 0.9),
            latency_max_s=max(latencies) if latencies else None,
            max_abs_error=max(errors) if errors else None,
            accuracy=_share([d.correct for d in digits]),
            plain_accuracy=_share([d.plain_label == d.true_label for d in checked]),
            agreement=_share([d.plain_label == d.encrypted_label for d in checked]),
        )
