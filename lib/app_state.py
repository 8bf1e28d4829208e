"""What every page of the app shares for one browser session: settings, health, key, last result.

The pages keep one ``AppState`` in Streamlit's session state (see ``ui/state.py``); everything
here is plain Python so it can be tested without Streamlit:

- ``SessionKey`` makes the session's key pair and uploads its public keys on a background thread
  as soon as the session starts, reporting progress, so the first prediction does not sit for two
  seconds without feedback. It also rotates the key ("new key") and switches to another HE scheme
  (a new session of that scheme, then the old key blob is deleted) the same way.
- ``check_health`` asks blob storage and the scoring service whether they answer (about two
  seconds at most, both at once). ``AppState.refresh`` runs it on every rerun and, if key setup
  failed because storage was down, starts it again once storage answers.
- ``AppState.classify`` encrypts one 28x28 digit, has it scored, decrypts, and runs the plaintext
  reference check (demo and QA only).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from lib.blob_store import PublicKeyStore
from lib.errors import DemoError, InvalidInput, StorageUnavailable
from lib.gallery import load_gallery
from lib.preprocess import EMPTY_MESSAGE, to_mnist
from lib.reference import ReferenceCheck, ReferenceUnavailable, load_reference_model, reference_check
from lib.schemes import DEFAULT_SCHEME, SCHEME_INFO, SCHEME_NAMES, descriptor
from lib.scoring_client import ScoringClient
from lib.session import EncryptedSession, Prediction, close_quietly
from lib.settings import AppSettings

__all__ = [
    "HE_STANDARD_MAX_BITS_128",
    "START_STACK",
    "AppState",
    "Classified",
    "DigitInput",
    "Health",
    "KeyStatus",
    "SessionKey",
    "check_health",
    "error_source",
    "gallery",
    "pick_gallery_index",
    "scheme_title",
    "security_summary",
]

log = logging.getLogger("encrypted_mnist.app")

Progress = Callable[[str, float], None]
Starter = Callable[[AppSettings, Progress, str], EncryptedSession]  # settings, progress, scheme name

START_STACK = (
    "`.venv/bin/python -m scripts.local_stack up` (or run the whole demo with `scripts/run_demo.sh`)"
)
_AUTO_RETRY_EVERY_S = 3.0
_KEY_WAIT_TIMEOUT_S = 180.0
_DEBOUNCE_S = 2.0


# --- health ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """Whether blob storage and the scoring service answered, and where they are."""

    storage_ok: bool
    scoring_ok: bool
    storage_endpoint: str
    scoring_url: str

    @property
    def all_ok(self) -> bool:
        """Both answered."""
        return self.storage_ok and self.scoring_ok

    def problems(self) -> list[str]:
        """One message per service that is down, each saying what to do."""
        messages = []
        if not self.storage_ok:
            messages.append(
                f"Blob storage at {self.storage_endpoint} is not reachable, so this session's public keys "
                f"cannot be uploaded. Start it with {START_STACK}, or point BLOB_CONNECTION_STRING at a "
                "storage account. The app notices by itself when it is back."
            )
        if not self.scoring_ok:
            messages.append(
                f"The scoring service at {self.scoring_url} is not reachable, so nothing can be classified. "
                f"Start it with {START_STACK}, or check SCORING_URL. The app notices by itself when it is back."
            )
        return messages


def check_health(store: PublicKeyStore, scorer: ScoringClient) -> Health:
    """Probe both services at once; each probe gives up after about two seconds."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="health") as pool:
        storage = pool.submit(store.is_reachable)
        scoring = pool.submit(scorer.is_healthy)
        return Health(
            storage_ok=storage.result(),
            scoring_ok=scoring.result(),
            storage_endpoint=store.endpoint,
            scoring_url=scorer.url,
        )


# --- the session key ---------------------------------------------------------------------------

KeyPhase = Literal["starting", "ready", "rotating", "switching", "failed"]


def scheme_title(name: str) -> str:
    """The scheme's display name, e.g. "ckks: SEAL 4 CKKS"; the bare name for an unknown scheme."""
    info = SCHEME_INFO.get(name)
    return info.title if info is not None else name


def error_source(name: str) -> str:
    """Where a scheme's difference from the plaintext scores comes from, for help texts."""
    info = SCHEME_INFO.get(name)
    return info.error_source if info is not None else "encryption noise and rounding"


