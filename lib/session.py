"""One encrypted session per app user: a key pair, its public keys in blob storage, predictions.

``EncryptedSession.start`` makes the key pair, uploads the public keys once (blob name = key id)
and signs a read-only, expiring SAS URL for them. Each ``predict`` then sends only ciphertexts
plus that URL and the keys' SHA-256 (docs/contract.md), decrypts the per-class scores locally and
reports where the time and the bytes went. The secret key never leaves this process.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

import numpy as np

from lib.blob_store import PublicKeyStore
from lib.contract import ServerResult, build_score_request, parse_score_response
from lib.errors import ServiceRejected, ServiceUnavailable
from lib.schemes import DEFAULT_SCHEME, ClientScheme, new_client
from lib.scoring_client import ScoreCall, ScoringClient
from lib.settings import AppSettings

__all__ = ["N_CLASSES", "EncryptedSession", "Prediction", "Progress", "Relayed", "Stage", "close_quietly"]

N_CLASSES = 10
RETRY_PAUSE_S = 0.5
"""How long to wait before resending after a transient failure (a worker restarts in about a second)."""
Progress = Callable[[str, float], None]


class Stage(NamedTuple):
    """One step of a prediction: its name, its duration, and which side spent it."""

    name: str
    seconds: float
    source: Literal["client", "server"]


@dataclass(frozen=True, eq=False)
class Prediction:
    """The decrypted result of one prediction and what it cost.

    ``stages`` in order: encrypt (client), request = round trip minus server total, i.e. network
    and (de)serialisation (client), parse and checks (server), key fetch with cache hit/miss
    (server), compute (server), decrypt (client). ``request_body`` is exactly what the service
    received: ciphertexts, the scheme, and the read-only SAS URL of the public keys.
    """

    scores: np.ndarray
    label: int
    stages: list[Stage]
    sizes: dict[str, int]
    key_cache: str
    total_s: float
    request_body: dict[str, Any] = field(repr=False)

    def stage_seconds(self, name: str) -> float:
        """The seconds spent in every stage called ``name`` (0.0 if there is none), e.g. "compute"."""
        return sum(stage.seconds for stage in self.stages if stage.name == name)

    @property
    def server_seconds(self) -> float:
        """The seconds of every server stage: parse and checks, key fetch and compute."""
        return sum(stage.seconds for stage in self.stages if stage.source == "server")


@dataclass(frozen=True, eq=False)
class Relayed:
    """One scoring request's encrypted results and what it cost (the request's and server's stages)."""

    results: list[str]
    stages: list[Stage]
    sizes: dict[str, int]
    key_cache: str
    request_body: dict[str, Any] = field(repr=False)


def _noop(_message: str, _fraction: float) -> None:
    pass


def _key_metadata(client: ClientScheme) -> dict[str, str]:
    """Blob metadata for a public-key blob: which scheme the keys are for."""
    descriptor = client.descriptor
    return {"scheme": descriptor["name"], "scheme_version": descriptor["version"]}


def _decoded_length(text: str) -> int:
    """Bytes a padded base64 string stands for, without decoding it again."""
    return len(text) // 4 * 3 - text[-2:].count("=")


def _sas_expiry(sas_url: str) -> datetime:
    """The ``se`` (expiry) of a SAS URL."""
    expiry = parse_qs(urlsplit(sas_url).query)["se"][0]
    return datetime.fromisoformat(expiry)


