"""What every page of the app shares for one browser session: settings, health, key, last result.

The pages keep one ``AppState`` in Streamlit's session state (see ``ui/state.py``); everything
here is plain Python so it can be tested without Streamlit. The parts it holds each have their own
module: ``lib.health`` (are the services up), ``lib.session_key`` (the key, made in the
background), ``lib.digits`` (what gets encrypted) and ``lib.view_models`` (what the pages show).

- ``AppState.refresh`` probes the services on every rerun and, if key setup failed because
  storage was down, starts it again once storage answers.
- ``AppState.classify`` encrypts one 28x28 digit with the ready session, has it scored, decrypts,
  and runs the plaintext reference check (demo and QA only). The caller waits for the key first
  (``state.key.wait``), once, so it can show the key's progress and then its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from lib.blob_store import PublicKeyStore
from lib.digits import DigitInput
from lib.errors import InvalidInput
from lib.health import Health, check_health
from lib.reference import ReferenceUnavailable, load_reference_model, reference_check
from lib.schemes import DEFAULT_SCHEME, SCHEME_NAMES
from lib.scoring_client import ScoringClient
from lib.session import EncryptedSession
from lib.session_key import SessionKey, Starter
from lib.settings import AppSettings
from lib.view_models import Classified

__all__ = ["AppState"]

log = logging.getLogger("encrypted_mnist.app")

_AUTO_RETRY_EVERY_S = 3.0
_DEBOUNCE_S = 2.0


class AppState:
    """Settings, probes, the session key and the last result of one browser session."""

    def __init__(
        self, settings: AppSettings, starter: Starter | None = None, scheme: str = DEFAULT_SCHEME
    ) -> None:
        self.settings = settings
        self._store = PublicKeyStore(settings.blob_connection_string, settings.blob_container)
        self._scorer = ScoringClient.from_settings(settings)
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
        self, digit: DigitInput, session: EncryptedSession, debounce_s: float = _DEBOUNCE_S
    ) -> Classified:
        """Encrypt ``digit`` with ``session`` (from ``self.key.wait``), have it scored, decrypt;
        DemoError (with what to do) on any failure.

        The same pixels with the same scheme again within ``debounce_s`` of the last result give
        that result back without a new request: a double click, or a click replayed by a
        restarted page run, should not cost another encrypted prediction.
        """
        last = self.last
        if (
            last is not None
            and time.monotonic() - self._last_done < debounce_s
            and last.scheme == session.scheme_name
            and np.array_equal(last.digit.pixels, digit.pixels)
        ):
            return last
        prediction = session.predict(digit.pixels)
        try:
            model = load_reference_model()
        except ReferenceUnavailable as exc:
            check, note = None, exc.message
        else:
            check, note = reference_check(model, digit.pixels, prediction.scores, session.scheme_name), ""
        result = Classified(
            digit=digit,
            prediction=prediction,
            scheme=session.scheme_name,
            key_id=session.key_id,
            key_blob_url=session.key_blob_url,
            setup_timings_s=dict(session.setup_timings_s),
            reference=check,
            reference_note=note,
        )
        self.last, self._last_done = result, time.monotonic()
        return result

    def close(self) -> None:
        """Delete the key blob and close connections."""
        self.key.close()
        self._scorer.close()