# The Homomorphic Encryption Standard's largest coefficient modulus (bits) for 128-bit classical
# security, per polynomial modulus degree N; SEAL refuses larger moduli at context creation.
HE_STANDARD_MAX_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def security_summary(name: str) -> str:
    """One markdown sentence: N, the coefficient modulus, and why that is 128-bit security."""
    params = descriptor(name)["params"]
    n = int(params["poly_modulus_degree"])
    bits = [int(b) for b in params["coeff_modulus_bits"]]
    bound = HE_STANDARD_MAX_BITS_128.get(n)
    within = (
        f"within the **128-bit security** bound of the Homomorphic Encryption Standard (at most {bound} bits "
        f"for N = {n:,})"
        if bound is not None
        else "at **128-bit security**"
    )
    return (
        f"Polynomial modulus degree **N = {n:,}** and a **{sum(bits)}-bit** coefficient modulus "
        f"({' + '.join(str(b) for b in bits)} bits): {within}. SEAL enforces it: it refuses to create a "
        "context with parameters below 128-bit security."
    )


def _problem_of(action: Callable[[], object], what: str) -> str:
    """Run ``action``; "" if it worked, else a message for the user (unexpected errors are logged)."""
    try:
        action()
    except DemoError as exc:
        return exc.message
    except Exception as exc:
        log.exception("%s failed", what)
        return f"{what} failed unexpectedly ({type(exc).__name__}); see the app's log."
    return ""


def _start_session(settings: AppSettings, progress: Progress, scheme: str) -> EncryptedSession:
    return EncryptedSession.start(settings, progress, scheme=scheme)


@dataclass(frozen=True)
class KeyStatus:
    """A snapshot of the session key for display; never holds key material."""

    phase: KeyPhase
    message: str  # the current step while busy; what went wrong when failed
    fraction: float
    key_id: str = ""
    key_bytes: int = 0
    key_blob_url: str = ""  # without the SAS
    sas_expires_at: datetime | None = None
    setup_timings_s: dict[str, float] = field(default_factory=dict)
    notice: str = ""  # a problem that left the current key working, e.g. a failed rotation
    failed_on_storage: bool = False
    elapsed_s: float = 0.0  # since the key started being made (while busy)
    scheme: str = ""  # the scheme of the current key ("" before the first key)
    target_scheme: str = ""  # the scheme chosen: the current key's, or the one being switched to
    scheme_descriptor: dict[str, Any] = field(default_factory=dict)  # {name, version, params}

    @property
    def busy(self) -> bool:
        """A key is being made (first key, a new one, or one for another scheme)."""
        return self.phase in ("starting", "rotating", "switching")

    @property
    def usable(self) -> bool:
        """A key is ready now."""
        return self.phase == "ready"


