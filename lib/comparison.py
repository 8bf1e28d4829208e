"""Compare the HE schemes live: the same held-out digits through each scheme's full encrypted path.

A ``ComparisonRun`` is a plan (which schemes, how many gallery digits each) plus what has been
measured so far. It advances one small step at a time (make one scheme's key and upload it, or
classify one digit, or close the scheme's session), so the page can show progress after every
step and stop between steps. Each scheme gets its *own* fresh session (``start``, ``predict``...,
``close``): the first request after the key upload meets a cold key cache on the service, the
rest a warm one. Nothing here touches the sidebar's session.

Per scheme it reports key generation time, public-key bytes, request and response bytes, server
time cold (first request) and warm (median of the rest), encrypt and decrypt time, end-to-end
time, the largest score difference from the plaintext model, and accuracy; and each value's ratio
to the seed scheme ``ei``.
"""

from __future__ import annotations

import logging
import statistics
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from lib.accuracy import balanced_order
from lib.display import human_bytes
from lib.errors import DemoError
from lib.reference import PlaintextModel
from lib.session import EncryptedSession, Prediction, close_quietly
from lib.settings import AppSettings

__all__ = [
    "BASELINE",
    "METRICS",
    "ComparisonRun",
    "DigitResult",
    "Metric",
    "SchemeRun",
    "SchemeSummary",
    "StepReport",
    "chart_points",
    "default_digits",
    "estimate_seconds",
    "format_metric",
    "format_ratio",
    "format_seconds",
    "metric_rows",
    "ratio",
    "session_factory",
]

log = logging.getLogger("encrypted_mnist.comparison")

Progress = Callable[[str, float], None]

BASELINE = "ei"  # the seed scheme: every ratio is "this scheme / ei"

# Rough seconds for planning only (estimates on the page, the progress bar's weights): key setup
# and one prediction end to end, on a 2-core machine. Never asserted anywhere.
_ESTIMATES_S: dict[str, tuple[float, float]] = {"ei": (3.0, 1.5), "ckks": (0.5, 0.05), "bfv": (0.3, 0.03)}
_UNKNOWN_ESTIMATE_S = (1.0, 0.5)
_DEFAULT_DIGITS = {"ei": 5}
_DEFAULT_DIGITS_OTHERS = 100


class SessionLike(Protocol):
    """What a comparison uses of an ``EncryptedSession``."""

    key_bytes: int
    setup_timings_s: dict[str, float]

    def predict(self, pixels: np.ndarray) -> Prediction:
        """Encrypt, score remotely, decrypt."""
        ...

    def close(self) -> None:
        """Delete the key blob and close connections."""
        ...


SessionFactory = Callable[[str, Progress], SessionLike]


def session_factory(settings: AppSettings) -> SessionFactory:
    """Fresh ``EncryptedSession``s of a given scheme with the app's settings (own key, own blob)."""

    def start(scheme: str, progress: Progress) -> SessionLike:
        return EncryptedSession.start(settings, progress, scheme=scheme)

    return start


def default_digits(scheme: str) -> int:
    """How many digits a scheme gets by default: few for the slow ``ei``, 100 for the others."""
    return _DEFAULT_DIGITS.get(scheme, _DEFAULT_DIGITS_OTHERS)


def estimate_seconds(scheme: str, digits: int) -> float:
    """A rough time for one scheme's part of a run (key setup plus ``digits`` predictions)."""
    setup, per_digit = _ESTIMATES_S.get(scheme, _UNKNOWN_ESTIMATE_S)
    return setup + digits * per_digit


# --- what gets measured ------------------------------------------------------------------------


def _stage_seconds(prediction: Prediction, name: str) -> float:
    return sum(s.seconds for s in prediction.stages if s.name == name)


@dataclass(frozen=True)
class DigitResult:
    """One digit through one scheme."""

    index: int
    true_label: int
    label: int
    plain_label: int | None
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
    ) -> DigitResult:
        """The numbers of one prediction, with the plaintext model's scores for the same pixels."""
        plain_label = max_abs_error = None
        if model is not None:
            plain = model.scores(pixels)
            plain_label = int(np.argmax(plain))
            max_abs_error = float(np.max(np.abs(plain - np.asarray(prediction.scores, dtype=np.float64))))
        sizes = prediction.sizes
        return cls(
            index=index,
            true_label=true_label,
            label=prediction.label,
            plain_label=plain_label,
            max_abs_error=max_abs_error,
            key_cache=prediction.key_cache,
            total_s=prediction.total_s,
            encrypt_s=_stage_seconds(prediction, "encrypt"),
            decrypt_s=_stage_seconds(prediction, "decrypt"),
            server_s=sum(s.seconds for s in prediction.stages if s.source == "server"),
            compute_s=_stage_seconds(prediction, "compute"),
            request_bytes=int(sizes.get("request_bytes", 0)),
            response_bytes=int(sizes.get("response_bytes", 0)),
            ciphertext_bytes=int(sizes.get("ciphertext_bytes", 0)),
            result_bytes=int(sizes.get("result_bytes", 0)),
        )


