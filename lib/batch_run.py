"""One engine for batch runs over gallery digits: Encrypted accuracy and the Schemes comparison.

A ``BatchRun`` is a plan (one ``lib.batch_parts.SchemeRun`` per scheme, each a list of gallery
digits) plus what has been measured so far. ``advance`` does one small piece of work: open a
scheme's session, or classify one digit, so a page can show progress after every step and stop
between steps. ``stop`` halts it after the step under way, ``resume`` goes on where it was,
``close`` ends it (closing the session it opened).

Where a scheme's session comes from is a ``SessionSource``:

- ``FreshSessions``: each scheme gets its *own* new session (own key pair, own blob), made in a
  step of its own and closed when that scheme's part ends (the Schemes comparison).
- ``SessionInUse``: the app session's key, lent for each step and never closed here; a run never
  mixes schemes, so a changed scheme ends the part (Encrypted accuracy).

A failure (a ``DemoError``, or anything unexpected, which is logged) ends that scheme's part with
a message for the page, and the run goes on with the next scheme.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from lib.batch_parts import DigitResult, SchemeRun, SchemeSummary
from lib.errors import DemoError
from lib.reference import PlaintextModel
from lib.session import Prediction, Progress, close_quietly

__all__ = [
    "BatchRun",
    "FreshSessions",
    "SchemeChanged",
    "SessionFactory",
    "SessionInUse",
    "SessionLike",
    "SessionSource",
    "StepReport",
]

log = logging.getLogger("encrypted_mnist.batch_run")

# --- where sessions come from -------------------------------------------------------------------


class SessionLike(Protocol):
    """What a run uses of an ``EncryptedSession``."""

    scheme_name: str
    key_bytes: int
    setup_timings_s: dict[str, float]

    def predict(self, pixels: np.ndarray) -> Prediction:
        """Encrypt, score remotely, decrypt."""
        ...

    def close(self) -> None:
        """Delete the key blob and close connections."""
        ...


class SessionSource(Protocol):
    """Where a scheme's part of a run gets its session."""

    @property
    def owns_sessions(self) -> bool:
        """True: ``open`` makes a new session, which the run closes when the part ends."""
        ...

    def open(self, scheme: str, progress: Progress) -> SessionLike:
        """A session of ``scheme`` ("" for any); a ``DemoError`` says why there is none."""
        ...


SessionFactory = Callable[[str, Progress], SessionLike]


@dataclass(frozen=True)
class FreshSessions:
    """A new session per scheme from ``factory`` (its own key pair and blob), closed by the run."""

    factory: SessionFactory
    owns_sessions: ClassVar[bool] = True

    def open(self, scheme: str, progress: Progress) -> SessionLike:
        """Make the key pair and upload its public keys (this can take seconds)."""
        return self.factory(scheme, progress)


