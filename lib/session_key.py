"""This browser session's key: made, rotated and switched to another scheme on a background thread.

``SessionKey`` makes the session's key pair and uploads its public keys as soon as the session
starts, reporting progress, so the first prediction does not sit for seconds without feedback. It
also rotates the key ("new key") and switches to another HE scheme (a new session of that scheme,
then the old key blob is deleted) the same way. ``KeyStatus`` is a snapshot of it for display.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from lib.errors import DemoError, StorageUnavailable
from lib.schemes import DEFAULT_SCHEME
from lib.session import EncryptedSession, close_quietly
from lib.settings import AppSettings
from lib.view_models import scheme_title

__all__ = ["KeyPhase", "KeyStatus", "Progress", "SessionKey", "Starter"]

log = logging.getLogger("encrypted_mnist.app")

Progress = Callable[[str, float], None]
Starter = Callable[[AppSettings, Progress, str], EncryptedSession]  # settings, progress, scheme name
KeyPhase = Literal["starting", "ready", "rotating", "switching", "failed"]

_KEY_WAIT_TIMEOUT_S = 180.0


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
    """The real starter: a new key pair of ``scheme``, its public keys uploaded."""
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