SchemePhase = Literal["waiting", "running", "done", "failed", "stopped"]


@dataclass(frozen=True)
class SchemeSummary:
    """One scheme's numbers for the table and the charts (None: not measured)."""

    name: str
    phase: SchemePhase
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
    cold_cache: str | None  # the first request's key cache: "miss" expected
    server_cold_s: float | None
    server_warm_s: float | None
    compute_warm_s: float | None
    encrypt_s: float | None
    decrypt_s: float | None
    e2e_cold_s: float | None
    e2e_warm_s: float | None
    max_abs_error: float | None
    accuracy: float | None
    plain_accuracy: float | None  # the plaintext model on the same digits
    agreement: float | None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class SchemeRun:
    """One scheme's part of a run: its digits, its key setup, and its results so far."""

    name: str
    indices: list[int]
    phase: SchemePhase = "waiting"
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
    def open(self) -> bool:
        """Still to do (waiting) or under way (running)."""
        return self.phase in ("waiting", "running")

    def summary(self) -> SchemeSummary:
        """Medians, cold versus warm, error and accuracy over the digits done so far."""
        digits = self.digits
        cold, warm = (digits[0], digits[1:]) if digits else (None, [])
        errors = [d.max_abs_error for d in digits if d.max_abs_error is not None]
        plain = [d for d in digits if d.plain_label is not None]
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
            max_abs_error=max(errors) if errors else None,
            accuracy=sum(d.label == d.true_label for d in digits) / len(digits) if digits else None,
            plain_accuracy=sum(d.plain_label == d.true_label for d in plain) / len(plain) if plain else None,
            agreement=sum(d.plain_label == d.label for d in plain) / len(plain) if plain else None,
        )


def _unexpected(what: str, exc: Exception) -> str:
    kind = type(exc).__name__
    return f"{what} failed unexpectedly ({kind}); see the app's log, then run the comparison again."


@dataclass(frozen=True)
class StepReport:
    """What one ``step`` did, for the progress text."""

    scheme: str
    message: str


