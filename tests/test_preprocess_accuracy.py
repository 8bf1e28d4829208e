"""to_mnist + the committed model on mouse-style redrawings of real MNIST test digits.

The requirement: at least 88 % accuracy on mouse-style redrawings of MNIST test digits (varied
size, position, stroke width and background), where a naive resize of the canvas scores about
18 %; small, off-centre, thin and thick drawings must all work. ``mouse_redraw`` redraws real
MNIST test digits the way a person with a mouse would on the app's 280x280 canvas (see there).

The digits are a fixed, class-balanced sample of the whole real test set (``../shared/data/mnist``,
used for evaluation only); everything is seeded, so the numbers are the same on every run.
Run with ``-s`` to see them printed; they are also in every assertion message.

When written (model trained 2026-11-26 03:20 UTC, C=0.003, 92.8 % on these 1,000 original digits):
88.6 % here, the naive resize 14.9 %, every condition 87.5-88.5 %; other seeds of the same set gave
89.0-90.1 %. The margin is small and what matters most is how shaky the hand is (Style.jitter):
91.4 % without jitter, 90.9 % at half, 86.1 % at one and a half times the default. The previous
to_mnist (no stroke-width normalisation, whole-pixel centring) scored 86.8 % here, 79 % on thin strokes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mouse_redraw import CANVAS, Style, max_stroke_for, naive_resize, random_style, redraw, redraw_many

from lib.errors import InvalidInput
from lib.mnist_data import SHARED_TEST_SET, load_test_set
from lib.preprocess import EMPTY_MESSAGE, to_mnist
from service.shared.network_model import NETWORK_MODEL_FILE, load_network

MODEL_PATH = Path(__file__).resolve().parents[1] / "service" / "model" / "mnist" / "1" / "mnist_linear.npz"

TARGET = 0.88  # the requirement, on the full mixed set (the linear model)
NETWORK_TARGET = 0.95  # issue 11's, for the network on the same set
CONDITION_TARGET = 0.80  # each condition alone, on a smaller set
NAIVE_CEILING = 0.50  # a plain resize must do far worse, or the set is not mouse-style at all
PER_CLASS = 100  # 1,000 digits in all
CONDITION_PER_CLASS = 20  # 200 digits per condition
SEED = 2024

pytestmark = [
    pytest.mark.skipif(not SHARED_TEST_SET.is_dir(), reason=f"the real MNIST test set is not at {SHARED_TEST_SET}"),
    pytest.mark.slow,  # whole-test-set sweeps
]


def balanced_sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` digits of each class, drawn at random from the whole set (sorted)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == digit), per_class, replace=False) for digit in range(10)]
    return np.sort(np.concatenate(picks))


@pytest.fixture(scope="module")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    return load_test_set(SHARED_TEST_SET)


@pytest.fixture(scope="module")
def model() -> tuple[np.ndarray, np.ndarray]:
    if not MODEL_PATH.is_file():
        pytest.fail(f"{MODEL_PATH} is missing: the committed model is what this test measures")
    with np.load(MODEL_PATH, allow_pickle=False) as archive:
        coef = np.asarray(archive["coef"], dtype=np.float64)
        intercept = np.asarray(archive["intercept"], dtype=np.float64)
    assert coef.shape == (10, 784) and intercept.shape == (10,)
    return coef, intercept


def accuracy(inputs: np.ndarray, labels: np.ndarray, model: tuple[np.ndarray, np.ndarray]) -> float:
    coef, intercept = model
    predictions = np.argmax(np.asarray(inputs, dtype=np.float64) @ coef.T + intercept, axis=1)
    return float(np.mean(predictions == labels))


@pytest.fixture(scope="module")
def redrawn(mnist_test) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Style], float]:
    """The 1,000 mouse-style redrawings: (their labels, to_mnist of each, the naive resize, styles, seconds)."""
    images, labels = mnist_test
    picked = balanced_sample(labels, PER_CLASS, SEED)
    start = time.perf_counter()
    normalised, naive, styles = [], [], []
    for _, style, canvas in redraw_many(images[picked], SEED):
        normalised.append(to_mnist(canvas))
        naive.append(naive_resize(canvas))
        styles.append(style)
    return labels[picked], np.array(normalised), np.array(naive), styles, time.perf_counter() - start


def test_mouse_redrawings_with_the_network_reach_95_percent(mnist_test, redrawn) -> None:
    """Issue 11: to_mnist with the network scores at least 95 % on the same mouse-style redrawings."""
    truth, normalised, naive, _, _ = redrawn
    images, labels = mnist_test
    network = load_network(NETWORK_MODEL_FILE)
    ours = float(np.mean(network.logits(normalised).argmax(axis=1) == truth))
    plain = float(np.mean(network.logits(naive).argmax(axis=1) == truth))
    picked = balanced_sample(labels, PER_CLASS, SEED)
    original = float(np.mean(network.logits(images[picked]).argmax(axis=1) == truth))
    report = (f"network on {len(truth)} mouse-style redrawings: to_mnist {ours:.1%}, naive resize {plain:.1%} "
              f"(the original digits: {original:.1%})")
    print("\n" + report)
    assert plain < NAIVE_CEILING, report
    assert ours >= NETWORK_TARGET, f"below the {NETWORK_TARGET:.0%} target: {report}"


def test_mouse_redrawings_reach_the_target(mnist_test, model, redrawn) -> None:
    images, labels = mnist_test
    picked = balanced_sample(labels, PER_CLASS, SEED)
    truth, normalised, naive, styles, seconds = redrawn
    ours = accuracy(np.array(normalised), truth, model)
    plain = accuracy(naive, truth, model)
    original = accuracy(images[picked], truth, model)
    report = (
        f"{len(picked)} mouse-style redrawings: to_mnist {ours:.1%}, naive 280->28 resize {plain:.1%} "
        f"(the original 28x28 digits: {original:.1%}; {seconds:.0f} s)"
    )
    print("\n" + report)
    # The set really is varied: every background, small and large digits, thin and thick strokes.
    assert {s.background for s in styles} == {"black", "white", "transparent"}
    heights = np.array([s.height for s in styles])
    strokes = np.array([s.stroke for s in styles])
    assert heights.min() < 0.35 and heights.max() > 0.85 and strokes.min() <= 10 and strokes.max() >= 35
    assert plain < NAIVE_CEILING, f"the naive resize should fail on mouse-style drawings: {report}"
    assert ours >= TARGET, f"below the {TARGET:.0%} target: {report}"


def _edge(rng: np.random.Generator) -> float:
    """A place near one side of the canvas (see Style.place)."""
    return float(rng.uniform(0.0, 0.1) if rng.uniform() < 0.5 else rng.uniform(0.9, 1.0))


def _thick(rng: np.random.Generator) -> Style:
    height = float(rng.uniform(0.45, 0.60))
    thickest = max_stroke_for(height)
    return random_style(rng, height=height, stroke=int(rng.integers(round(0.8 * thickest), thickest + 1)))


CONDITIONS: dict[str, Callable[[np.random.Generator], Style]] = {
    # 30-40 % of the canvas (84-112 px tall), any fitting brush
    "small": lambda rng: random_style(rng, height=float(rng.uniform(0.30, 0.40))),
    # pushed into a corner or against an edge, well away from the centre
    "off-centre": lambda rng: random_style(
        rng, height=float(rng.uniform(0.30, 0.60)), place=(_edge(rng), _edge(rng))
    ),
    # the thinnest brush (8 px) on a large digit (168-252 px): 3-5 % of its height, MNIST's is ~11 %
    "thin": lambda rng: random_style(rng, height=float(rng.uniform(0.60, 0.90)), stroke=8),
    # a 25-40 px brush on a 126-168 px digit: 20-25 % of its height, more than almost any MNIST digit
    "thick": _thick,
    # streamlit-drawable-canvas with background_color="": untouched pixels have alpha 0
    "transparent background": lambda rng: random_style(rng, background="transparent"),
    # black ink on a white canvas
    "dark on light": lambda rng: random_style(rng, background="white"),
}


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_each_condition(mnist_test, model, condition: str) -> None:
    images, labels = mnist_test
    picked = balanced_sample(labels, CONDITION_PER_CLASS, SEED + 1)
    normalised = [to_mnist(canvas) for _, _, canvas in redraw_many(images[picked], SEED, CONDITIONS[condition])]
    ours = accuracy(np.array(normalised), labels[picked], model)
    report = f"{condition}: {ours:.1%} of {len(picked)} mouse-style redrawings"
    print("\n" + report)
    assert ours >= CONDITION_TARGET, f"below {CONDITION_TARGET:.0%}: {report}"


def test_redrawings_are_canvas_like_and_deterministic(mnist_test) -> None:
    """The helper itself: the canvas the app gets, at the size and place asked for, the same every time."""
    images, _ = mnist_test
    assert all(
        np.array_equal(a, b)
        for (_, _, a), (_, _, b) in zip(redraw_many(images[:5], 5), redraw_many(images[:5], 5), strict=True)
    )
    corners = {"black": (0, 0, 0, 255), "white": (255, 255, 255, 255), "transparent": (0, 0, 0, 0)}
    for background, untouched in corners.items():
        style = Style(height=0.3, stroke=12, place=(1.0, 1.0), background=background)
        canvas = redraw(images[1], style, np.random.default_rng(0))  # a "2": taller than wide
        assert canvas.shape == (CANVAS, CANVAS, 4) and canvas.dtype == np.uint8
        assert tuple(canvas[0, 0]) == untouched  # top left untouched: the digit is in the bottom right
        coverage = canvas[..., 3] if background == "transparent" else canvas[..., :3].mean(axis=-1)
        if background == "white":
            coverage = 255 - coverage
        ink = coverage > 127
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        assert abs((rows[-1] - rows[0] + 1) - 0.3 * CANVAS) <= 4
        assert rows[-1] >= CANVAS - 5 and cols[-1] >= CANVAS - 5
        assert ((coverage > 0) & (coverage < 255)).sum() > 100  # anti-aliased edges


def test_empty_canvas_gives_a_clear_message() -> None:
    for blank in (np.zeros((280, 280, 4), np.uint8), np.full((280, 280, 4), 255, np.uint8)):
        with pytest.raises(InvalidInput) as info:
            to_mnist(blank)
        assert info.value.message == EMPTY_MESSAGE == "The canvas is empty: draw a digit first."
