"""Stand-ins for an EncryptedSession and its starter, for tests of the app's logic without services."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from lib.errors import DemoError
from lib.schemes import DEFAULT_SCHEME
from lib.session import Prediction, Stage
from lib.settings import AppSettings, azurite_connection_string

SAS_URL = (
    "http://127.0.0.1:10000/devstoreaccount1/public-keys/abc?st=2026-01-01T00%3A00%3A00Z"
    "&se=2026-01-01T01%3A00%3A00Z&sp=r&sv=2025-11-05&sr=b&sig=SECRETSIG%2Babc%3D"
)


class FakeSession:
    """What SessionKey, AppState and the accuracy run use of an EncryptedSession."""

    def __init__(self, key_id: str = "key1", scheme: str = DEFAULT_SCHEME) -> None:
        self.scheme_name = scheme
        self.scheme = {"name": scheme, "version": "1", "params": {}}
        self.key_id = key_id
        self.key_bytes = 8_978_344
        self.key_blob_url = f"http://127.0.0.1:10000/devstoreaccount1/public-keys/{key_id}"
        self.sas_expires_at = datetime(2030, 1, 1, tzinfo=UTC)
        self.setup_timings_s = {"keygen": 1.0, "upload": 0.1}
        self.closed = False
        self.predictions = 0
        self.fail_rotation: DemoError | None = None

    def rotate_key(self, progress: Callable[[str, float], None]) -> None:
        progress("Generating", 0.5)
        if self.fail_rotation is not None:
            raise self.fail_rotation
        self.key_id = self.key_id + "+"

    def close(self) -> None:
        self.closed = True

    def predict(self, pixels: np.ndarray) -> Prediction:
        """Scores 0..9 (so label 9) for any ink, all zeros for a blank image."""
        self.predictions += 1
        scores = np.arange(10, dtype=float) * float(np.asarray(pixels).sum() > 0)
        return Prediction(
            scores=scores,
            label=int(np.argmax(scores)),
            stages=[Stage("encrypt", 0.05, "client"), Stage("compute", 1.0, "server")],
            sizes={
                "ciphertext_bytes": 1,
                "request_bytes": 2,
                "response_bytes": 3,
                "result_bytes": 4,
                "key_bytes": 5,
            },
            key_cache="miss",
            total_s=1.1,
            request_body={"ciphertexts": ["AAAA"], "keys": {"url": SAS_URL, "sha256": "0" * 64}},
        )


class SchemeStarter:
    """A starter that makes FakeSessions of the scheme asked for; ``gate`` holds key setup back."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.made: list[FakeSession] = []
        self.fail: dict[str, DemoError] = {}

    def __call__(
        self, _settings: AppSettings, progress: Callable[[str, float], None], scheme: str
    ) -> FakeSession:
        progress(f"Generating the {scheme} key pair", 0.4)
        self.gate.wait(5)
        if scheme in self.fail:
            raise self.fail[scheme]
        session = FakeSession(key_id=f"{scheme}-{len(self.made)}", scheme=scheme)
        self.made.append(session)
        return session


def settings() -> AppSettings:
    """Settings that point at closed ports: nothing here talks to a service."""
    return AppSettings(
        blob_connection_string=azurite_connection_string(1), scoring_url="http://127.0.0.1:1/score"
    )


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)