class ComparisonRun:
    """The plan and the results so far; advance with ``step`` until ``active`` is False."""

    def __init__(self, schemes: list[SchemeRun]) -> None:
        if not schemes:
            raise ValueError("a comparison needs at least one scheme")
        self.schemes = schemes
        self.stopped = False
        self._lock = threading.RLock()
        self._box: dict[str, Any] = {}  # the open session of the scheme under way
        self._step_message = ""
        self._step_fraction = 0.0
        self._finalizer = weakref.finalize(self, close_quietly, self._box)
        self._finalizer.atexit = False

    @classmethod
    def plan(
        cls, digits_per_scheme: Mapping[str, int], labels: np.ndarray, seed: int | None = None
    ) -> ComparisonRun:
        """A run over the first ``n`` digits of one label-balanced order, per scheme (in the given order).

        Every scheme starts at the same digit, so a scheme with fewer digits runs a subset of the
        others' digits.
        """
        order = balanced_order(np.asarray(labels), np.random.default_rng(seed))
        runs = []
        for name, n in digits_per_scheme.items():
            if not 1 <= int(n) <= len(order):
                raise ValueError(f"{name}: the number of digits must be between 1 and {len(order)}, got {n}")
            runs.append(SchemeRun(name=name, indices=order[: int(n)]))
        return cls(runs)

    # --- state ----------------------------------------------------------------------------------

    @property
    def current(self) -> SchemeRun | None:
        """The scheme under way or next, None when every scheme is done."""
        return next((s for s in self.schemes if s.open), None)

    @property
    def finished(self) -> bool:
        """No scheme left to run (each one done, failed or stopped)."""
        return self.current is None

    @property
    def active(self) -> bool:
        """There is work left and nobody pressed Stop."""
        return not self.stopped and not self.finished

    def _weights(self, run: SchemeRun) -> tuple[float, float]:
        return _ESTIMATES_S.get(run.name, _UNKNOWN_ESTIMATE_S)

    def progress(self) -> tuple[float, str]:
        """Fraction done (weighted by each step's expected time) and what is happening now."""
        total = done = 0.0
        for run in self.schemes:
            setup, per_digit = self._weights(run)
            total += setup + per_digit * run.planned
            if run.phase in ("done", "failed", "stopped"):
                done += setup + per_digit * run.planned
            elif run.phase == "running":
                done += setup + per_digit * len(run.digits)
        fraction = min(done / total, 1.0) if total > 0 else 1.0
        current = self.current
        if current is None:
            return 1.0, "Done"
        if current.phase == "waiting":
            text = f"{current.name}: making a key pair and uploading its public keys"
            if self._step_message:
                text = f"{current.name}: {self._step_message}"
        else:
            text = f"{current.name}: digit {len(current.digits) + 1} of {current.planned}"
        return fraction, text

    # --- work -----------------------------------------------------------------------------------

    def _key_progress(self, message: str, fraction: float) -> None:
        self._step_message, self._step_fraction = message, fraction

    def step(
        self,
        factory: SessionFactory,
        images: np.ndarray,
        labels: np.ndarray,
        model: PlaintextModel | None,
    ) -> StepReport | None:
        """Do the next small piece of work; None if there is none (finished or stopped).

        A failure (a ``DemoError``) ends that scheme's part with its message and the run goes on
        with the next scheme.
        """
        with self._lock:
            run = self.current
            if run is None or self.stopped:
                return None
            if run.phase == "waiting":
                return self._start_scheme(run, factory)
            return self._classify_next(run, images, labels, model)

    def _start_scheme(self, run: SchemeRun, factory: SessionFactory) -> StepReport:
        self._step_message = ""
        try:
            session = factory(run.name, self._key_progress)
        except DemoError as exc:
            run.phase, run.error = "failed", exc.message
            return StepReport(run.name, f"failed: {exc.message}")
        except Exception as exc:
            log.exception("making a %s key for the comparison failed", run.name)
            run.phase, run.error = "failed", _unexpected("Making the key", exc)
            return StepReport(run.name, "failed")
        self._box["session"] = session
        timings = dict(session.setup_timings_s)
        run.keygen_s = timings.get("keygen")
        run.upload_s = timings.get("upload")
        run.key_bytes = int(session.key_bytes)
        run.phase = "running"
        return StepReport(run.name, "key ready")

    def _classify_next(
        self, run: SchemeRun, images: np.ndarray, labels: np.ndarray, model: PlaintextModel | None
    ) -> StepReport:
        session = self._box.get("session")
        if session is None:  # e.g. closed by ``close`` and then resumed: not supported, end it cleanly
            run.phase, run.error = "failed", "The scheme's session was closed before it finished."
            return StepReport(run.name, "failed")
        index = run.indices[len(run.digits)]
        pixels = images[index]
        try:
            prediction = session.predict(pixels)
        except DemoError as exc:
            run.phase, run.error = "failed", exc.message
            self._close_session(run)
            return StepReport(run.name, f"failed: {exc.message}")
        except Exception as exc:
            log.exception("a %s prediction in the comparison failed", run.name)
            run.phase, run.error = "failed", _unexpected("A prediction", exc)
            self._close_session(run)
            return StepReport(run.name, "failed")
        run.digits.append(DigitResult.measure(index, int(labels[index]), pixels, prediction, model))
        if len(run.digits) >= run.planned:
            run.phase = "done"
            self._close_session(run)
            return StepReport(run.name, "done")
        return StepReport(run.name, f"digit {len(run.digits)} of {run.planned}")

    def _close_session(self, run: SchemeRun) -> None:
        """Close the open session (deletes its key blob); a failure there is only a notice."""
        session = self._box.pop("session", None)
        if session is None:
            return
        try:
            session.close()
        except DemoError as exc:
            run.notice = f"Its public-key blob could not be deleted: {exc.message}"
        except Exception as exc:
            log.exception("closing a comparison session failed")
            run.notice = (
                f"Its public-key blob could not be deleted ({type(exc).__name__}); see the app's log."
            )

    def stop(self) -> None:
        """Stop after the step under way; ``close`` then ends the open scheme."""
        self.stopped = True

    def close(self) -> None:
        """End the run now: close the open session (its key blob is deleted), mark its scheme stopped."""
        with self._lock:
            run = self.current
            if run is not None and run.phase == "running":
                self._close_session(run)
                run.phase = "stopped"
            for waiting in self.schemes:
                if waiting.phase == "waiting" and self.stopped:
                    waiting.phase = "stopped"

    def summaries(self) -> list[SchemeSummary]:
        """One summary per scheme, in plan order."""
        return [run.summary() for run in self.schemes]

    def latency_rows(self) -> list[dict[str, Any]]:
        """Every digit's end-to-end time: scheme, seconds, key cache ("miss" for the first)."""
        return [
            {"scheme": run.name, "seconds": d.total_s, "cache": d.key_cache}
            for run in self.schemes
            for d in run.digits
        ]