class SessionKey:
    """This browser session's ``EncryptedSession``, made, rotated and switched on a background thread.

    ``use_scheme`` chooses the scheme. If a key is being made when it is called, the choice is
    followed as soon as that is done, so quick changes of mind end on the last scheme chosen.
    """

    def __init__(
        self, settings: AppSettings, starter: Starter | None = None, scheme: str = DEFAULT_SCHEME
    ) -> None:
        self.settings = settings
        self._starter: Starter = starter or _start_session
        self._target = scheme
        self._lock = threading.Lock()
        self._box: dict[str, EncryptedSession | None] = {"session": None}
        self._thread: threading.Thread | None = None
        self._phase: KeyPhase = "starting"
        self._message = "Waiting to start"
        self._fraction = 0.0
        self._notice = ""
        self._failed_on_storage = False
        self._closed = False
        self._started = False
        self._busy_since = 0.0
        # When the browser session ends and Streamlit drops its state, delete the key blob.
        self._finalizer = weakref.finalize(self, close_quietly, self._box)
        self._finalizer.atexit = False

    @property
    def started(self) -> bool:
        """``start`` has been called at least once."""
        return self._started

    @property
    def scheme(self) -> str:
        """The scheme chosen (the current key's, or the one a key is being made for)."""
        with self._lock:
            return self._target

    def _progress(self, message: str, fraction: float) -> None:
        with self._lock:
            self._message = message
            self._fraction = min(max(float(fraction), 0.0), 1.0)

    def _spawn(self, target: Callable[[], None], phase: KeyPhase, message: str) -> None:
        """Run ``target`` on a new thread in ``phase``; the caller holds the lock."""
        self._phase, self._message, self._fraction = phase, message, 0.0
        self._busy_since = time.monotonic()
        self._thread = threading.Thread(target=target, name=f"session-key-{phase}", daemon=True)
        self._thread.start()

    def start(self) -> None:
        """Make the first key in the background (again, after a failure); no-op if busy or ready."""
        with self._lock:
            if self._closed or self._phase in ("ready", "rotating") or self._thread_alive():
                return
            self._started = True
            self._notice = ""
            self._failed_on_storage = False
            self._spawn(self._run_start, "starting", "Starting")

    def rotate(self) -> None:
        """Switch to a new key pair in the background; the old public-key blob is deleted after."""
        with self._lock:
            if self._closed or self._phase != "ready" or self._thread_alive():
                return
            self._notice = ""
            self._spawn(self._run_rotate, "rotating", "Starting")

    def use_scheme(self, scheme: str) -> None:
        """Choose the scheme: a key for it is made in the background (now, or once the key being
        made is done); the old key's public-key blob is deleted once the new key is up."""
        with self._lock:
            if self._closed:
                return
            self._target = scheme
            if self._thread_alive() or not self._started:
                return  # the running worker follows the choice when it is done; or ``start`` will
            if self._phase == "failed":
                self._notice = ""
                self._failed_on_storage = False
                self._spawn(self._run_start, "starting", "Starting")
            else:
                self._follow_target_locked()

    def _current_scheme_locked(self) -> str:
        session = self._box["session"]
        return session.scheme_name if session is not None else ""

    def _follow_target_locked(self) -> None:
        """If the chosen scheme is not the current key's, start switching (the caller holds the lock)."""
        if self._closed or self._phase != "ready" or self._box["session"] is None:
            return
        if self._current_scheme_locked() != self._target:
            scheme = self._target
            self._spawn(lambda: self._run_switch(scheme), "switching", f"Switching to {scheme_title(scheme)}")

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run_start(self) -> None:
        with self._lock:
            scheme = self._target
        try:
            session = self._starter(self.settings, self._progress, scheme)
        except DemoError as exc:
            self._fail(exc.message, isinstance(exc, StorageUnavailable))
            return
        except Exception as exc:
            log.exception("session key setup failed")
            self._fail(
                f"Making the session key failed unexpectedly ({type(exc).__name__}); see the app's log.",
                False,
            )
            return
        with self._lock:
            if self._closed:
                closed_early = True
            else:
                closed_early = False
                self._box["session"] = session
                self._phase, self._message, self._fraction = "ready", "Ready", 1.0
                self._follow_target_locked()  # the scheme was changed while this key was made
        if closed_early:
            close_quietly({"session": session})

    def _run_switch(self, scheme: str) -> None:
        """Make a session of ``scheme``; once it is up, use it and close the old one (deleting its blob)."""
        old = self._box["session"]
        assert old is not None
        made: dict[str, EncryptedSession] = {}

        def start() -> None:
            made["session"] = self._starter(self.settings, self._progress, scheme)

        problem = _problem_of(start, "Switching the scheme")
        if problem:
            with self._lock:
                if self._target == scheme:
                    self._target = old.scheme_name  # the choice shown goes back to what is in use
            self._back_to_ready(
                f"Still using {scheme_title(old.scheme_name)}: could not switch to {scheme_title(scheme)}: {problem}"
            )
            return
        session = made["session"]
        with self._lock:
            closed_early = self._closed
            if not closed_early:
                self._box["session"] = session
        if closed_early:
            close_quietly({"session": session})
            return
        problem = _problem_of(old.close, "Deleting the old key blob")  # close() deletes the old blob
        self._back_to_ready(
            f"Now using {scheme_title(scheme)}, but the old public-key blob could not be deleted: {problem}"
            if problem
            else ""
        )

    def _run_rotate(self) -> None:
        session = self._box["session"]
        assert session is not None
        old_key_id = session.key_id
        problem = _problem_of(lambda: session.rotate_key(self._progress), "Key rotation")
        if not problem:
            notice = ""
        elif session.key_id != old_key_id:
            # The new key is up; only deleting the old public-key blob failed.
            notice = f"New key in use, but the old public-key blob could not be deleted: {problem}"
        else:
            notice = f"No new key (the current key still works): {problem}"
        self._back_to_ready(notice)

    def _back_to_ready(self, notice: str) -> None:
        """Key work is over: show ``notice`` (may be empty) and follow a scheme chosen meanwhile."""
        with self._lock:
            self._notice = notice
            self._phase, self._message, self._fraction = "ready", "Ready", 1.0
            self._follow_target_locked()

    def _fail(self, message: str, storage: bool) -> None:
        with self._lock:
            self._phase, self._message, self._fraction = "failed", message, 0.0
            self._failed_on_storage = storage

    def status(self) -> KeyStatus:
        """A consistent snapshot for display."""
        with self._lock:
            session = self._box["session"]
            details: dict[str, Any] = {}
            if session is not None:  # also while rotating: the current key still works
                details = {
                    "key_id": session.key_id,
                    "key_bytes": session.key_bytes,
                    "key_blob_url": session.key_blob_url,
                    "sas_expires_at": session.sas_expires_at,
                    "setup_timings_s": dict(session.setup_timings_s),
                    "scheme": session.scheme_name,
                    "scheme_descriptor": dict(session.scheme),
                }
            return KeyStatus(
                phase=self._phase,
                message=self._message,
                fraction=self._fraction,
                notice=self._notice,
                failed_on_storage=self._failed_on_storage,
                elapsed_s=time.monotonic() - self._busy_since
                if self._phase in ("starting", "rotating", "switching")
                else 0.0,
                target_scheme=self._target,
                **details,
            )

    def wait(
        self, on_progress: Progress | None = None, timeout_s: float = _KEY_WAIT_TIMEOUT_S
    ) -> EncryptedSession:
        """The ready session, waiting for a key being made; DemoError if there is none."""
        if not self._started:
            self.start()
        deadline = time.monotonic() + timeout_s
        last: tuple[str, float] | None = None
        while True:
            status = self.status()
            if status.phase == "ready":
                session = self._box["session"]
                assert session is not None
                return session
            if status.phase == "failed":
                raise DemoError(f"There is no session key yet: {status.message}")
            if on_progress is not None and (status.message, status.fraction) != last:
                last = (status.message, status.fraction)
                on_progress(status.message, status.fraction)
            if time.monotonic() > deadline:
                raise DemoError(
                    f"The session key is still being made after {timeout_s:.0f} s: try again in a moment."
                )
            time.sleep(0.05)

    def close(self) -> None:
        """Delete the public-key blob (now, or when a key being made is done)."""
        with self._lock:
            self._closed = True
        self._finalizer()


