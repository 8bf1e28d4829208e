"""The digit that gets encrypted: a drawing, or a held-out MNIST digit from the gallery.

``lib.gallery`` stores and reads the gallery file; this module keeps it in memory (read-only),
picks random digits from it, and turns either source into the 784 pixels of a ``DigitInput``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from lib.errors import InvalidInput
from lib.gallery import load_gallery
from lib.preprocess import EMPTY_MESSAGE, to_mnist

__all__ = ["DigitInput", "gallery", "pick_gallery_index"]


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
