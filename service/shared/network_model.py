"""The trained network the ``network`` scheme evaluates: its four arrays, checked, and its clear logits.

``logits = w2 @ (w1 @ x + b1)**2 + b2`` (scripts/train_network.py trains it; its card is beside it).
The service evaluates it under encryption; the app uses the same arrays in the clear only to show
how close the decrypted scores are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.shared.model_files import MODEL_DIR, NETWORK_FILE
from service.shared.specs import N_CLASSES, N_FEATURES

__all__ = ["NETWORK_MODEL_FILE", "NetworkWeights", "load_network"]

NETWORK_MODEL_FILE = MODEL_DIR / NETWORK_FILE


@dataclass(frozen=True)
class NetworkWeights:
    """784 -> H -> 10 with a square activation, float64."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    @property
    def hidden_units(self) -> int:
        return int(self.w1.shape[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The scores of one image (784,) or of a batch (n, 784), in float64."""
        hidden = np.asarray(x, dtype=np.float64) @ self.w1.T + self.b1
        return (hidden**2) @ self.w2.T + self.b2

    def _hidden_extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """Each hidden unit's highest and lowest value over [0, 1]^784 (all its positive or negative weights on)."""
        return (self.b1 + np.clip(self.w1, 0.0, None).sum(axis=1), self.b1 + np.clip(self.w1, None, 0.0).sum(axis=1))

    def hidden_bound(self) -> float:
        """The largest |hidden value| any input in [0, 1]^784 can give."""
        highest, lowest = self._hidden_extremes()
        return float(np.maximum(np.abs(highest), np.abs(lowest)).max())

    def logit_bound(self) -> float:
        """The largest |score| any input in [0, 1]^784 can give (each hidden unit at its own worst)."""
        highest, lowest = self._hidden_extremes()
        squares = np.maximum(highest**2, lowest**2)
        return float((np.abs(self.b2) + np.abs(self.w2) @ squares).max())


def load_network(path: str | Path = NETWORK_MODEL_FILE) -> NetworkWeights:
    """The network from its .npz (a model folder or the file itself), checked for shapes and finiteness."""
    path = Path(path)
    if path.is_dir():
        path = path / NETWORK_FILE
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: np.asarray(archive[name], dtype=np.float64) for name in ("w1", "b1", "w2", "b2")}
    hidden = arrays["w1"].shape[0] if arrays["w1"].ndim == 2 else -1
    expected = {"w1": (hidden, N_FEATURES), "b1": (hidden,), "w2": (N_CLASSES, hidden), "b2": (N_CLASSES,)}
    shapes = {name: array.shape for name, array in arrays.items()}
    if hidden < 1 or shapes != expected:
        raise ValueError(f"{path}: expected arrays shaped {expected}, got {shapes}")
    if not all(np.isfinite(array).all() for array in arrays.values()):
        raise ValueError(f"{path}: the network holds non-finite values")
    return NetworkWeights(**arrays)
