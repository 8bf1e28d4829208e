"""The measurements: each scheme in process and over HTTP, its throughput, and the seed's reference.

Key setup, requests and decryption go through the product's own ``lib.session.EncryptedSession``
(key pair, upload to Azurite, read-only SAS URL, request, checks, decrypt), so the benchmark times
the code the app runs. For the in-process figures the session's scorer is ``InProcessScorer``,
which hands each request to a ``service.scoring.ScoringService`` in this process instead of
POSTing it. Every decrypted result is compared with the plaintext model by
``lib.reference.reference_check``.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib.blob_store import PublicKeyStore
from lib.errors import ServiceRejected
from lib.reference import PlaintextModel, ReferenceCheck, reference_check
from lib.scoring_client import ScoreCall, ScoringClient
from lib.session import EncryptedSession, Prediction
from lib.settings import AppSettings
from scripts.benchmark.cpu import CpuMeter
from scripts.benchmark.load import fire
from scripts.benchmark.results import (
    AGREEMENT_DIGITS,
    WORKERS,
    Digits,
    Measured,
    Throughput,
    decoded_length,
    median,
    split_cold_warm,
)
from scripts.benchmark.targets import AGREEMENT_SCHEMES
from service.scoring import ScoringService

THROUGHPUT_BODIES = 16  # at most this many distinct pre-encrypted request bodies the clients cycle through
_COMPACT = (",", ":")


def load_digits(count: int) -> Digits:
    """Real MNIST test digits (../shared), else the held-out gallery, else fixed pseudo-digits."""
    count = max(1, count)
    try:
        from lib.mnist_data import load_test_set

        images, labels = load_test_set()
        return Digits(np.asarray(images[:count], np.float64), np.asarray(labels[:count]), "MNIST test set")
    except (OSError, ValueError):
        pass
    try:
        from lib.gallery import load_gallery

        images, labels = load_gallery()
        pick = np.linspace(0, len(images) - 1, count).astype(int)
        return Digits(np.asarray(images[pick], np.float64), np.asarray(labels[pick]), "held-out gallery")
    except (OSError, ValueError):
        rng = np.random.default_rng(0)
        images = rng.random((count, 784)) * (rng.random((count, 784)) > 0.8)
        return Digits(images, np.full(count, -1), "pseudo-digits (no labels)")


class InProcessScorer(ScoringClient):
    """A session's scorer that answers with ``ScoringService.handle`` in this process.

    Request and response are serialised exactly as over HTTP, so their sizes compare, and a
    refusal raises the same ``ServiceRejected``. ``replay(raw)`` queues a response body that the
    HTTP service gave, under load, to a request this session made: the next ``score`` answers
    with it, so the session checks and decrypts it with its own key, as it would any answer.
    """

    def __init__(self, service: ScoringService) -> None:
        super().__init__("in-process://scoring-service/score", timeout_s=300.0)
        self.service = service
        self.scheme_id = ""  # as the service echoes it
        self._replies: deque[bytes] = deque()

    def replay(self, raw: bytes) -> None:
        """Answer the next request with ``raw`` (a 200 body recorded earlier) instead of the service."""
        self._replies.append(raw)

    def score(self, request: dict[str, Any]) -> ScoreCall:
        """Serialise ``request``, let the in-process service answer it, serialise the answer."""
        if self._replies:
            raw = self._replies.popleft()
            return ScoreCall(body=json.loads(raw), request_bytes=0, response_bytes=len(raw), round_trip_s=0.0)
        payload = json.dumps(request, separators=_COMPACT)
        started = time.perf_counter()
        status, body = self.service.handle(payload)
        response = json.dumps(body, separators=_COMPACT)  # what the service would send
        round_trip_s = time.perf_counter() - started
        answer = json.loads(response)
        if status != 200:
            refusal = answer if isinstance(answer, dict) else {}
            raise ServiceRejected(status, str(refusal.get("error", "")), str(refusal.get("message", "")))
        self.scheme_id = str(answer.get("scheme", ""))
        return ScoreCall(
            body=answer,
            request_bytes=len(payload.encode()),
            response_bytes=len(response.encode()),
            round_trip_s=round_trip_s,
        )


@dataclass
class Bench:
    """One run: the settings of a started local stack, an in-process service, the model and the digits."""

    settings: AppSettings
    store: PublicKeyStore
    service: ScoringService
    model: PlaintextModel
    digits: Digits
    """Real test digits sent over HTTP: the first ``accuracy_digits`` for most schemes, all of them
    (``AGREEMENT_DIGITS``) for a scheme with an agreement target."""
    meter: CpuMeter
    warm: int
    throughput_seconds: float
    throughput_clients: int
    reference_runs: int
    accuracy_digits: int = 10
    test_set: Digits | None = None
    """The whole real test set, for each scheme's plaintext accuracy (None when it is not here)."""

    def check(self, index: int, scores: np.ndarray, scheme: str) -> ReferenceCheck:
        """Decrypted ``scores`` of digit ``index`` against ``scheme``'s plaintext model's."""
        return reference_check(self.model, self.digits.images[index], scores, scheme)

    # --- one scheme ----------------------------------------------------------------------------

    def scheme(self, name: str) -> Measured:
        """Key setup, in process (cold + warm), over HTTP (cold + warm + digits), throughput."""
        measured = Measured(name)
        if self.test_set is not None:
            predicted = self.model.predict(self.test_set.images, name)
            measured.plaintext_accuracy = float(np.mean(predicted == self.test_set.labels))
        cpu_start = self.meter.snapshot()
        print(f"[{name}] key generation and upload ...", flush=True)
        scorer = InProcessScorer(self.service)
        with EncryptedSession.start(self.settings, scheme=name, store=self.store, scorer=scorer) as session:
            measured.keygen_s = session.setup_timings_s["keygen"]
            measured.upload_s = session.setup_timings_s["upload"]
            measured.key_bytes = session.key_bytes
            print(f"[{name}] in process: 1 cold + {self.warm} warm ...", flush=True)
            predictions = self.in_process(measured, session)
            measured.scheme_id = scorer.scheme_id
            print(
                f"[{name}] over HTTP: cold + {self.warm} warm, {self.digit_count(name)} digits ...",
                flush=True,
            )
            self.over_http(measured)
            if self.throughput_seconds > 0:
                print(
                    f"[{name}] throughput: {self.throughput_clients} clients, "
                    f"{self.throughput_seconds:g} s after warm-up ...",
                    flush=True,
                )
                # This session's key is new to the HTTP service: each worker misses once in the warm-up.
                measured.throughput = self.throughput(session, scorer, predictions[:THROUGHPUT_BODIES])
        measured.other_cpu = self.meter.other_share(cpu_start)
        return measured

    def digit_count(self, name: str) -> int:
        """How many of the digits scheme ``name`` sends over HTTP."""
        wanted = AGREEMENT_DIGITS if name in AGREEMENT_SCHEMES else self.accuracy_digits
        return min(wanted, len(self.digits.labels))

    def in_process(self, measured: Measured, session: EncryptedSession) -> list[tuple[int, Prediction]]:
        """1 + warm predictions through the in-process service; returns (digit index, prediction) of each."""
        done: list[tuple[int, Prediction]] = []
        samples: list[tuple[str, tuple[float, float]]] = []
        count = len(self.digits.labels)
        for run in range(1 + self.warm):
            index = run % count  # distinct digits, so the throughput's bodies are distinct too
            prediction = session.predict(self.digits.images[index])
            measured.errors.append(self.check(index, prediction.scores, measured.name).max_abs_error)
            samples.append((prediction.key_cache, (prediction.server_seconds, prediction.total_s)))
            done.append((index, prediction))
        sizes = done[-1][1].sizes
        measured.ciphertext_bytes = sizes["ciphertext_bytes"]
        measured.result_bytes = sizes["result_bytes"]
        measured.encrypt_s = median([p.stage_seconds("encrypt") for _, p in done])
        measured.decrypt_s = median([p.stage_seconds("decrypt") for _, p in done])
        cold, warm = split_cold_warm(samples)
        measured.inproc_server_cold_s = cold[0] if cold else None
        measured.inproc_server_warm_s = median([w[0] for w in warm])
        measured.inproc_e2e_warm_s = median([w[1] for w in warm])
        return done

    def over_http(self, measured: Measured) -> None:
        """A fresh session against the HTTP service: cold, warm on digit 0, then every digit once."""
        with EncryptedSession.start(self.settings, scheme=measured.name, store=self.store) as session:
            samples: list[tuple[str, tuple[float, float, float]]] = []
            hits = 0
            for _ in range(self.warm + 6):  # 2 workers: one or two cold requests, then warm ones
                prediction = session.predict(self.digits.images[0])
                server_s, compute_s = prediction.server_seconds, prediction.stage_seconds("compute")
                samples.append((prediction.key_cache, (server_s, prediction.total_s, compute_s)))
                measured.errors.append(self.check(0, prediction.scores, measured.name).max_abs_error)
                hits += prediction.key_cache == "hit"
                if hits >= self.warm:
                    break
            cold, warm = split_cold_warm(samples)
            measured.http_server_cold_s = cold[0] if cold else None
            measured.http_server_warm_s = median([w[0] for w in warm])
            measured.http_e2e_warm_s = median([w[1] for w in warm])
            measured.http_compute_warm_s = median([w[2] for w in warm])
            # The HTTP body sizes are what really crossed the wire.
            measured.request_bytes = prediction.sizes["request_bytes"]
            measured.response_bytes = prediction.sizes["response_bytes"]
            for index, label in enumerate(self.digits.labels[: self.digit_count(measured.name)]):
                prediction = session.predict(self.digits.images[index])
                check = self.check(index, prediction.scores, measured.name)
                measured.errors.append(check.max_abs_error)
                measured.digits += 1
                measured.correct += int(prediction.label == label)
                measured.agree += int(check.agrees)

    def throughput(
        self, session: EncryptedSession, scorer: InProcessScorer, made: list[tuple[int, Prediction]]
    ) -> Throughput:
        """Fire the requests ``session`` made at the HTTP service; decrypt a sample of the answers."""
        bodies = [json.dumps(p.request_body, separators=_COMPACT).encode() for _, p in made]
        result, samples = fire(
            self.settings.scoring_url,
            bodies,
            clients=self.throughput_clients,
            seconds=self.throughput_seconds,
            workers=WORKERS,
        )
        errors = []
        for body_index, raw in samples:
            index = made[body_index][0]
            scorer.replay(raw)
            result.checked += 1
            try:
                scores = session.predict(self.digits.images[index]).scores  # answered with ``raw``
            except ServiceRejected:
                continue  # a malformed answer counts as wrong
            check = self.check(index, scores, session.scheme_name)
            result.correct += int(check.agrees)
            errors.append(check.max_abs_error)
        result.max_error = max(errors) if errors else None
        return result

    # --- the reference ---------------------------------------------------------------------------

    def reference(self, coef: np.ndarray, intercept: np.ndarray) -> Measured:
        """The seed's own path in process: its client's encrypt, ``EIServer.predict``, its decrypt."""
        from encrypted.inference.eiclient import EILinearRegressionClient
        from encrypted.inference.eiserver import EIServer

        from lib.contract import build_seed_request

        measured = Measured("reference", scheme_id="EIServer.predict")
        cpu_start = self.meter.snapshot()
        started = time.perf_counter()
        seed_client = EILinearRegressionClient()  # the package's own client, as the seed uses it
        key_id, seed_keys = seed_client.get_public_keys()
        measured.keygen_s = time.perf_counter() - started
        measured.key_bytes = len(seed_keys)
        server = EIServer(coef, intercept)
        predict_s, e2e_s, encrypt_s, decrypt_s = [], [], [], []
        for run in range(self.reference_runs):
            print(
                f"reference: EIServer.predict, run {run + 1} of {self.reference_runs} (about 25 s) ...",
                flush=True,
            )
            started = time.perf_counter()
            ciphertexts = seed_client.encrypt(self.digits.images[0])
            encrypt_s.append(time.perf_counter() - started)
            t = time.perf_counter()
            result = server.predict(ciphertexts, seed_keys)
            predict_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            scores = seed_client.decrypt(result)
            decrypt_s.append(time.perf_counter() - t)
            e2e_s.append(time.perf_counter() - started)
            measured.errors.append(self.check(0, np.asarray(scores), "ei").max_abs_error)
        measured.encrypt_s = median(encrypt_s)
        measured.decrypt_s = median(decrypt_s)
        # EIServer.predict has no key cache: every call loads the keys, so cold = warm.
        measured.inproc_server_cold_s = measured.inproc_server_warm_s = median(predict_s)
        measured.inproc_e2e_warm_s = median(e2e_s)
        texts = [c if isinstance(c, str) else c.decode("ascii") for c in ciphertexts]
        results = [r if isinstance(r, str) else r.decode("ascii") for r in result]
        seed_request = build_seed_request(
            texts, key_id or "key", self.settings.blob_connection_string, self.settings.blob_container
        )
        measured.request_bytes = len(json.dumps(seed_request, separators=_COMPACT).encode())
        measured.ciphertext_bytes = decoded_length(texts)
        measured.response_bytes = len(json.dumps(results, separators=_COMPACT).encode())
        measured.result_bytes = decoded_length(results)
        measured.other_cpu = self.meter.other_share(cpu_start)
        return measured
