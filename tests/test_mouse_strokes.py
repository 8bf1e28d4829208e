"""The browser test's mouse strokes (``mouse_redraw.mouse_strokes``) paint what ``redraw`` paints.

The drawn-digit browser test traces each digit as a few press-move-release strokes along its
skeleton; ``redraw`` paints the same skeleton edge by edge. Both use the same placement, so painting
the strokes' polylines with the same brush must give the same ink, and the walks must use every
skeleton edge once (a corner-cutting diagonal excepted).
"""
from __future__ import annotations

import itertools

import numpy as np
from mouse_redraw import Style, _coverage, _segments, mouse_strokes, redraw, skeleton, skeleton_paths

from lib.gallery import load_gallery


def test_the_strokes_paint_what_redraw_paints() -> None:
    images, labels = load_gallery()
    for index in range(0, len(images), 29):  # one or two of each class
        style = Style(0.6, 20, (0.3, 0.7), "black", jitter=1.0)
        strokes = mouse_strokes(images[index], style, np.random.default_rng(index))
        assert 1 <= len(strokes) <= 6, f"a {labels[index]} in {len(strokes)} strokes"
        points = np.concatenate(strokes)
        ends = np.cumsum([0, *(len(s) for s in strokes)])
        pairs = np.array([(k, k + 1) for a, b in itertools.pairwise(ends) for k in range(a, b - 1)])
        traced = _coverage(points, pairs, 20.0) > 0.5
        painted = redraw(images[index], style, np.random.default_rng(index))[..., 0] > 127
        overlap = (traced & painted).sum() / (traced | painted).sum()
        assert overlap > 0.98, f"digit {index} (a {labels[index]}): the strokes cover {overlap:.1%} of its ink"


def test_every_skeleton_edge_is_drawn_once() -> None:
    images, _ = load_gallery()
    points, pairs = _segments(skeleton(images[0]))
    paths = skeleton_paths(points, pairs)
    walked = [frozenset(step) for path in paths for step in itertools.pairwise(path)]
    assert len(walked) == len(set(walked))  # no edge twice
    assert set(walked) <= {frozenset(pair) for pair in pairs.tolist()}  # only skeleton edges
    assert len(set(walked)) >= 0.8 * len(pairs)  # all but the corner-cutting diagonals
    assert {node for path in paths for node in path} == set(range(len(points)))  # every skeleton pixel
