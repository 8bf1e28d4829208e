"""Encrypted accuracy: N gallery digits through this session's encrypted path, one at a time, stoppably.

An ``AccuracyRun`` is a ``lib.batch_run.BatchRun`` with one part: the scheme of this session's
key, lent for every step (``SessionInUse``), never closed here. The page classifies one digit
per step and checks for a stop between steps, so a run can be stopped, resumed, and continues
where it was if the page is left and opened again. The digits are balanced by label, so the
first N of any run cover every label evenly. A run never mixes schemes: if the sidebar's scheme
changes, it stops there.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from lib.batch_parts import DigitResult, SchemeRun, SchemeSummary, plan_schemes
from lib.batch_run import BatchRun, SessionInUse, SessionLike
from lib.reference import PlaintextModel

__all__ = ["AccuracyRun"]


class AccuracyRun(BatchRun):
    """The plan and the results so far; ``stopped`` is set by the Stop button."""

    AGAIN: ClassVar[str] = "press Resume"

    @classmethod
    def plan(cls, labels: np.ndarray, n: int, seed: int | None = None) -> AccuracyRun:
        """A run over ``n`` gallery digits (balanced by label), of whichever scheme the session has."""
        return cls(plan_schemes({"": int(n)}, labels, seed))

    @property
    def part(self) -> SchemeRun:
        """The run's one scheme part."""
        return self.schemes[0]

    @property
    def indices(self) -> list[int]:
        """The gallery indices of the run, in order."""
        return self.part.indices

    @property
    def items(self) -> list[DigitResult]:
        """The digits classified so far, in order."""
        return self.part.digits

    @property
    def planned(self) -> int:
        """How many digits the run covers."""
        return self.part.planned

    @property
    def errors(self) -> list[str]:
        """Why the run stopped early (empty if it did not); ``resume`` clears it."""
        return [self.part.error] if self.part.error else []

    @property
    def scheme(self) -> str | None:
        """The scheme of the run's first digit (None before it); a run never mixes schemes."""
        return self.part.name or None

    def next_index(self) -> int | None:
        """The next gallery index to evaluate, or None."""
        return self.indices[len(self.items)] if self.part.left else None

    def step(
        self, session: SessionLike, images: np.ndarray, labels: np.ndarray, model: PlaintextModel | None
    ) -> DigitResult | None:
        """Classify the next digit (encrypted, and in plaintext for agreement); None if none was."""
        report = self.advance(SessionInUse(session), images, labels, model)
        return report.digit if report is not None else None

    def summary(self) -> SchemeSummary:
        """Accuracy, agreement, largest error and latency percentiles over the digits done so far."""
        return self.part.summary()

    def progress(self, last: DigitResult | None = None) -> tuple[float, str]:
        """Fraction of digits done and the progress text ("3 of 20 digits · last: correct")."""
        done = len(self.items)
        text = f"{done} of {self.planned} digits"
        if last is not None:
            text += f" · last: {'correct' if last.correct else 'wrong'}"
        return done / self.planned, text