class EncryptedSession:
    """Key pair + uploaded public keys + scoring client; use ``start``, then ``predict``."""

    def __init__(
        self, settings: AppSettings, store: PublicKeyStore, scorer: ScoringClient, scheme: str = DEFAULT_SCHEME,
        *, client_factory: Callable[[], ClientScheme] | None = None,
    ) -> None:
        """Prefer ``start``; this only wires the parts together (tests pass their own).

        ``client_factory`` makes the key pair's client half (default: ``new_client(scheme)``); the
        browser mode passes one whose secret key is in the tab (lib/tab_mode.py) and only relays."""
        self.settings = settings
        self.scheme_name = scheme
        self._client_factory = client_factory or (lambda: new_client(scheme))
        self._store = store
        self._scorer = scorer
        self._lock = threading.RLock()
        self._client: ClientScheme | None = None
        self._key_blob_url = ""
        self._sas_url = ""
        self._sas_expires_at = datetime.min.replace(tzinfo=UTC)
        self.key_sha256 = ""
        self.key_bytes = 0
        self.setup_timings_s: dict[str, float] = {}
        self._closed = False

    @classmethod
    def start(
        cls,
        settings: AppSettings,
        progress: Progress | None = None,
        *,
        scheme: str = DEFAULT_SCHEME,
        store: PublicKeyStore | None = None,
        scorer: ScoringClient | None = None,
        client_factory: Callable[[], ClientScheme] | None = None,
    ) -> EncryptedSession:
        """Make a key pair of ``scheme``, upload its public material and sign a read-only SAS URL for it."""
        store = store or PublicKeyStore(settings.blob_connection_string, settings.blob_container)
        scorer = scorer or ScoringClient.from_settings(settings)
        session = cls(settings, store, scorer, scheme, client_factory=client_factory)
        try:
            session._new_key(progress or _noop)
        except BaseException:
            scorer.close()
            raise
        return session

    def __repr__(self) -> str:
        return f"EncryptedSession(scheme={self.scheme_name!r}, key_id={self.key_id!r}, key_blob_url={self._key_blob_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- keys -----------------------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The current key pair's id (also the public-key blob's name)."""
        return self._client.key_id if self._client is not None else ""

    @property
    def key_blob_url(self) -> str:
        """The public-key blob's URL, without the SAS signature."""
        return self._key_blob_url

    @property
    def sas_expires_at(self) -> datetime:
        """When the current read-only SAS URL stops working (UTC)."""
        return self._sas_expires_at

    @property
    def scheme(self) -> dict[str, Any]:
        """The scheme descriptor sent with each request."""
        assert self._client is not None
        return self._client.descriptor

    def _new_key(self, progress: Progress) -> None:
        """Make a key pair and upload its public keys (storage is checked first: fail before keygen)."""
        progress("Checking blob storage", 0.0)
        self._store.ensure_container()

        progress("Generating the key pair and public keys", 0.05)
        started = time.perf_counter()
        client = self._client_factory()
        public = client.public_material()
        keygen_s = time.perf_counter() - started

        progress("Uploading the public keys to blob storage", 0.6)
        started = time.perf_counter()
        blob_url = self._store.upload(client.key_id, public, _key_metadata(client))
        upload_s = time.perf_counter() - started

        self._client = client
        self._key_blob_url = blob_url
        self.key_sha256 = hashlib.sha256(public).hexdigest()
        self.key_bytes = len(public)
        self.setup_timings_s = {"keygen": keygen_s, "upload": upload_s}
        self._refresh_sas()
        progress("Ready", 1.0)

    def _refresh_sas(self) -> None:
        assert self._client is not None
        self._sas_url = self._store.read_only_sas_url(self._client.key_id, self.settings.sas_ttl_minutes)
        self._sas_expires_at = _sas_expiry(self._sas_url)

    def _ensure_fresh_sas(self) -> None:
        """Re-sign when less than one request timeout plus a minute is left."""
        margin = timedelta(seconds=self.settings.scoring_timeout_s + 60)
        if datetime.now(UTC) + margin >= self._sas_expires_at:
            self._refresh_sas()

    def rotate_key(self, progress: Progress | None = None) -> None:
        """Switch to a fresh key pair; the old public-key blob is deleted once the new one is up."""
        with self._lock:
            self._check_open()
            old_id = self.key_id
            self._new_key(progress or _noop)
            if old_id and old_id != self.key_id:
                self._store.delete(old_id)

    def close(self) -> None:
        """Delete the public-key blob and close connections; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._client is not None:
                    self._store.delete(self._client.key_id)
            finally:
                self._scorer.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this EncryptedSession is closed")

    # --- prediction ------------------------------------------------------------------------------

    def predict(self, pixels: np.ndarray) -> Prediction:
        """Encrypt ``pixels`` (784 floats in [0, 1]), score them remotely, decrypt the 10 logits."""
        with self._lock:
            self._check_open()
            assert self._client is not None
            client = self._client
            started = time.perf_counter()
            stages: list[Stage] = []

            t = time.perf_counter()
            ciphertexts = client.encrypt(pixels)
            stages.append(Stage("encrypt", time.perf_counter() - t, "client"))

            relayed = self._relay(client, ciphertexts, stages)

            t = time.perf_counter()
            scores = client.decrypt(relayed.results)
            stages.append(Stage("decrypt", time.perf_counter() - t, "client"))
            return Prediction(
                scores=scores,
                label=int(np.argmax(scores)),
                stages=stages,
                sizes=relayed.sizes,
                key_cache=relayed.key_cache,
                total_s=time.perf_counter() - started,
                request_body=relayed.request_body,
            )

    def relay(self, ciphertexts: list[str]) -> Relayed:
        """Score ciphertexts made elsewhere (the browser tab) with this session's keys; the results
        stay encrypted: only the holder of the secret key, not this process, can read them."""
        with self._lock:
            self._check_open()
            assert self._client is not None
            return self._relay(self._client, ciphertexts, [])

    def _relay(self, client: ClientScheme, ciphertexts: list[str], stages: list[Stage]) -> Relayed:
        """One scoring request; appends the request's and the server's stages to ``stages``."""
        call, server, request = self._score(client, ciphertexts, stages)
        timings = server.timings_ms
        server_total_s = timings["total"] / 1000.0
        key_fetch_s = timings["key_fetch"] / 1000.0
        compute_s = timings["compute"] / 1000.0
        stages.append(Stage("request", max(call.round_trip_s - server_total_s, 0.0), "client"))
        stages.append(Stage("parse", max(server_total_s - key_fetch_s - compute_s, 0.0), "server"))
        stages.append(Stage(f"key fetch (cache {server.key_cache})", key_fetch_s, "server"))
        stages.append(Stage("compute", compute_s, "server"))
        sizes = {
            "ciphertext_bytes": sum(_decoded_length(c) for c in ciphertexts),
            "request_bytes": call.request_bytes,
            "response_bytes": call.response_bytes,
            "result_bytes": sum(_decoded_length(r) for r in server.result),
            "key_bytes": self.key_bytes,
        }
        return Relayed(list(server.result), stages, sizes, server.key_cache, request)

    def _score(
        self, client: ClientScheme, ciphertexts: list[str], stages: list[Stage]
    ) -> tuple[ScoreCall, ServerResult, dict[str, Any]]:
        """Send one request, trying again once each after a transient failure (a worker or replica that
        died: scoring is a pure function, so the same request is safe to resend) and after the
        service lost the blob or refused the SAS (repaired first)."""
        retried = repaired = False
        while True:
            self._ensure_fresh_sas()
            request = build_score_request(client.descriptor, ciphertexts, self._sas_url, self.key_sha256)
            sent = time.perf_counter()
            try:
                call = self._scorer.score(request)
            except (ServiceRejected, ServiceUnavailable) as exc:
                if exc.transient and not retried:
                    retried = True
                    time.sleep(RETRY_PAUSE_S)
                    stages.append(Stage("retry (service restarting)", time.perf_counter() - sent, "client"))
                    continue
                if repaired or not isinstance(exc, ServiceRejected) or exc.code not in ("key_not_found", "sas_invalid"):
                    raise
                repaired = True
                t = time.perf_counter()
                if exc.code == "key_not_found":
                    # e.g. Azurite restarted with in-memory storage: upload the same keys again.
                    self._store.ensure_container()
                    self._store.upload(client.key_id, client.public_material(), _key_metadata(client))
                    stages.append(Stage("re-upload keys", time.perf_counter() - t, "client"))
                self._refresh_sas()
                continue
            server = parse_score_response(call.body, expected_scheme=client.scheme_id, expected_results=client.result_count)
            return call, server, request


def close_quietly(box: dict[str, Any]) -> None:
    """Finaliser: close the session held in ``box["session"]`` (deleting its blob), if any.

    Best effort, for when a browser session or a comparison ended without closing it: storage may
    be gone by then and there is nobody to tell, so a failure is only logged.
    """
    session = box.get("session")
    box["session"] = None
    if session is None:
        return
    try:
        session.close()
    except Exception:
        logging.getLogger("encrypted_mnist.app").info("could not close an ended session", exc_info=True)
