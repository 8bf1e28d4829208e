"""Compare the HE schemes live: the same held-out digits through each scheme's full encrypted path.

A ``ComparisonRun`` is a ``lib.batch_run.BatchRun`` with one part per scheme, each with its *own*
fresh session (``FreshSessions``: ``start``, ``predict``..., ``close``): the first request after
the key upload meets a cold key cache on the service, the rest a warm one. Nothing here touches
the sidebar's session. It advances one small step at a time (make one scheme's key and upload
it, or classify one digit), so the page shows progress after every step and stops between steps.

Per scheme it measures key generation time, public-key bytes, request and response bytes, server
time cold (first request) and warm (median of the rest), encrypt and decrypt time, end-to-end
time, the largest score difference from the plaintext model, and accuracy. ``lib.comparison_view``
turns that into the table and the charts, with each value's ratio to the seed scheme ``ei``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from lib.batch_parts import plan_schemes, step_weights
from lib.batch_run import BatchRun, FreshSessions, SessionFactory, SessionLike, StepReport
from lib.reference import PlaintextModel
from lib.session import EncryptedSession, Progress
from lib.settings import AppSettings

__all__ = ["ComparisonRun", "default_digits", "session_factory"]

_DEFAULT_DIGITS = {"ei": 5}
_DEFAULT_DIGITS_OTHERS = 100


def session_factory(settings: AppSettings) -> SessionFactory:
    """Fresh ``EncryptedSession``s of a given scheme with the app's settings (own key, own blob)."""

    def start(scheme: str, progress: Progress) -> SessionLike:
        return EncryptedSession.start(settings, progress, scheme=scheme)

    return start


def default_digits(scheme: str) -> int:
    """How many digits a scheme gets by default: few for the slow ``ei``, 100 for the others."""
    return _DEFAULT_DIGITS.get(scheme, _DEFAULT_DIGITS_OTHERS)


class ComparisonRun(BatchRun):
    """The plan and the results so far; advance with ``step`` until ``active`` is False."""

    AGAIN: ClassVar[str] = "run the comparison again"

    @classmethod
    def plan(
        cls, digits_per_scheme: Mapping[str, int], labels: np.ndarray, seed: int | None = None
    ) -> ComparisonRun:
        """A run over the first ``n`` digits of one label-balanced order, per scheme (in the given order).

        Every scheme starts at the same digit, so a scheme with fewer digits runs a subset of the
        others' digits.
        """
        return cls(plan_schemes(digits_per_scheme, labels, seed))

    def step(
        self,
        factory: SessionFactory,
        images: np.ndarray,
        labels: np.ndarray,
        model: PlaintextModel | None,
    ) -> StepReport | None:
        """Do the next small piece of work; None if there is none (finished or stopped).

        A failure ends that scheme's part with its message, and the run goes on with the next scheme.
        """
        return self.advance(FreshSessions(factory), images, labels, model)

    def progress(self) -> tuple[float, str]:
        """Fraction done (weighted by each step's expected time) and what is happening now."""
        current = self.current
        if current is None:
            return 1.0, "Done"
        if current.phase == "waiting":
            doing = self.step_message or "making a key pair and uploading its public keys"
            text = f"{current.name}: {doing}"
        else:
            text = f"{current.name}: digit {len(current.digits) + 1} of {current.planned}"
        return self.fraction(step_weights), text