# --- presenting the numbers --------------------------------------------------------------------

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
        "server_cold_s",
        "Server time, key cache cold",
        "seconds",
        True,
        "The first request after the key upload: the service downloads and loads the public keys.",
    ),
    Metric(
        "server_warm_s",
        "Server time, key cache warm",
        "seconds",
        True,
        "Median of the other requests: parse and checks plus the homomorphic compute.",
    ),
    Metric("response_bytes", "Response body", "bytes", True, "JSON with the encrypted scores, per digit."),
    Metric("encrypt_s", "Encrypt (app)", "seconds", True, "Median per digit."),
    Metric("decrypt_s", "Decrypt (app)", "seconds", True, "Median per digit."),
    Metric(
        "e2e_warm_s",
        "End to end, warm",
        "seconds",
        True,
        "Median per digit of encrypt, request, server, response and decrypt, key cache warm.",
    ),
    Metric(
        "max_abs_error",
        "Max |error| vs plaintext",
        "error",
        True,
        "Largest difference between a decrypted score and the plaintext model's score, over all digits.",
    ),
    Metric("accuracy", "Accuracy", "fraction", False, "Predictions equal to the true label."),
)


def format_seconds(seconds: float) -> str:
    """Seconds with a sensible unit down to fractions of a millisecond: '0.42 ms', '4.2 ms', '1.23 s'."""
    if seconds < 0.001:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 0.01:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 1.0:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def format_metric(metric: Metric, value: float | None) -> str:
    """A value for the table, in the metric's unit; '–' when not measured."""
    if value is None:
        return "–"
    if metric.unit == "seconds":
        return format_seconds(float(value))
    if metric.unit == "bytes":
        return human_bytes(value)
    if metric.unit == "error":
        return f"{value:.1e}"
    return f"{value:.1%}"


def ratio(summaries: Sequence[SchemeSummary], metric: Metric, scheme: str) -> float | None:
    """``scheme``'s value over ``ei``'s (None if either is missing or ``ei`` is 0)."""
    by_name = {s.name: s for s in summaries}
    base, other = by_name.get(BASELINE), by_name.get(scheme)
    if base is None or other is None:
        return None
    a, b = getattr(other, metric.key), getattr(base, metric.key)
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def format_ratio(value: float | None) -> str:
    """A ratio to ei in words: '156× less', '1.0× (same)', '38× more'; '–' when there is no ratio."""
    if value is None:
        return "–"
    if value <= 0:
        return "0×"
    if 0.95 <= value <= 1.05:
        return "1.0× (same)"
    factor = value if value > 1 else 1 / value
    amount = f"{factor:,.0f}×" if factor >= 10 else f"{factor:.1f}×"
    return f"{amount} {'more' if value > 1 else 'less'}"


def metric_rows(summaries: Sequence[SchemeSummary]) -> list[dict[str, str]]:
    """The comparison table: one row per metric, a column per scheme, then each one's ratio to ei."""
    names = [s.name for s in summaries]
    with_ratio = BASELINE in names
    rows = []
    for metric in METRICS:
        row = {"metric": metric.label}
        for summary in summaries:
            row[summary.name] = format_metric(metric, getattr(summary, metric.key))
        if with_ratio:
            for name in names:
                if name != BASELINE:
                    row[f"{name} / {BASELINE}"] = format_ratio(ratio(summaries, metric, name))
        rows.append(row)
    digits_row = {"metric": "Digits classified"}
    for summary in summaries:
        digits_row[summary.name] = f"{summary.done} of {summary.planned}"
    if with_ratio:
        for name in names:
            if name != BASELINE:
                digits_row[f"{name} / {BASELINE}"] = ""
    return [digits_row, *rows]


def chart_points(summaries: Sequence[SchemeSummary], metric: Metric) -> list[dict[str, Any]]:
    """One bar per scheme with a value: scheme, value, its label, and the ratio to ei as text."""
    points = []
    for summary in summaries:
        value = getattr(summary, metric.key)
        if value is None:
            continue
        r = ratio(summaries, metric, summary.name) if summary.name != BASELINE else None
        label = format_metric(metric, value)
        if r is not None:
            label += f" ({format_ratio(r)} than ei)"
        points.append({"scheme": summary.name, "value": float(value), "label": label})
    return points
