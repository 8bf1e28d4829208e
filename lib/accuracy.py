"""Encrypted accuracy: run N gallery digits through the encrypted path, one at a time, stoppably.

An ``AccuracyRun`` is a plan (which gallery digits, in which order) plus the results so far. The
page evaluates one digit per step and checks for a stop between steps, so a run can be stopped,
and continues where it was if the page is left and opened again. The order is balanced by label
(round robin over shuffled classes), so the first N digits of any run cover every label evenly.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from lib.reference import PlaintextModel
from lib.session import EncryptedSession

__all__ = ["AccuracyItem", "AccuracyRun", "AccuracySummary", "balanced_order"]


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> list[int]:
    """All gallery indices, interleaved by label: one shuffled digit of each class, then the next..."""
    per_class = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    order: list[int] = []
    for round_ in range(max(len(p) for p in per_class)):
        classes = rng.permutation(len(per_class))
        order += [int(per_class[c][round_]) for c in classes if round_ < len(per_class[c])]
    return order


@dataclass(frozen=True)
class AccuracyItem:
    """One digit of a run."""

    index: int
    true_label: int
    encrypted_label: int
    plain_label: int | None
    max_abs_error: float | None
    total_s: float
    compute_s: float

    @property
    def correct(self) -> bool:
        """The encrypted prediction is the true label."""
        return self.encrypted_label == self.true_label

    @property
    def agrees(self) -> bool | None:
        """The encrypted and plaintext predictions are the same (None without a plaintext model)."""
        return None if self.plain_label is None else self.encrypted_label == self.plain_label


@dataclass(frozen=True)
class AccuracySummary:
    """What the page reports."""

    done: int
    planned: int
    accuracy: float | None
    agreement: float | None  # None without a plaintext model
    max_abs_error: float | None
    latency_p50_s: float | None
    latency_p90_s: float | None
    latency_max_s: float | None


@dataclass
class AccuracyRun:
    """The plan and the results so far; ``stopped`` is set by the Stop button."""

    indices: list[int]
    items: list[AccuracyItem] = field(default_factory=list)
    stopped: bool = False
    errors: list[str] = field(default_factory=list)
    scheme: str | None = None
    """The scheme of the run's first digit; a run never mixes schemes."""

    @classmethod
    def plan(cls, labels: np.ndarray, n: int, seed: int | None = None) -> AccuracyRun:
        """A run over ``n`` gallery digits (balanced by label)."""
        order = balanced_order(np.asarray(labels), np.random.default_rng(seed))
        if not 1 <= n <= len(order):
            raise ValueError(f"n must be between 1 and {len(order)}, got {n}")
        return cls(indices=order[:n])

    @property
    def planned(self) -> int:
        """How many digits the run covers."""
        return len(self.indices)

    @property
    def finished(self) -> bool:
        """Every planned digit has been evaluated."""
        return len(self.items) >= len(self.indices)

    @property
    def active(self) -> bool:
        """Not finished, not stopped, and no error so far."""
        return not self.finished and not self.stopped and not self.errors

    def next_index(self) -> int | None:
        """The next gallery index to evaluate, or None."""
        return None if self.finished else self.indices[len(self.items)]

    def step(
        self, session: EncryptedSession, images: np.ndarray, labels: np.ndarray, model: PlaintextModel | None
    ) -> AccuracyItem | None:
        """Evaluate the next digit (encrypted, and in plaintext for agreement); None if done."""
        index = self.next_index()
        if index is None:
            return None
        scheme = getattr(session, "scheme_name", None)
        if self.scheme is None:
            self.scheme = scheme
        elif scheme != self.scheme:
            self.errors.append(
                f"The scheme changed from {self.scheme} to {scheme} during the run, so it stopped here: "
                f"press Start for a new run with {scheme}."
            )
            return None
        pixels = images[index]
        prediction = session.predict(pixels)
        plain_label = max_abs_error = None
        if model is not None:
            plain = model.scores(pixels)
            plain_label = int(np.argmax(plain))
            max_abs_error = float(np.max(np.abs(plain - prediction.scores)))
        compute_s = sum(s.seconds for s in prediction.stages if s.name == "compute")
        item = AccuracyItem(
            index=index,
            true_label=int(labels[index]),
            encrypted_label=prediction.label,
            plain_label=plain_label,
            max_abs_error=max_abs_error,
            total_s=prediction.total_s,
            compute_s=compute_s,
        )
        self.items.append(item)
        return item

    def summary(self) -> AccuracySummary:
        """Accuracy, agreement and latency percentiles over the digits done so far."""
        items = self.items
        if not items:
            return AccuracySummary(0, self.planned, None, None, None, None, None, None)
        latencies = sorted(i.total_s for i in items)
        agreeing = [i.agrees for i in items if i.agrees is not None]
        errors = [i.max_abs_error for i in items if i.max_abs_error is not None]
        return AccuracySummary(
            done=len(items),
            planned=self.planned,
            accuracy=sum(i.correct for i in items) / len(items),
            agreement=sum(agreeing) / len(agreeing) if agreeing else None,
            max_abs_error=max(errors) if errors else None,
            latency_p50_s=statistics.median(latencies),
            latency_p90_s=_percentile(latencies, 0.9),
            latency_max_s=latencies[-1],
        )


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
