"""to_mnist: the same digit, however it is drawn, becomes the same MNIST-style 28x28 image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from lib.errors import InvalidInput
from lib.preprocess import EMPTY_MESSAGE, load_image_file, to_mnist

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def draw(
    box: tuple[int, int, int, int] = (80, 50, 200, 230),
    width: int = 18,
    size: int = 280,
    ink: int = 255,
    paper: int = 0,
) -> np.ndarray:
    """A '7' with a bar, drawn as a grayscale canvas; ``box`` is (left, top, right, bottom)."""
    img = Image.new("L", (size, size), paper)
    pen = ImageDraw.Draw(img)
    left, top, right, bottom = box
    mid_x, mid_y = (left + right) // 2, (top + bottom) // 2
    pen.line(
        [(left, top), (right, top), (mid_x - (right - left) // 6, bottom)],
        fill=ink,
        width=width,
        joint="curve",
    )
    pen.line(
        [(mid_x - (right - left) // 4, mid_y), (mid_x + (right - left) // 4, mid_y)], fill=ink, width=width
    )
    return np.asarray(img)


def rgba(gray: np.ndarray, transparent_background: bool, stroke_rgb: int) -> np.ndarray:
    """An RGBA canvas like streamlit-drawable-canvas returns: strokes opaque, background maybe transparent."""
    strokes = gray > 127
    out = np.zeros((*gray.shape, 4), dtype=np.uint8)
    background = 255 - stroke_rgb
    out[..., :3] = np.where(strokes[..., None], stroke_rgb, 0 if transparent_background else background)
    out[..., 3] = np.where(strokes, 255, 0 if transparent_background else 255)
    return out


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    return ndimage.center_of_mass(digit.reshape(28, 28))


def bbox(digit: np.ndarray, threshold: float = 0.1) -> tuple[int, int]:
    mask = digit.reshape(28, 28) > threshold
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return to_mnist(draw())


def test_output_shape_type_range(reference: np.ndarray) -> None:
    assert reference.shape == (784,)
    assert reference.dtype == np.float32
    assert reference.min() >= 0.0 and reference.max() == pytest.approx(1.0)
    assert reference.reshape(28, 28)[0].max() == 0 and reference.reshape(28, 28)[:, 0].max() == 0


def test_centre_of_mass_and_box_like_mnist(reference: np.ndarray) -> None:
    cy, cx = centre_of_mass(reference)
    assert abs(cy - 14) <= 0.75 and abs(cx - 14) <= 0.75
    assert max(bbox(reference)) in (19, 20, 21)


def test_light_background_is_inverted(reference: np.ndarray) -> None:
    dark_on_light = to_mnist(draw(ink=0, paper=255))
    np.testing.assert_allclose(dark_on_light, reference, atol=1e-5)


def test_grey_paper_and_grey_ink(reference: np.ndarray) -> None:
    pencil = to_mnist(draw(ink=60, paper=200))
    assert np.corrcoef(pencil, reference)[0, 1] > 0.99


@pytest.mark.parametrize("transparent", [True, False])
@pytest.mark.parametrize("stroke_rgb", [255, 0])
def test_rgba_canvas_transparent_or_opaque(reference: np.ndarray, transparent: bool, stroke_rgb: int) -> None:
    out = to_mnist(rgba(draw(), transparent, stroke_rgb))
    assert np.corrcoef(out, reference)[0, 1] > 0.99


def test_rgb_and_single_channel_inputs(reference: np.ndarray) -> None:
    gray = draw()
    np.testing.assert_allclose(to_mnist(np.stack([gray] * 3, axis=-1)), reference, atol=1e-5)
    np.testing.assert_allclose(to_mnist(gray[..., None]), reference, atol=1e-6)
    np.testing.assert_allclose(to_mnist(gray.astype(np.float64) / 255), reference, atol=1e-6)


def test_off_centre_drawing_is_centred(reference: np.ndarray) -> None:
    corner = to_mnist(draw(box=(20, 20, 140, 200)))  # the same strokes, moved to the top left
    np.testing.assert_allclose(corner, reference, atol=1e-5)
    bottom_right = to_mnist(draw(box=(140, 90, 260, 270)))
    np.testing.assert_allclose(bottom_right, reference, atol=1e-5)


def test_tiny_drawing_is_scaled_up() -> None:
    tiny = to_mnist(draw(box=(130, 120, 142, 138), width=2))
    assert max(bbox(tiny)) >= 19
    cy, cx = centre_of_mass(tiny)
    assert abs(cy - 14) <= 0.75 and abs(cx - 14) <= 0.75


def test_thick_strokes_stay_in_the_field(reference: np.ndarray) -> None:
    thick = to_mnist(draw(width=60))
    assert max(bbox(thick)) in (19, 20, 21)
    cy, cx = centre_of_mass(thick)
    assert abs(cy - 14) <= 0.75 and abs(cx - 14) <= 0.75
    assert (thick > 0.5).sum() > 1.5 * (reference > 0.5).sum()


def test_aspect_ratio_is_kept() -> None:
    one = np.zeros((280, 280), dtype=np.uint8)
    one[40:240, 130:150] = 255  # a tall bar: a "1"
    height, width = bbox(to_mnist(one))
    assert height >= 19 and width <= 4


@pytest.mark.parametrize(
    "blank",
    [
        np.zeros((280, 280, 4), dtype=np.uint8),  # transparent canvas, nothing drawn
        np.full((280, 280, 4), 255, dtype=np.uint8),  # opaque white canvas
        np.zeros((280, 280), dtype=np.uint8),
        np.full((280, 280, 3), 128, dtype=np.uint8),
    ],
)
def test_empty_canvas(blank: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="draw a digit first") as info:
        to_mnist(blank)
    assert info.value.message == EMPTY_MESSAGE


def test_a_speck_is_empty() -> None:
    speck = np.zeros((280, 280), dtype=np.uint8)
    speck[100:104, 100:104] = 255
    with pytest.raises(InvalidInput, match="draw a digit first"):
        to_mnist(speck)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((28, 28, 2), dtype=np.uint8),
        np.zeros((2, 28, 28, 3), dtype=np.uint8),
        np.zeros(784, dtype=np.uint8),
        np.full((28, 28), np.nan),
        np.full((28, 28), 2.0),
        np.zeros((28, 28), dtype=np.int64),
        np.zeros((1, 5), dtype=np.uint8),
    ],
)
def test_unusable_arrays(bad: np.ndarray) -> None:
    with pytest.raises(InvalidInput):
        to_mnist(bad)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist is not present")
def test_real_mnist_digits_survive_a_canvas_round_trip() -> None:
    """MNIST digits blown up to a 280x280 canvas come back close to the originals."""
    from lib.mnist_data import load_test_set

    images, _ = load_test_set(SHARED_MNIST)
    correlations = []
    for image in images[:200]:
        canvas = Image.fromarray((image.reshape(28, 28) * 255).astype(np.uint8)).resize(
            (280, 280), Image.Resampling.BILINEAR
        )
        correlations.append(np.corrcoef(to_mnist(np.asarray(canvas)), image)[0, 1])
    assert np.median(correlations) > 0.95
    assert np.mean(np.array(correlations) > 0.8) > 0.95


def test_load_image_file_modes(tmp_path: Path) -> None:
    gray = draw()
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(rgba(gray, True, 0)).save(tmp_path / "rgba.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb.jpg", quality=95)
    assert load_image_file(tmp_path / "gray.png").shape == (280, 280)
    assert load_image_file(tmp_path / "rgba.png").shape == (280, 280, 4)
    assert load_image_file(tmp_path / "rgb.jpg").shape == (280, 280, 3)
    reference = to_mnist(gray)
    for name in ("gray.png", "rgba.png", "rgb.jpg"):
        assert np.corrcoef(to_mnist(load_image_file(tmp_path / name)), reference)[0, 1] > 0.98


def test_load_image_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="No image file"):
        load_image_file(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InvalidInput, match="not an image"):
        load_image_file(tmp_path / "notes.png")
    with pytest.raises(InvalidInput, match="No image file"):
        load_image_file(tmp_path)
