"""What one benchmark run measures: a record per column (the reference or a scheme) and the ratios.

Every figure the tables and the charts show is a field here, so they all read the same numbers.
Sizes are bytes, times are seconds; None means "not measured" (or "does not apply").
"""

from __future__ import annotations

import base64
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lib.formatting import is_number

WORKERS = 2  # the scoring service's gunicorn workers, as in the local stack


@dataclass
class Throughput:
    """Concurrent clients against the HTTP service for a fixed window, after a warm-up."""

    clients: int
    seconds: float
    ok: int = 0  # 200 responses completed inside the window
    failed: int = 0  # other statuses or connection errors inside the window
    misses: int = 0  # key-cache misses inside the window (should be 0 after the warm-up)
    requests: int = 0  # all requests sent, warm-up included
    connections: int = 0  # TCP connections opened for them
    warmup_s: float = 0.0
    client_cpu_s: float = 0.0  # CPU time this process (the load generator) used inside the window
    checked: int = 0  # sampled responses decrypted after the window
    correct: int = 0  # ... that gave the plaintext model's label
    max_error: float | None = None
    first_failure: str = ""

    @property
    def per_second(self) -> float | None:
        """200 responses per second inside the window."""
        return self.ok / self.seconds if self.seconds > 0 else None

    @property
    def verified_per_second(self) -> float | None:
        """``per_second``, or None if a sampled response decrypted to a wrong label."""
        if self.checked and self.correct < self.checked:
            return None  # wrong answers do not count as throughput
        return self.per_second


AGREEMENT_DIGITS = 1000  # real test digits over HTTP for a scheme with an agreement target


@dataclass
class Measured:
    """Everything measured for one scheme (or the reference); None where it does not apply."""

    name: str
    scheme_id: str = ""
    keygen_s: float | None = None
    key_bytes: int | None = None
    upload_s: float | None = None
    request_bytes: int | None = None
    ciphertext_bytes: int | None = None
    encrypt_s: float | None = None
    inproc_server_cold_s: float | None = None
    inproc_server_warm_s: float | None = None
    inproc_e2e_warm_s: float | None = None
    http_server_cold_s: float | None = None
    http_server_warm_s: float | None = None
    http_compute_warm_s: float | None = None  # the homomorphic evaluation alone (server timings_ms.compute)
    http_e2e_warm_s: float | None = None
    response_bytes: int | None = None
    result_bytes: int | None = None
    decrypt_s: float | None = None
    errors: list[float] = field(default_factory=list)  # max |decrypted - plaintext| of each prediction
    digits: int = 0
    correct: int = 0
    agree: int = 0
    plaintext_accuracy: float | None = None  # the scheme's model in the clear, on the whole real test set
    throughput: Throughput | None = None
    other_cpu: float | None = None  # share of the machine other processes used meanwhile

    @property
    def max_error(self) -> float | None:
        """The largest error of any prediction, or None if none was checked."""
        return max(self.errors) if self.errors else None

    @property
    def agreement(self) -> float | None:
        """Share of the digits sent over HTTP whose encrypted argmax is the plaintext model's; None
        below ``AGREEMENT_DIGITS`` digits, too few to tell 99.9 % apart."""
        return self.agree / self.digits if self.digits >= AGREEMENT_DIGITS else None

    @property
    def throughput_verified(self) -> float | None:
        """Predictions per second over HTTP, counted only if every sampled response decrypted right."""
        return self.throughput.verified_per_second if self.throughput else None


@dataclass
class Digits:
    """The test digits: images (n, 784) in [0, 1], labels (n,) (-1 when unknown), and their source."""

    images: np.ndarray
    labels: np.ndarray
    source: str


Getter = Callable[[Measured], float | None]


@dataclass(frozen=True)
class Ratio:
    """One "x faster / smaller than the reference" figure: reference's value / the scheme's value."""

    label: str
    of_reference: Getter
    of_scheme: Getter

    def __call__(self, scheme: Measured, reference: Measured | None) -> float | None:
        """The ratio for ``scheme``, or None without a reference or a value."""
        if reference is None:
            return None
        return ratio(self.of_reference(reference), self.of_scheme(scheme))


# The reference runs in process only, so the HTTP rows compare with its in-process figure.
RATIOS: tuple[Ratio, ...] = (
    Ratio("server, in process, warm", lambda m: m.inproc_server_warm_s, lambda m: m.inproc_server_warm_s),
    Ratio("server, HTTP, warm", lambda m: m.inproc_server_warm_s, lambda m: m.http_server_warm_s),
    Ratio("end to end, in process, warm", lambda m: m.inproc_e2e_warm_s, lambda m: m.inproc_e2e_warm_s),
    Ratio("end to end, HTTP, warm", lambda m: m.inproc_e2e_warm_s, lambda m: m.http_e2e_warm_s),
    Ratio("key generation", lambda m: m.keygen_s, lambda m: m.keygen_s),
    Ratio("public key bytes", lambda m: m.key_bytes, lambda m: m.key_bytes),
    Ratio("request bytes", lambda m: m.request_bytes, lambda m: m.request_bytes),
    Ratio("response bytes", lambda m: m.response_bytes, lambda m: m.response_bytes),
)
RATIO = {r.label: r for r in RATIOS}


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def ratio(reference: float | None, value: float | None) -> float | None:
    """reference / value (how many times faster or smaller), or None if either is unknown or <= 0."""
    if reference is None or value is None or not (is_number(reference) and is_number(value)):
        return None
    if reference <= 0 or value <= 0:
        return None
    return reference / value


def split_cold_warm(samples: Sequence[tuple[str, Any]]) -> tuple[Any | None, list[Any]]:
    """From (key_cache, item) samples: the first miss's item (or None) and every hit's item."""
    cold = next((item for cache, item in samples if cache == "miss"), None)
    return cold, [item for cache, item in samples if cache == "hit"]


def decoded_length(ciphertexts: Sequence[str]) -> int:
    """Bytes that a list of base64 strings decodes to."""
    return sum(len(base64.b64decode(text)) for text in ciphertexts)
