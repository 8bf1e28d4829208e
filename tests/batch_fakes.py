"""Stand-ins for the batch runs' sessions: a fake EncryptedSession per scheme, its factory, toy data.

Used by tests/test_comparison.py and tests/test_batch_run.py (no services).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lib.batch_run import BatchRun
from lib.errors import ServiceRejected
from lib.reference import REFERENCE_MODEL_FILE, PlaintextModel
from lib.session import Prediction, Stage

# Per scheme: (key bytes, server seconds warm, request bytes); a cold request adds a key fetch.
FAKE = {"ei": (9_000_000, 1.2, 220_000), "ckks": (500_000, 0.01, 40_000), "bfv": (130_000, 0.005, 30_000)}


class FakeSession:
    """An EncryptedSession stand-in: predicts the label the model would, with made-up costs."""

    def __init__(self, scheme: str, model: PlaintextModel, fail_after: int | None = None) -> None:
        self.scheme_name = scheme
        self.key_bytes, self._server_s, self._request_bytes = FAKE[scheme]
        self.setup_timings_s = {"keygen": 2.0 if scheme == "ei" else 0.02, "upload": 0.1}
        self.model = model
        self.calls = 0
        self.closed = False
        self.fail_after = fail_after

    def predict(self, pixels: np.ndarray) -> Prediction:
        assert not self.closed
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise ServiceRejected(400, "unknown_scheme", "the service does not run this scheme")
        cache = "miss" if self.calls == 0 else "hit"
        self.calls += 1
        scores = self.model.scores(pixels) + 1e-6
        fetch = 0.1 if cache == "miss" else 0.0
        stages = [
            Stage("encrypt", 0.001, "client"),
            Stage("request", 0.002, "client"),
            Stage("parse", 0.001, "server"),
            Stage(f"key fetch (cache {cache})", fetch, "server"),
            Stage("compute", self._server_s, "server"),
            Stage("decrypt", 0.0005, "client"),
        ]
        return Prediction(
            scores=scores,
            label=int(np.argmax(scores)),
            stages=stages,
            sizes={
                "ciphertext_bytes": self._request_bytes // 2,
                "request_bytes": self._request_bytes,
                "response_bytes": 2 * self._request_bytes,
                "result_bytes": self._request_bytes,
                "key_bytes": self.key_bytes,
            },
            key_cache=cache,
            total_s=sum(s.seconds for s in stages),
            request_body={},
        )

    def close(self) -> None:
        self.closed = True


def toy_model() -> PlaintextModel:
    """Class c scores the mean of pixel block c: easy to predict, deterministic."""
    coef = np.zeros((10, 784))
    for c in range(10):
        coef[c, c * 78 : (c + 1) * 78] = 1.0
    return PlaintextModel(coef=coef, intercept=np.zeros(10), path=REFERENCE_MODEL_FILE)


class Factory:
    """Makes a FakeSession per scheme; ``fail`` raises at key setup, ``fail_after`` after N predictions."""

    def __init__(
        self, model: PlaintextModel, fail: dict | None = None, fail_after: dict | None = None
    ) -> None:
        self.model = model
        self.fail = fail or {}
        self.fail_after = fail_after or {}
        self.sessions: list[FakeSession] = []

    def __call__(self, scheme: str, progress) -> FakeSession:
        progress("Generating the key pair", 0.1)
        if scheme in self.fail:
            raise self.fail[scheme]
        session = FakeSession(scheme, self.model, self.fail_after.get(scheme))
        self.sessions.append(session)
        return session


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 3).astype(np.uint8)
    images = rng.random((30, 784)).astype(np.float32) * 0.1
    for i, label in enumerate(labels.tolist()):
        images[i, label * 78 : (label + 1) * 78] = 1.0  # the toy model gets every digit right
    return images, labels


def run_all(run: Any, factory, images, labels, model) -> int:
    """Step ``run`` (a ComparisonRun, or an AccuracyRun given a session) until it is not active."""
    assert isinstance(run, BatchRun)
    steps = 0
    while run.active:
        assert run.step(factory, images, labels, model) is not None
        steps += 1
    return steps
