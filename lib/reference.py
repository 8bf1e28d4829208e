"""The plaintext reference check: the same models, run in the clear, for demo and QA only.

The app compares each decrypted result with what the plaintext model of that scheme gives for the
same 784 pixels: the linear model for ei, ckks and bfv, the network for ``network``. The predicted
class should agree and the scores should differ only by the scheme's noise. The models are read
straight from the service's artifacts with numpy. The check runs in the app process, on the app's
own copy of the pixels: it is a test instrument, not part of the encrypted path, and the scoring
service never sees it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.errors import DemoError
from service.shared.model_files import MODEL_DIR, MODEL_FILE, NETWORK_FILE
from service.shared.network_model import NetworkWeights, load_network
from service.shared.specs import NETWORK

__all__ = [
    "REFERENCE_MODEL_FILE",
    "PlaintextModel",
    "ReferenceCheck",
    "load_reference_model",
    "reference_check",
]

REFERENCE_MODEL_FILE = MODEL_DIR / MODEL_FILE
N_CLASSES = 10
N_FEATURES = 784

_cache: dict[tuple[str, int, int], PlaintextModel] = {}
_cache_lock = threading.Lock()


class ReferenceUnavailable(DemoError):
    """The plaintext model could not be read, so no reference check can be made."""


NETWORK_SCHEME = NETWORK.name  # the scheme that runs the network; every other one runs the linear model


@dataclass(frozen=True, eq=False)
class PlaintextModel:
    """The models in the clear: the linear one, ``coef`` (10, 784) and ``intercept`` (10,), and the
    network (None if its artifact is missing), each for the schemes that run it."""

    coef: np.ndarray
    intercept: np.ndarray
    path: Path
    network: NetworkWeights | None = None

    def logits(self, images: np.ndarray, scheme: str = "ckks") -> np.ndarray:
        """The plaintext scores of each row of ``images`` (n, 784) under ``scheme``'s model."""
        rows = np.asarray(images, dtype=np.float64).reshape(-1, N_FEATURES)
        if scheme != NETWORK_SCHEME:
            return rows @ self.coef.T + self.intercept
        if self.network is None:
            raise ReferenceUnavailable(f"No plaintext network beside {self.path}, so the reference check is skipped.")
        return self.network.logits(rows)

    def scores(self, pixels: np.ndarray, scheme: str = "ckks") -> np.ndarray:
        """The 10 plaintext scores (logits) of 784 pixels in [0, 1]."""
        return self.logits(pixels, scheme)[0]

    def predict(self, images: np.ndarray, scheme: str = "ckks") -> np.ndarray:
        """The plaintext argmax of each row of ``images`` (n, 784)."""
        return np.argmax(self.logits(images, scheme), axis=1)


@dataclass(frozen=True, eq=False)
class ReferenceCheck:
    """How the decrypted scores compare with the plaintext model's on the same pixels."""

    plain_scores: np.ndarray
    plain_label: int
    encrypted_label: int
    max_abs_error: float

    @property
    def agrees(self) -> bool:
        """True if the encrypted and the plaintext path predict the same class."""
        return self.plain_label == self.encrypted_label


def load_reference_model(path: Path = REFERENCE_MODEL_FILE) -> PlaintextModel:
    """Read the model artifact (cached until the file changes); ReferenceUnavailable says why not."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ReferenceUnavailable(
            f"No plaintext model at {path}, so the reference check is skipped (the encrypted path "
            "does not need it)."
        ) from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    try:
        with np.load(path, allow_pickle=False) as archive:
            coef = np.asarray(archive["coef"], dtype=np.float64)
            intercept = np.asarray(archive["intercept"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise ReferenceUnavailable(f"The plaintext model {path} could not be read ({exc}).") from None
    if coef.shape != (N_CLASSES, N_FEATURES) or intercept.shape != (N_CLASSES,):
        raise ReferenceUnavailable(
            f"The plaintext model {path} has coef {coef.shape} and intercept {intercept.shape}; "
            f"expected ({N_CLASSES}, {N_FEATURES}) and ({N_CLASSES},)."
        )
    network_path = path.with_name(NETWORK_FILE)
    try:
        network = load_network(network_path) if network_path.is_file() else None
    except (OSError, ValueError, KeyError) as exc:
        raise ReferenceUnavailable(f"The plaintext network {network_path} could not be read ({exc}).") from None
    model = PlaintextModel(coef=coef, intercept=intercept, path=path, network=network)
    with _cache_lock:
        _cache.clear()
        _cache[key] = model
    return model


def reference_check(
    model: PlaintextModel, pixels: np.ndarray, encrypted_scores: np.ndarray, scheme: str
) -> ReferenceCheck:
    """Compare decrypted scores with ``scheme``'s plaintext model's scores for the same pixels."""
    plain = model.scores(pixels, scheme)
    encrypted = np.asarray(encrypted_scores, dtype=np.float64).reshape(-1)
    if encrypted.shape != plain.shape:
        raise ValueError(f"expected {plain.shape[0]} scores, got {encrypted.shape[0]}")
    return ReferenceCheck(
        plain_scores=plain,
        plain_label=int(np.argmax(plain)),
        encrypted_label=int(np.argmax(encrypted)),
        max_abs_error=float(np.max(np.abs(plain - encrypted))),
    )