class SchemeChanged(DemoError):
    """The session in use switched to another scheme during a run, which never mixes schemes."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(
            f"The scheme changed from {old} to {new} during the run, so it stopped here: "
            f"press Start for a new run with {new}."
        )


@dataclass(frozen=True)
class SessionInUse:
    """The session the app already has (this session's key): lent for a step, never closed here."""

    session: SessionLike
    owns_sessions: ClassVar[bool] = False

    def open(self, scheme: str, progress: Progress) -> SessionLike:
        """The session, if it is (still) of ``scheme``; SchemeChanged otherwise."""
        if scheme and self.session.scheme_name != scheme:
            raise SchemeChanged(scheme, self.session.scheme_name)
        return self.session


# --- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepReport:
    """What one step did, for the progress text: the scheme, a message, the digit if one was classified."""

    scheme: str
    message: str
    digit: DigitResult | None = None


class BatchRun:
    """The plan and the results so far; advance with ``advance`` until ``active`` is False."""

    AGAIN: ClassVar[str] = "try again"  # what to do after an unexpected failure, for its message

    def __init__(self, schemes: list[SchemeRun]) -> None:
        if not schemes:
            raise ValueError("a run needs at least one scheme")
        self.schemes = schemes
        self.stopped = False
        self._lock = threading.RLock()
        self._box: dict[str, Any] = {}  # the session the run opened for the scheme under way
        self._step_message = ""
        self._finalizer = weakref.finalize(self, close_quietly, self._box)
        self._finalizer.atexit = False

    # --- state ----------------------------------------------------------------------------------

    @property
    def current(self) -> SchemeRun | None:
        """The scheme under way or next, None when every scheme is done, failed or stopped."""
        return next((s for s in self.schemes if s.open), None)

    @property
    def finished(self) -> bool:
        """No scheme left to run (each one done, failed or stopped)."""
        return self.current is None

    @property
    def complete(self) -> bool:
        """Every planned digit of every scheme has been classified."""
        return all(s.left == 0 for s in self.schemes)

    @property
    def active(self) -> bool:
        """There is work left and nobody pressed Stop."""
        return not self.stopped and not self.finished

    def fraction(self, weights: Callable[[str], tuple[float, float]] | None = None) -> float:
        """Fraction done; ``weights(scheme)`` gives (key setup, per digit) seconds, else digits count.

        A scheme that ended (done, failed, stopped) counts as fully done.
        """
        total = done = 0.0
        for run in self.schemes:
            setup, per_digit = weights(run.name) if weights is not None else (0.0, 1.0)
            total += setup + per_digit * run.planned
            if not run.open:
                done += setup + per_digit * run.planned
            else:
                done += (setup if run.phase == "running" else 0.0) + per_digit * len(run.digits)
        return min(done / total, 1.0) if total > 0 else 1.0

    @property
    def step_message(self) -> str:
        """The latest progress message of a session being opened ("" if none)."""
        return self._step_message

    # --- work -----------------------------------------------------------------------------------

    def advance(
        self,
        sessions: SessionSource,
        images: np.ndarray,
        labels: np.ndarray,
        model: PlaintextModel | None,
    ) -> StepReport | None:
        """Do the next small piece of work; None if there is none (finished or stopped).

        With sessions the run owns, opening one (key generation and upload) is a step of its own.
        """
        with self._lock:
            run = self.current
            if run is None or self.stopped:
                return None
            session = self._box.get("session")
            if session is None:
                self._step_message = ""
                try:
                    session = sessions.open(run.name, self._key_progress)
                except DemoError as exc:
                    return self._fail(run, exc.message)
                except Exception as exc:
                    log.exception("making a %s key for a batch run failed", run.name)
                    return self._fail(run, self._unexpected("Making the key", exc), "failed")
                if not run.name:
                    run.name = session.scheme_name
                run.phase = "running"
                if sessions.owns_sessions:
                    self._box["session"] = session
                    timings = dict(session.setup_timings_s)
                    run.keygen_s, run.upload_s = timings.get("keygen"), timings.get("upload")
                    run.key_bytes = int(session.key_bytes)
                    return StepReport(run.name, "key ready")
            return self._classify_next(run, session, images, labels, model)

    def _key_progress(self, message: str, _fraction: float) -> None:
        self._step_message = message

    def _classify_next(
        self,
        run: SchemeRun,
        session: SessionLike,
        images: np.ndarray,
        labels: np.ndarray,
        model: PlaintextModel | None,
    ) -> StepReport:
        index = run.indices[len(run.digits)]
        pixels = images[index]
        try:
            prediction = session.predict(pixels)
        except DemoError as exc:
            return self._fail(run, exc.message)
        except Exception as exc:
            log.exception("a %s prediction in a batch run failed", run.name)
            return self._fail(run, self._unexpected("A prediction", exc), "failed")
        digit = DigitResult.measure(index, int(labels[index]), pixels, prediction, model, run.name)
        run.digits.append(digit)
        if run.left == 0:
            run.phase = "done"
            self._close_session(run)
            return StepReport(run.name, "done", digit)
        return StepReport(run.name, f"digit {len(run.digits)} of {run.planned}", digit)

    def _unexpected(self, what: str, exc: Exception) -> str:
        """The message for a failure that is not a DemoError (the traceback went to the log)."""
        return f"{what} failed unexpectedly ({type(exc).__name__}); see the app's log, then {self.AGAIN}."

    def _fail(self, run: SchemeRun, message: str, report: str = "") -> StepReport:
        """End ``run``'s part with ``message`` (its session, if the run opened one, is closed)."""
        run.phase, run.error = "failed", message
        self._close_session(run)
        return StepReport(run.name, report or f"failed: {message}")

    def fail(self, message: str) -> None:
        """End the scheme under way (or next) with ``message``, e.g. when there is no session to lend."""
        with self._lock:
            run = self.current
            if run is not None:
                self._fail(run, message)

    def _close_session(self, run: SchemeRun) -> None:
        """Close the session the run opened (deletes its key blob); a failure there is only a notice."""
        session = self._box.pop("session", None)
        if session is None:
            return
        try:
            session.close()
        except DemoError as exc:
            run.notice = f"Its public-key blob could not be deleted: {exc.message}"
        except Exception as exc:
            log.exception("closing a batch-run session failed")
            run.notice = (
                f"Its public-key blob could not be deleted ({type(exc).__name__}); see the app's log."
            )

    def stop(self) -> None:
        """Stop after the step under way; ``close`` then ends the open scheme, ``resume`` goes on."""
        self.stopped = True

    def resume(self) -> None:
        """Go on where the run was: failed and stopped schemes with digits left run again."""
        with self._lock:
            self.stopped = False
            for run in self.schemes:
                if run.phase in ("failed", "stopped") and run.left > 0:
                    run.phase, run.error = "waiting", ""  # its session was closed when it ended

    def close(self) -> None:
        """End the run now: close the open session (its key blob is deleted), mark its scheme stopped.

        After ``stop``, the schemes still waiting are marked stopped too.
        """
        with self._lock:
            run = self.current
            if run is not None and run.phase == "running":
                self._close_session(run)
                run.phase = "stopped"
            if self.stopped:
                for waiting in self.schemes:
                    if waiting.phase == "waiting":
                        waiting.phase = "stopped"

    def summaries(self) -> list[SchemeSummary]:
        """One summary per scheme, in plan order."""
        return [run.summary() for run in self.schemes]
