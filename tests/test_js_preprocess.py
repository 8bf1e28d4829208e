"""The browser's to_mnist (frontend/browser_encryption/src/to_mnist.js) gives the digit lib.preprocess does.

The browser normalises the drawing itself, so its port must hand the model the same 784 values the
Python app computes from the same canvas. One Node process (tests/node_to_mnist.mjs) runs the JS on
every case below, and each result is compared with ``to_mnist`` on the same RGBA array:

- synthetic drawings on the app's 280x280 canvas: white on black, black on white, a transparent
  background (alpha 0, what a fresh HTML canvas gives) under white or the canvas's default black
  pen, a coloured pen, faint and half-transparent strokes, thin (6 px) strokes that get thickened,
  40 px ones that get thinned, small digits in the corners, a dot, a speck, empty canvases, and
  shapes that reach the edge cases of centring and of Python's round();
- real MNIST test digits (../shared/data/mnist) redrawn with a mouse-style round pen
  (tests/mouse_redraw.py) in those styles, and upscaled as they are (their own strokes, kept);
- other sizes: a 600x400 canvas (its crop goes through the box reduction first), tiny images where
  the 4-pixel minimum decides, and an image too small to use;
- a buffer of the wrong length, which the JS must reject.

Parity (the *_match_python tests): every value within TOLERANCE, and the same message wherever
Python raises InvalidInput. test_digits_are_bit_identical asks for more, the same float32 bits, which
held on every case when written. It is a separate test because a last-bit drift (about 6e-8) can
come without a porting mistake: numpy's BLAS may fuse the luminance's multiply-adds where the JS
rounds each step, Math.sin may differ from C's sin in the last bit (Lanczos weights), and another
Pillow may order its two resampling passes differently.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from mouse_redraw import CANVAS, random_style, redraw
from PIL import Image, ImageDraw

from lib import preprocess
from lib.errors import InvalidInput
from lib.mnist_data import SHARED_TEST_SET, load_test_set
from lib.preprocess import EMPTY_MESSAGE, to_mnist

ROOT = Path(__file__).resolve().parents[1]
NODE_CLI = ROOT / "tests" / "node_to_mnist.mjs"
TOLERANCE = 1e-6  # per value, a few float32 rounding steps (see the module doc string)
SUPERSAMPLE = 4  # synthetic strokes are drawn at 4x and reduced: anti-aliased like a browser's
WHITE, BLACK = (255, 255, 255), (0, 0, 0)

Point = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Case:
    """One canvas: ``rgba`` (H, W, 4) uint8 as getImageData gives it, ``kind`` for the report."""

    name: str
    rgba: np.ndarray
    kind: str  # "synthetic", "mnist" or "size"


# --- building canvases ---------------------------------------------------------------------------


def coverage(
    strokes: Sequence[Sequence[Point]], width: float, size: tuple[int, int] = (CANVAS, CANVAS)
) -> np.ndarray:
    """Ink coverage in [0, 1] of a (height, width) canvas: round-pen polylines (one point: a dot)."""
    height, wide = size
    img = Image.new("L", (wide * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    pen = ImageDraw.Draw(img)
    radius = width * SUPERSAMPLE / 2
    for stroke in strokes:
        points = [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in stroke]
        if len(points) > 1:
            pen.line(points, fill=255, width=round(width * SUPERSAMPLE), joint="curve")
        for x, y in points:  # round caps and joints
            pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    return np.asarray(img.reduce(SUPERSAMPLE), dtype=np.float64) / 255.0


def paint(
    cover: np.ndarray,
    ink: tuple[int, int, int] = WHITE,
    paper: tuple[int, int, int] | None = BLACK,
    opacity: float = 1.0,
) -> np.ndarray:
    """RGBA uint8 of ``ink`` over ``paper``; ``paper=None`` is a transparent canvas (alpha 0, as the
    browser keeps it: colour (0, 0, 0) where nothing was drawn, the pen's colour under any ink)."""
    alpha = cover * opacity
    out = np.zeros((*cover.shape, 4), dtype=np.uint8)
    if paper is None:
        out[..., :3] = np.where(alpha[..., None] > 0, np.array(ink), 0)
        out[..., 3] = np.round(alpha * 255)
    else:
        blend = np.array(paper) * (1 - alpha[..., None]) + np.array(ink) * alpha[..., None]
        out[..., :3] = np.round(blend)
        out[..., 3] = 255
    return out


def shape(name: str, left: float, top: float, size: float) -> list[list[Point]]:
    """A hand-drawn-looking digit as polylines, in a ``size`` box at (left, top)."""
    unit: dict[str, list[list[Point]]] = {
        "seven": [[(0.15, 0.05), (0.85, 0.05), (0.4, 0.95)], [(0.35, 0.5), (0.75, 0.5)]],
        "one": [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
        "four": [[(0.6, 0.95), (0.6, 0.05), (0.1, 0.65), (0.9, 0.65)]],
        "zero": [[(0.5 + 0.3 * np.sin(t), 0.5 - 0.45 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 40)]],
        "two": [[(0.15, 0.25), (0.35, 0.05), (0.7, 0.08), (0.8, 0.35), (0.15, 0.95), (0.9, 0.95)]],
        "tee": [[(0.05, 0.05), (0.95, 0.05)], [(0.5, 0.05), (0.5, 0.95)]],
        "upside-down tee": [[(0.05, 0.95), (0.95, 0.95)], [(0.5, 0.05), (0.5, 0.95)]],
    }
    return [[(left + x * size, top + y * size) for x, y in stroke] for stroke in unit[name]]


def synthetic_cases() -> list[Case]:
    """Drawings on the 280x280 canvas that cover every step and branch of to_mnist."""
    big_seven = coverage(shape("seven", 40, 40, 200), 16)
    canvases = {
        "seven white on black": paint(big_seven),
        "seven black on white": paint(big_seven, BLACK, WHITE),
        "seven white on transparent": paint(big_seven, WHITE, None),
        "seven default black pen on transparent": paint(big_seven, BLACK, None),
        "seven blue pen on yellow": paint(big_seven, (30, 60, 200), (250, 240, 120)),
        "seven faint gray pen": paint(big_seven, (90, 90, 90)),
        "seven half-transparent pen": paint(big_seven, WHITE, None, opacity=0.5),
        "seven in the colours, alpha 0 everywhere": paint(big_seven) * np.array([1, 1, 1, 0], dtype=np.uint8),
        "one thin 6px (thickened)": paint(coverage(shape("one", 60, 30, 220), 6)),
        "zero thin 6px black on white (thickened)": paint(
            coverage(shape("zero", 30, 30, 220), 6), BLACK, WHITE
        ),
        "two thin 6px transparent (thickened)": paint(coverage(shape("two", 50, 40, 180), 6), WHITE, None),
        "four 40px (thinned)": paint(coverage(shape("four", 70, 70, 140), 40)),
        "zero 40px black on white (thinned)": paint(coverage(shape("zero", 60, 60, 160), 40), BLACK, WHITE),
        "two 40px transparent (thinned)": paint(coverage(shape("two", 50, 50, 170), 40), BLACK, None),
        "small seven top-left corner": paint(coverage(shape("seven", 3, 3, 45), 8)),
        "small two bottom-right corner": paint(coverage(shape("two", 236, 236, 40), 5), BLACK, WHITE),
        "small one top-right transparent": paint(coverage(shape("one", 240, 4, 36), 4), WHITE, None),
        "seven off the canvas edge": paint(coverage(shape("seven", 150, -40, 200), 20)),
        "single dot": paint(coverage([[(140.0, 140.0)]], 20)),
        "single dot transparent": paint(coverage([[(60.5, 200.25)]], 12), WHITE, None),
        # so top- or bottom-heavy that centring its mass would push it out of the 28x28 field
        "top-heavy tee": paint(coverage(shape("tee", 40, 40, 200), 24)),
        "bottom-heavy upside-down tee": paint(
            coverage(shape("upside-down tee", 40, 40, 200), 24), BLACK, WHITE
        ),
        # a crop of 40x5, fitted to 20x2.5: Python's round() gives 2 (half to even), not 3
        "hard-edged 5x40 bar": paint(np.pad(np.ones((40, 5)), ((100, 140), (120, 155)))),
        "speck (empty)": paint(coverage([[(140.0, 140.0)]], 3)),
        "empty black": paint(np.zeros((CANVAS, CANVAS))),
        "empty white": paint(np.zeros((CANVAS, CANVAS)), BLACK, WHITE),
        "empty transparent": np.zeros((CANVAS, CANVAS, 4), dtype=np.uint8),
    }
    return [Case(name, rgba, "synthetic") for name, rgba in canvases.items()]


def mnist_cases() -> list[Case]:
    """Real MNIST test digits: redrawn with a mouse-style pen in varied styles, and upscaled as they are."""
    images, labels = load_test_set(SHARED_TEST_SET)
    picks = [int(i) for digit in range(10) for i in np.flatnonzero(labels == digit)[:4]]
    styles: list[dict[str, object]] = [
        {"background": "black"},
        {"background": "white"},
        {"background": "transparent"},
        {"stroke": 6, "height": 0.8},  # thin pen: thickened
        {"stroke": 40, "height": 0.45},  # thick pen: thinned
        {"stroke": 8, "height": 0.3, "place": (0.0, 0.0)},  # small, top-left corner
        {"stroke": 8, "height": 0.3, "place": (1.0, 1.0)},  # small, bottom-right corner
        {},  # anything mouse_redraw's random styles allow
    ]
    cases = []
    for n, index in enumerate(picks[:32]):
        rng = np.random.default_rng([7, index])
        style = random_style(rng, **styles[n % len(styles)])
        cases.append(Case(f"mnist #{index} redrawn {style}", redraw(images[index], style, rng), "mnist"))
    for n, index in enumerate(picks[32:40]):  # MNIST's own strokes, upscaled 8x: left as they are
        big = Image.fromarray(images[index].reshape(28, 28)).resize((224, 224), Image.Resampling.BILINEAR)
        cover = np.zeros((CANVAS, CANVAS))
        cover[20 + 4 * n : 244 + 4 * n, 30:254] = np.clip(np.asarray(big, dtype=np.float64), 0.0, 1.0)
        ink, paper = [(WHITE, BLACK), (BLACK, WHITE), (WHITE, None), (BLACK, None)][n % 4]
        cases.append(Case(f"mnist #{index} upscaled 8x, {ink} on {paper}", paint(cover, ink, paper), "mnist"))
    return cases


def size_cases() -> list[Case]:
    """Other sizes: 600x400 (its crop is reduced before the distance transforms) and tiny images."""
    wide = (400, 600)
    return [
        Case("600x400 seven", paint(coverage(shape("seven", 150, 20, 360), 30, wide), BLACK, WHITE), "size"),
        Case("600x400 thin one", paint(coverage(shape("one", 100, 10, 380), 5, wide)), "size"),
        Case("2x2", paint(np.array([[0.0, 1.0], [1.0, 1.0]])), "size"),
        # on a small image the 4-pixel minimum, not the 0.05 % one, decides what is empty
        Case("20x20 three ink pixels (empty)", paint(np.pad(np.ones((1, 3)), ((9, 10), (8, 9)))), "size"),
        Case("20x20 four ink pixels", paint(np.pad(np.ones((2, 2)), 9)), "size"),
        Case("1x5 too small", paint(np.ones((5, 1))), "size"),
    ]


# --- running both ---------------------------------------------------------------------------------


def python_digit(rgba: np.ndarray) -> tuple[np.ndarray | str, str]:
    """Python's result (784 floats, or the InvalidInput message) and what it did to the strokes."""
    stroke = ["-"]
    original = preprocess._normalise_stroke

    def spy(crop: np.ndarray) -> np.ndarray:
        out = original(crop)
        grew = max(out.shape) - max(crop.shape)
        stroke[0] = "kept" if out is crop else "thickened" if grew > 0 else "thinned"
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preprocess, "_normalise_stroke", spy)
        try:
            return to_mnist(rgba), stroke[0]
        except InvalidInput as exc:
            return str(exc), stroke[0]


def run_node(images: list[dict[str, object]]) -> list[list[float] | dict[str, str]]:
    """to_mnist.js on every image, in one Node process."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (node) is not on PATH: the browser's to_mnist.js cannot be run")
    done = subprocess.run(
        [node, "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", str(NODE_CLI)],
        input=json.dumps({"images": images}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{NODE_CLI.name} failed:\n{done.stderr}"
    results = json.loads(done.stdout)["results"]
    assert len(results) == len(images)
    return results


def encoded(rgba: np.ndarray) -> dict[str, object]:
    height, width = rgba.shape[:2]
    return {"width": width, "height": height, "rgba_b64": base64.b64encode(rgba.tobytes()).decode("ascii")}


@dataclasses.dataclass(frozen=True)
class Outcome:
    case: Case
    python: np.ndarray | str
    js: np.ndarray | str
    stroke: str  # what Python's _normalise_stroke did: kept, thickened, thinned, or "-" (not reached)


WRONG_LENGTH = {
    "width": CANVAS,
    "height": CANVAS,
    "rgba_b64": base64.b64encode(bytes(CANVAS * CANVAS * 3)).decode(),
}


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome | str]:
    """Every case through Python and (one process) Node; the wrong-length buffer's JS error too."""
    cases = synthetic_cases() + size_cases()
    if SHARED_TEST_SET.is_dir():
        cases += mnist_cases()
    results = run_node([encoded(case.rgba) for case in cases] + [WRONG_LENGTH])
    out: dict[str, Outcome | str] = {}
    for case, js in zip(cases, results[:-1], strict=True):
        python, stroke = python_digit(case.rgba)
        js_digit = js["error"] if isinstance(js, dict) else np.asarray(js, dtype=np.float32)
        out[case.name] = Outcome(case, python, js_digit, stroke)
    wrong = results[-1]
    out["wrong length"] = wrong["error"] if isinstance(wrong, dict) else "no error"
    return out


def check(outcomes: list[Outcome]) -> float:
    """Assert JS == Python on every outcome (values within TOLERANCE, or the same error); the max diff."""
    problems, worst, identical = [], 0.0, 0
    for o in outcomes:
        if isinstance(o.python, str) or isinstance(o.js, str):
            if not (isinstance(o.python, str) and isinstance(o.js, str) and o.python == o.js):
                problems.append(f"{o.case.name}: Python {_describe(o.python)}, JS {_describe(o.js)}")
            continue
        assert o.js.shape == (784,) and o.js.dtype == np.float32
        diff = float(np.abs(o.js.astype(np.float64) - o.python.astype(np.float64)).max())
        worst = max(worst, diff)
        identical += bool(np.array_equal(o.js, o.python))
        if diff > TOLERANCE:
            problems.append(f"{o.case.name}: max difference {diff:.3g}")
    print(f"\n{len(outcomes)} canvases, {identical} digits bit-identical, max |JS - Python| = {worst:.3g}")
    assert not problems, "to_mnist.js differs from lib.preprocess.to_mnist:\n" + "\n".join(problems)
    return worst


def _describe(result: np.ndarray | str) -> str:
    return f"raised {result!r}" if isinstance(result, str) else "gave a digit"


def of_kind(outcomes: dict[str, Outcome | str], kind: str) -> list[Outcome]:
    return [o for o in outcomes.values() if isinstance(o, Outcome) and o.case.kind == kind]


# --- the tests --------------------------------------------------------------------------------------


def test_synthetic_drawings_match_python(outcomes):
    cases = of_kind(outcomes, "synthetic")
    check(cases)
    strokes = {o.stroke for o in cases}
    assert {"kept", "thickened", "thinned"} <= strokes, (
        f"the cases must exercise every stroke branch: {strokes}"
    )


@pytest.mark.skipif(
    not SHARED_TEST_SET.is_dir(), reason=f"the real MNIST test set is not at {SHARED_TEST_SET}"
)
def test_mnist_digits_match_python(outcomes):
    cases = of_kind(outcomes, "mnist")
    check(cases)
    assert {"kept", "thickened", "thinned"} <= {o.stroke for o in cases}
    on_canvas = [
        o for o in outcomes.values() if isinstance(o, Outcome) and o.case.rgba.shape[:2] == (CANVAS, CANVAS)
    ]
    assert len(on_canvas) >= 40


def test_other_sizes_match_python(outcomes):
    cases = of_kind(outcomes, "size")
    check(cases)
    assert outcomes["1x5 too small"].js == "The image is too small (5x1 pixels)."


def test_digits_are_bit_identical(outcomes):
    """Stricter than parity: the same float32 bits. Failing here alone (the parity tests pass) means a
    last-bit drift, harmless to the model but a sign that a library's numerics changed (e.g. the order
    in which Pillow runs its two resampling passes, see pillowResize in to_mnist.js)."""
    digits = [o for o in outcomes.values() if isinstance(o, Outcome) and not isinstance(o.python, str)]
    drifted = [o.case.name for o in digits if not np.array_equal(o.js, o.python)]
    assert not drifted, f"{len(drifted)} of {len(digits)} digits differ in the last bits: {drifted}"


def test_empty_canvases_give_the_empty_message(outcomes):
    for name in ("empty black", "empty white", "empty transparent", "speck (empty)"):
        assert outcomes[name].python == EMPTY_MESSAGE
        assert outcomes[name].js == EMPTY_MESSAGE, name


def test_a_wrong_length_buffer_is_rejected(outcomes):
    expected = f"A {CANVAS}x{CANVAS} RGBA image needs {CANVAS * CANVAS * 4} bytes (width*height*4), got "
    assert outcomes["wrong length"] == expected + f"{CANVAS * CANVAS * 3}."