# --- one classification ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def gallery() -> tuple[np.ndarray, np.ndarray]:
    """The "pick a test digit" gallery: (n, 784) float32 and (n,) labels, never trained on."""
    images, labels = load_gallery()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def pick_gallery_index(
    labels: np.ndarray, rng: np.random.Generator, label: int | None = None, avoid: int | None = None
) -> int:
    """A random gallery index, of ``label`` if given, not ``avoid`` (the digit shown now) if possible."""
    candidates = np.flatnonzero(labels == label) if label is not None else np.arange(len(labels))
    if len(candidates) == 0:
        raise InvalidInput(f"The gallery has no digit with label {label}.")
    if avoid is not None and len(candidates) > 1:
        candidates = candidates[candidates != avoid]
    return int(rng.choice(candidates))


@dataclass(frozen=True, eq=False)
class DigitInput:
    """The 784 pixels that get encrypted, and where they came from."""

    pixels: np.ndarray
    source: Literal["drawing", "test digit"]
    true_label: int | None = None
    gallery_index: int | None = None

    @classmethod
    def from_drawing(cls, image_data: np.ndarray | None) -> DigitInput:
        """A canvas drawing, normalised like MNIST; InvalidInput if the canvas is empty."""
        if image_data is None:  # nothing drawn yet
            raise InvalidInput(EMPTY_MESSAGE)
        pixels = to_mnist(image_data)
        return cls(pixels=np.asarray(pixels, dtype=np.float32), source="drawing")

    @classmethod
    def from_gallery(cls, index: int) -> DigitInput:
        """Gallery digit ``index`` with its true label."""
        images, labels = gallery()
        if not 0 <= index < len(labels):
            raise InvalidInput(f"There is no test digit #{index}.")
        return cls(
            pixels=images[index], source="test digit", true_label=int(labels[index]), gallery_index=index
        )


