"""lib.digits: the digit that gets encrypted, drawn or picked from the held-out gallery."""

from __future__ import annotations

import numpy as np
import pytest
from mouse_redraw import Style, redraw

from lib.digits import DigitInput, gallery, pick_gallery_index
from lib.errors import InvalidInput
from lib.gallery import load_gallery
from lib.preprocess import to_mnist


def test_gallery_is_loaded_once_and_read_only() -> None:
    images, labels = gallery()
    assert gallery()[0] is images  # cached
    fresh_images, fresh_labels = load_gallery()
    assert np.array_equal(images, fresh_images) and np.array_equal(labels, fresh_labels)
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        labels[0] = 1


def test_pick_gallery_index_honours_the_label_and_avoids_the_digit_shown() -> None:
    labels = np.array([3, 7, 3, 7, 7])
    rng = np.random.default_rng(0)
    picks = {pick_gallery_index(labels, rng, label=7, avoid=1) for _ in range(50)}
    assert picks == {3, 4}  # only 7s, never the one shown
    assert pick_gallery_index(np.array([5, 3]), rng, label=3, avoid=1) == 1  # the only 3: shown again
    assert {pick_gallery_index(labels, rng) for _ in range(100)} == set(range(5))
    with pytest.raises(InvalidInput, match="no digit with label 9"):
        pick_gallery_index(labels, rng, label=9)


def test_digit_inputs() -> None:
    with pytest.raises(InvalidInput, match="draw a digit"):
        DigitInput.from_drawing(None)
    with pytest.raises(InvalidInput, match="draw a digit"):
        DigitInput.from_drawing(np.zeros((280, 280, 4), dtype=np.uint8))
    picked = DigitInput.from_gallery(0)
    assert picked.true_label is not None and picked.pixels.shape == (784,)
    images, labels = gallery()
    assert picked.true_label == int(labels[0]) and np.array_equal(picked.pixels, images[0])
    assert picked.source == "test digit" and picked.gallery_index == 0
    for index in (-1, len(labels)):
        with pytest.raises(InvalidInput, match=f"no test digit #{index}"):
            DigitInput.from_gallery(index)


def test_a_drawing_becomes_the_mnist_pixels_that_get_encrypted() -> None:
    images, _ = gallery()
    canvas = redraw(
        images[0],
        Style(stroke=20, height=0.7, place=(0.5, 0.5), background="black"),
        np.random.default_rng(0),
    )
    drawn = DigitInput.from_drawing(canvas)
    assert drawn.source == "drawing" and drawn.true_label is None and drawn.gallery_index is None
    assert drawn.pixels.dtype == np.float32 and drawn.pixels.shape == (784,)
    assert np.array_equal(drawn.pixels, np.asarray(to_mnist(canvas), dtype=np.float32))
