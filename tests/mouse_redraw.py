"""Mouse-style redrawings of real MNIST digits, as a person would draw them on the app's canvas.

The app's canvas (streamlit-drawable-canvas) is 280x280, white strokes on black by default, with a
stroke-width slider from 8 to 40 px. A person redrawing an MNIST digit there traces its centre line
with a round brush of one fixed width, at whatever size and place suits them. This module does the
same to a real 28x28 MNIST digit:

1. upsample it 4x, threshold it and thin it to a one-pixel skeleton (Zhang-Suen, in numpy);
2. trace the skeleton with a round brush: a line between every pair of 8-connected skeleton pixels
   and a round dab on each, so the pen's width is uniform whatever the original's was;
3. with a slight hand jitter (small rotation, shear and aspect change plus a smooth wobble), at a
   random ink height of 30-90 % of the canvas, a random place (off-centre allowed, fully inside), a
   random stroke width of 8-40 px (at most a quarter of the digit's height, as nobody draws a small
   digit with a huge brush), drawn 4x supersampled so the edges are anti-aliased like a browser's
   (the path is smoothed first, as the canvas smooths a mouse path);
4. on a random background: opaque black with white ink, opaque white with black ink, or
   transparent (alpha 0) with white ink, which is what the canvas returns for ``background_color=""``.

Everything is deterministic given the seed. :func:`random_style` draws a :class:`Style` (any field
can be forced, to build one condition's set); :func:`redraw` renders a digit in a style, returning
the RGBA uint8 array ``(280, 280, 4)`` that the app hands to ``to_mnist``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "CANVAS",
    "MAX_STROKE",
    "MIN_STROKE",
    "Style",
    "max_stroke_for",
    "mouse_strokes",
    "naive_resize",
    "random_style",
    "redraw",
    "redraw_many",
    "skeleton",
    "skeleton_paths",
]

CANVAS = 280
MIN_STROKE, MAX_STROKE = 8, 40
BACKGROUNDS = ("black", "white", "transparent")
_UPSAMPLE = 4  # skeletonise the digit on a 112x112 grid for smooth strokes
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges
_THRESHOLD = 0.45
_MARGIN = 2  # px kept clear at the canvas edge
# The hand's jitter at amount 1: rotation (degrees), shear, log aspect change, wobble (share of size).
ROTATION, SHEAR, ASPECT, WOBBLE = 8.0, 0.12, 0.10, 0.015


@dataclasses.dataclass(frozen=True)
class Style:
    """How one digit is drawn.

    ``height``: ink height as a fraction of the canvas; ``stroke``: brush width in canvas pixels;
    ``place``: (x, y) in [0, 1], where the ink's box sits in the room left around it (0 = touching
    the left/top margin, 1 = the right/bottom one, 0.5 = centred); ``background``: one of BACKGROUNDS;
    ``jitter``: how shaky the hand is (0 = a perfect copy of the skeleton, 1 = the default, up to
    ROTATION degrees of rotation, SHEAR, ASPECT and a wobble of WOBBLE of the digit's size).
    A digit wider than tall may come out less than ``height`` tall: it is shrunk to fit the canvas.
    """

    height: float
    stroke: int
    place: tuple[float, float]
    background: str
    jitter: float = 1.0


def max_stroke_for(height: float) -> int:
    """The widest brush that makes sense for a digit ``height`` (fraction of the canvas) tall."""
    return int(max(MIN_STROKE, min(MAX_STROKE, 0.25 * height * CANVAS)))


def random_style(rng: np.random.Generator, **forced: object) -> Style:
    """A random Style; keyword arguments (height, stroke, place, background, jitter) force those fields."""
    height = float(forced.get("height", rng.uniform(0.30, 0.90)))
    stroke = int(forced.get("stroke", rng.integers(MIN_STROKE, max_stroke_for(height) + 1)))
    place = forced.get("place", (float(rng.uniform()), float(rng.uniform())))
    background = str(forced.get("background", BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]))
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, not {background!r}")
    jitter = float(forced.get("jitter", 1.0))
    return Style(height, stroke, tuple(place), background, jitter)  # type: ignore[arg-type]


# --- skeleton ------------------------------------------------------------------------------------


def _neighbours(img: np.ndarray) -> list[np.ndarray]:
    """P2..P9 of Zhang-Suen (N, NE, E, SE, S, SW, W, NW) for every pixel, zero outside."""
    p = np.pad(img, 1)
    h, w = img.shape
    offsets = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]
    return [p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in offsets]


def _removable_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each 8-neighbourhood code (bit i = P(i+2)), whether Zhang-Suen's two sub-steps remove the pixel."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1  # (256, 8): P2..P9
    p2, p4, p6, p8 = bits[:, 0], bits[:, 2], bits[:, 4], bits[:, 6]
    count = bits.sum(axis=1)
    transitions = ((bits == 0) & (np.roll(bits, -1, axis=1) == 1)).sum(axis=1)  # P2..P9, back to P2
    common = (count >= 2) & (count <= 6) & (transitions == 1)
    first = common & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
    second = common & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
    return first, second


_REMOVABLE = _removable_tables()


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean mask to a one-pixel-wide 8-connected skeleton."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask.copy()
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    img = mask[box].astype(np.uint8)
    changed = True
    while changed:
        changed = False
        for table in _REMOVABLE:
            code = sum(neighbour << bit for bit, neighbour in enumerate(_neighbours(img)))
            remove = (img == 1) & table[code]
            if remove.any():
                img[remove] = 0
                changed = True
    out = np.zeros_like(mask, dtype=bool)
    out[box] = img.astype(bool)
    return out


def skeleton(digit: np.ndarray) -> np.ndarray:
    """The centre line of a 28x28 (or 784) MNIST digit, as a boolean mask on a 112x112 grid."""
    image = np.asarray(digit, dtype=np.float32).reshape(28, 28)
    size = 28 * _UPSAMPLE
    big = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    mask = big > _THRESHOLD * max(float(big.max()), 1e-6)
    return _thin(mask)


def _segments(skel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The skeleton's pixels (n, 2) as (x, y) and the index pairs (m, 2) of 8-connected neighbours."""
    ys, xs = np.nonzero(skel)
    index = -np.ones(skel.shape, dtype=np.int64)
    index[ys, xs] = np.arange(len(ys))
    padded = np.pad(index, 1, constant_values=-1)
    pairs = []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each neighbour pair once
        other = padded[1 + ys + dy, 1 + xs + dx]
        keep = other >= 0
        pairs.append(np.stack([np.flatnonzero(keep), other[keep]], axis=1))
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    return points, np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


# --- drawing -------------------------------------------------------------------------------------


def _smooth(points: np.ndarray, pairs: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Smooth the skeleton's pixel staircase along the strokes, as the canvas smooths a mouse path."""
    p = points.copy()
    for _ in range(rounds):
        total = np.zeros_like(p)
        count = np.zeros(len(p))
        for a, b in ((0, 1), (1, 0)):
            np.add.at(total, pairs[:, a], p[pairs[:, b]])
            np.add.at(count, pairs[:, a], 1)
        has = count > 0
        p[has] = 0.5 * p[has] + 0.5 * total[has] / count[has, None]
    return p


def _jitter(points: np.ndarray, rng: np.random.Generator, amount: float = 1.0) -> np.ndarray:
    """A hand's imprecision: a small rotation, shear and aspect change, and a smooth wobble (see Style)."""
    centre = points.mean(axis=0)
    p = points - centre
    extent = max(float(np.ptp(points[:, 1])), float(np.ptp(points[:, 0])), 1.0)
    angle = np.deg2rad(amount * rng.uniform(-ROTATION, ROTATION))
    shear = amount * rng.uniform(-SHEAR, SHEAR)
    aspect = np.exp(amount * rng.uniform(-ASPECT, ASPECT))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    affine = rotate @ np.array([[aspect, shear], [0.0, 1.0 / aspect]])
    p = p @ affine.T
    wobble = np.zeros_like(p)
    for axis in (0, 1):
        for _ in range(2):
            freq = rng.uniform(0.5, 1.5) * 2 * np.pi / extent
            direction = rng.normal(size=2)
            direction /= np.linalg.norm(direction)
            wobble[:, axis] += (
                amount * WOBBLE * extent * np.sin(freq * (p @ direction) + rng.uniform(0, 2 * np.pi))
            )
    return p + wobble


def _coverage(points: np.ndarray, pairs: np.ndarray, stroke: float) -> np.ndarray:
    """Ink coverage in [0, 1] of a CANVASxCANVAS canvas: a round brush along the skeleton."""
    ss = _SUPERSAMPLE
    img = Image.new("L", (CANVAS * ss, CANVAS * ss), 0)
    pen = ImageDraw.Draw(img)
    big = points * ss
    width = max(1, round(stroke * ss))
    radius = stroke * ss / 2
    xy = [tuple(point) for point in big.tolist()]
    for a, b in pairs.tolist():
        pen.line([xy[a], xy[b]], fill=255, width=width)
    for x, y in xy:
        pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    small = img.reduce(ss)  # the mean of each ss x ss block: anti-aliased edges
    return np.asarray(small, dtype=np.float64) / 255.0


def _canvas(coverage: np.ndarray, background: str) -> np.ndarray:
    """RGBA uint8 as streamlit-drawable-canvas returns it for the given background."""
    a = np.round(coverage * 255).astype(np.uint8)
    out = np.empty((*coverage.shape, 4), dtype=np.uint8)
    if background == "black":
        out[..., :3] = a[..., None]
        out[..., 3] = 255
    elif background == "white":
        out[..., :3] = (255 - a)[..., None]
        out[..., 3] = 255
    else:  # transparent: untouched pixels are (0, 0, 0, 0), strokes white with coverage as alpha
        out[..., :3] = ((a > 0) * np.uint8(255))[..., None]
        out[..., 3] = a
    return out


def redraw(digit: np.ndarray, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Redraw a 28x28 (or 784) MNIST digit with a mouse in ``style``: RGBA uint8 (280, 280, 4)."""
    points, pairs = _segments(skeleton(digit))
    if len(points) == 0:
        raise ValueError("the digit has no ink to redraw")
    p = _placed(_jitter(_smooth(points, pairs), rng, style.jitter), style)
    return _canvas(_coverage(p, pairs, float(style.stroke)), style.background)


def mouse_strokes(digit: np.ndarray, style: Style, rng: np.random.Generator) -> list[np.ndarray]:
    """The strokes a person draws ``digit`` with, in ``style``: each an (n, 2) array of canvas (x, y)
    points, one press-move-release each, along the digit's skeleton, placed as ``redraw`` places it."""
    points, pairs = _segments(skeleton(digit))
    if len(points) == 0:
        raise ValueError("the digit has no ink to redraw")
    p = _placed(_jitter(_smooth(points, pairs), rng, style.jitter), style)
    return [p[path] for path in skeleton_paths(points, pairs)]


def skeleton_paths(points: np.ndarray, pairs: np.ndarray) -> list[list[int]]:
    """Cover the skeleton's edges with as few walks as a hand would draw: start at a loose end where
    there is one, go straight on at each fork, each edge once. A diagonal edge that cuts the corner of
    two straight ones is dropped first (the straight pair covers it)."""
    edges = {frozenset(pair) for pair in pairs.tolist()}
    key = {tuple(point): index for index, point in enumerate(points.astype(int).tolist())}
    for a, b in [tuple(edge) for edge in edges]:
        (xa, ya), (xb, yb) = points[a].astype(int), points[b].astype(int)
        if xa != xb and ya != yb:  # diagonal: is there a corner pixel joined to both?
            corners = [key.get((xa, yb)), key.get((xb, ya))]
            if any(c is not None and frozenset((a, c)) in edges and frozenset((b, c)) in edges for c in corners):
                edges.discard(frozenset((a, b)))
    neighbours: dict[int, set[int]] = {}
    for a, b in [tuple(edge) for edge in edges]:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    paths = []
    while edges:
        loose = sorted(node for node, near in neighbours.items() if len(near) % 2 == 1)
        node = loose[0] if loose else min(node for node, near in neighbours.items() if near)
        path = [node]
        while neighbours.get(node):
            here = points[node]
            heading = here - points[path[-2]] if len(path) > 1 else None

            def turn(candidate: int, here: np.ndarray = here, heading: np.ndarray | None = heading) -> float:
                if heading is None:
                    return 0.0
                step = points[candidate] - here
                return -float(step @ heading) / (float(np.linalg.norm(step) * np.linalg.norm(heading)) or 1.0)

            following = min(sorted(neighbours[node]), key=turn)
            edges.discard(frozenset((node, following)))
            neighbours[node].discard(following)
            neighbours[following].discard(node)
            path.append(following)
            node = following
        paths.append(path)
    return paths


def _placed(p: np.ndarray, style: Style) -> np.ndarray:
    """Skeleton points scaled to ``style.height`` of the canvas and moved to ``style.place``."""
    stroke = float(style.stroke)
    ink_height = style.height * CANVAS
    span_y = max(float(np.ptp(p[:, 1])), 1.0)
    span_x = float(np.ptp(p[:, 0]))
    scale = max(ink_height - stroke, 1.0) / span_y
    room = CANVAS - 2 * _MARGIN - stroke
    if span_x * scale > room:  # a wide digit: fit the width instead
        scale = room / max(span_x, 1.0)
    p = (p - p.min(axis=0)) * scale
    ink_w, ink_h = np.ptp(p[:, 0]) + stroke, np.ptp(p[:, 1]) + stroke
    left = _MARGIN + style.place[0] * (CANVAS - 2 * _MARGIN - ink_w)
    top = _MARGIN + style.place[1] * (CANVAS - 2 * _MARGIN - ink_h)
    return p + np.array([left + stroke / 2, top + stroke / 2])


def redraw_many(
    images: np.ndarray, seed: int, style: Callable[[np.random.Generator], Style] = random_style
) -> Iterator[tuple[int, Style, np.ndarray]]:
    """Yield ``(i, style, canvas)`` for each image, its style drawn by ``style(rng)``.

    Deterministic given ``seed``; each digit gets its own generator, so digit ``i`` is drawn the
    same whichever subset it is drawn in. To build one condition's set, pass e.g.
    ``lambda rng: random_style(rng, stroke=8)``.
    """
    for i, image in enumerate(images):
        rng = np.random.default_rng([seed, i])
        chosen = style(rng)
        yield i, chosen, redraw(image, chosen, rng)


def naive_resize(canvas: np.ndarray) -> np.ndarray:
    """The naive baseline: the canvas's luminance resized straight from 280x280 to 28x28 (784,)."""
    rgb = canvas[..., :3].astype(np.float64) / 255.0
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    small = Image.fromarray(gray.astype(np.float32)).resize((28, 28), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32).reshape(-1)