@dataclass(frozen=True, eq=False)
class Classified:
    """One encrypted classification with everything the pages show about it."""

    digit: DigitInput
    prediction: Prediction
    scheme: str  # the scheme's name, e.g. "bfv"
    key_id: str
    key_blob_url: str
    setup_timings_s: dict[str, float]
    reference: ReferenceCheck | None
    reference_note: str  # why there is no reference check, if there is none

    @property
    def label(self) -> int:
        """The predicted class."""
        return self.prediction.label

    @property
    def correct(self) -> bool | None:
        """Whether the prediction matches the true label (None for a drawing)."""
        return None if self.digit.true_label is None else self.digit.true_label == self.label


class AppState:
    """Settings, probes, the session key and the last result of one browser session."""

    def __init__(
        self, settings: AppSettings, starter: Starter | None = None, scheme: str = DEFAULT_SCHEME
    ) -> None:
        self.settings = settings
        self._store = PublicKeyStore(settings.blob_connection_string, settings.blob_container)
        self._scorer = ScoringClient(settings.scoring_url, settings.scoring_timeout_s)
        self.key = SessionKey(settings, starter, scheme)
        self.health: Health | None = None
        self.last: Classified | None = None
        self.rng = np.random.default_rng()
        self._last_auto_start = 0.0
        self._health_at = 0.0
        self._last_done = 0.0

    @classmethod
    def load(cls, secrets: Mapping[str, Any] | None = None) -> AppState:
        """Settings from the environment and ``secrets``; SettingsError names a bad setting."""
        return cls(AppSettings.load(secrets))

    @property
    def storage_endpoint(self) -> str:
        """Where the public keys go (no credentials)."""
        return self._store.endpoint

    @property
    def scheme(self) -> str:
        """The HE scheme chosen for this session (its key may still be being made)."""
        return self.key.scheme

    def use_scheme(self, scheme: str) -> None:
        """Switch this session to ``scheme`` (a new key in the background); InvalidInput if unknown."""
        if scheme not in SCHEME_NAMES:
            raise InvalidInput(f"There is no scheme {scheme!r}; choose one of {', '.join(SCHEME_NAMES)}.")
        self.key.use_scheme(scheme)

    def refresh(self, max_age_s: float = 0.0) -> Health:
        """Probe the services (unless probed less than ``max_age_s`` ago); start the key (again)
        when storage answers. The pages call it on every rerun."""
        now = time.monotonic()
        if self.health is not None and now - self._health_at < max_age_s:
            health = self.health
        else:
            health = check_health(self._store, self._scorer)
            self.health, self._health_at = health, time.monotonic()
        status = self.key.status()
        if not self.key.started:
            self.key.start()
            self._last_auto_start = now
        elif (
            status.phase == "failed"
            and status.failed_on_storage
            and health.storage_ok
            and now - self._last_auto_start >= _AUTO_RETRY_EVERY_S
        ):
            log.info("blob storage answers again: making the session key")
            self._last_auto_start = now
            self.key.start()
        return health

    def classify(
        self, digit: DigitInput, on_key_progress: Progress | None = None, debounce_s: float = _DEBOUNCE_S
    ) -> Classified:
        """Encrypt ``digit``, have it scored, decrypt; DemoError (with what to do) on any failure.

        The same pixels again within ``debounce_s`` of the last result give that result back
        without a new request: a double click, or a click replayed by a restarted page run, should
        not cost another encrypted prediction.
        """
        last = self.last
        if (
            last is not None
            and time.monotonic() - self._last_done < debounce_s
            and last.scheme == self.scheme
            and np.array_equal(last.digit.pixels, digit.pixels)
        ):
            return last
        session = self.key.wait(on_key_progress)
        prediction = session.predict(digit.pixels)
        status = self.key.status()
        try:
            model = load_reference_model()
        except ReferenceUnavailable as exc:
            check, note = None, exc.message
        else:
            check, note = reference_check(model, digit.pixels, prediction.scores), ""
        result = Classified(
            digit=digit,
            prediction=prediction,
            scheme=session.scheme_name,
            key_id=session.key_id,
            key_blob_url=session.key_blob_url,
            setup_timings_s=dict(status.setup_timings_s or session.setup_timings_s),
            reference=check,
            reference_note=note,
        )
        self.last, self._last_done = result, time.monotonic()
        return result

    def close(self) -> None:
        """Delete the key blob and close connections."""
        self.key.close()
        self._scorer.close()
