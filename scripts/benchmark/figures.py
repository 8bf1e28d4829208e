"""Slide-ready charts of one run: time, bytes and error per scheme, with the ratios to the reference.

Each chart is a stack of panels, one per figure, with a horizontal bar per column (the reference
first, then the schemes). Every bar is labelled with its value and, for a scheme, its ratio to
the reference measured in the same run, all formatted by ``lib.formatting``. Axes are
logarithmic when the values span more than a factor of 20. Written as PNG (for slides) and SVG
(to scale or edit), with matplotlib's Agg canvas and no pyplot state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator
from matplotlib.typing import RcKeyType

from lib.formatting import (
    MISSING,
    format_bytes,
    format_error,
    format_factor,
    format_ratio_words,
    format_seconds,
    is_number,
)
from scripts.benchmark.results import RATIO, WORKERS, Getter, Measured, Ratio, ratio

DEFAULT_FOLDER = Path("artifacts") / "benchmark"
SIZE_INCHES = (40 / 3, 7.5)  # a 16:9 slide: 2000 x 1125 pixels at DPI
DPI = 150
COLOURS = {"reference": "#8c8c8c", "ei": "#1f77b4", "ckks": "#ff7f0e", "bfv": "#2ca02c"}
OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf")
STYLE: dict[RcKeyType, Any] = {
    "font.size": 15,
    "axes.titlesize": 17,
    "axes.titleweight": "bold",
    "svg.fonttype": "none",  # text stays text in the SVG: editable on a slide
    "svg.hashsalt": "benchmark",
}
LOG_ABOVE = 20.0  # log axis when the largest value is more than this many times the smallest
CHAR_WIDTH = 0.0105  # one label character, as a share of a panel's width (15 pt text on a 13.3 in slide)


@dataclass(frozen=True)
class Panel:
    """One figure across the columns: how to read it, show it, and compare a scheme with the reference."""

    title: str
    of_reference: Getter
    of_scheme: Getter
    show: Callable[[float | None], str]
    versus: Callable[[float | None, float | None], str]  # (scheme's value, reference's) -> annotation


def _times(word: str) -> Callable[[float | None, float | None], str]:
    """'1,739× faster': reference / scheme, as in the ratios table ('same as the reference' at 1.00×)."""

    def versus(value: float | None, reference: float | None) -> str:
        factor = format_factor(ratio(reference, value))
        if factor == MISSING:
            return ""
        return "same as the reference" if factor == format_factor(1.0) else f"{factor} {word}"

    return versus


def _more_or_less(value: float | None, reference: float | None) -> str:
    """'188× more': scheme / reference, for figures where bigger is worse and no table ratio exists."""
    words = format_ratio_words(ratio(value, reference))  # value / reference
    return "" if words == MISSING else f"{words} than the reference"


def _from_ratio(title: str, row: Ratio, show: Callable[[float | None], str], word: str) -> Panel:
    return Panel(title, row.of_reference, row.of_scheme, show, _times(word))


def _max_error(m: Measured) -> float | None:
    return m.max_error


@dataclass(frozen=True)
class Chart:
    """One file pair: a title, its panels and a note on what was measured."""

    name: str
    title: str
    panels: tuple[Panel, ...]
    note: str


REFERENCE_NOTE = "reference: the seed's EIServer.predict, in process; ratios measured in the same run"
NO_REFERENCE_NOTE = "no reference in this run (--skip-reference)"
CHARTS: tuple[Chart, ...] = (
    Chart(
        "time",
        "Time per prediction, key cache warm",
        (
            _from_ratio("server", RATIO["server, HTTP, warm"], format_seconds, "faster"),
            _from_ratio(
                "end to end (encrypt, send, score, decrypt)",
                RATIO["end to end, HTTP, warm"],
                format_seconds,
                "faster",
            ),
        ),
        f"schemes: over HTTP, {WORKERS}-worker scoring service, keys in Azurite",
    ),
    Chart(
        "bytes",
        "Bytes: public keys (once per session) and each prediction",
        (
            _from_ratio("public keys (uploaded once)", RATIO["public key bytes"], format_bytes, "smaller"),
            _from_ratio("request (JSON body)", RATIO["request bytes"], format_bytes, "smaller"),
            _from_ratio("response (JSON body)", RATIO["response bytes"], format_bytes, "smaller"),
        ),
        "decimal units, 1 kB = 1000 B",
    ),
    Chart(
        "error",
        "Largest error against the plaintext model",
        (
            Panel(
                "max |decrypted score - plaintext score|", _max_error, _max_error, format_error, _more_or_less
            ),
        ),
        "over every prediction of the run (in process, HTTP and test digits)",
    ),
)


def colour(name: str, index: int) -> str:
    """The column's colour: fixed for the known schemes, so every chart matches."""
    return COLOURS.get(name, OTHER_COLOURS[index % len(OTHER_COLOURS)])


def _limits(values: Sequence[float], labels: Sequence[str], log: bool) -> tuple[float, float]:
    """Axis limits that leave room right of each bar for its label (estimated from its length)."""
    top = max(values)
    left = min(values) / 3 if log else 0.0
    right = top
    for value, label in zip(values, labels, strict=True):
        free = max(0.98 - len(label) * CHAR_WIDTH, 0.3)  # where the bar may end, as a share of the width
        if log:
            right = max(right, 10 ** (math.log10(left) + (math.log10(value) - math.log10(left)) / free))
        else:
            right = max(right, value / free)
    return left, right


def _decades(left: float, top: float) -> list[float]:
    """The powers of ten from the axis's left end up to the largest value: the log axis's ticks."""
    return [10.0**k for k in range(math.ceil(math.log10(left)), math.floor(math.log10(top)) + 1)]


def draw_panel(ax: Axes, panel: Panel, reference: Measured | None, schemes: Sequence[Measured]) -> None:
    """Horizontal bars, one per column, each labelled with its value and its ratio to the reference."""
    columns = ([reference] if reference else []) + list(schemes)
    names = [m.name for m in columns]
    raw = [panel.of_reference(m) if m is reference else panel.of_scheme(m) for m in columns]
    values = [v if v is not None and is_number(v) and v > 0 else None for v in raw]
    known = [v for v in values if v is not None]
    ax.set_title(panel.title, loc="left")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()  # the reference on top
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if not known:
        ax.text(0.01, 0.5, "not measured", transform=ax.transAxes, va="center", color="#555555")
        ax.set_xticks([])
        return
    reference_value = values[0] if reference else None
    labels = []
    for measured, value in zip(columns, values, strict=True):
        versus = panel.versus(value, reference_value) if measured is not reference else ""
        labels.append(f"{panel.show(value)}   {versus}" if versus else panel.show(value))
    log = max(known) / min(known) > LOG_ABOVE
    shown = [(v, label) for v, label in zip(values, labels, strict=True) if v is not None]
    left, right = _limits([v for v, _ in shown], [label for _, label in shown], log)
    if log:
        ax.set_xscale("log")
        ax.set_xticks(_decades(left, max(known)))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(left, right)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: panel.show(x)))
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    for row, (measured, value, label) in enumerate(zip(columns, values, labels, strict=True)):
        if value is None:
            ax.text(left, row, f"  {MISSING} not measured", va="center", color="#555555")
            continue
        ax.barh(row, value, height=0.7, color=colour(measured.name, row))  # a log axis clips it at the left
        ax.annotate(label, (value, row), xytext=(8, 0), textcoords="offset points", va="center")


def draw_chart(chart: Chart, reference: Measured | None, schemes: Sequence[Measured]) -> Figure:
    """The chart as a matplotlib Figure (not yet saved)."""
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(len(chart.panels), 1, squeeze=False)[:, 0]
        for ax, panel in zip(axes, chart.panels, strict=True):
            draw_panel(ax, panel, reference, schemes)
        figure.suptitle(chart.title, fontsize=24, fontweight="bold", x=0.01, ha="left")
        note = f"{chart.note}; {REFERENCE_NOTE if reference else NO_REFERENCE_NOTE}"
        figure.supxlabel(note, fontsize=12, color="#555555", x=0.01, ha="left")
    return figure


def write_figures(folder: Path, reference: Measured | None, schemes: Sequence[Measured]) -> list[Path]:
    """Write every chart as ``<name>.png`` and ``<name>.svg`` into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in CHARTS:
        figure = draw_chart(chart, reference, schemes)
        with matplotlib.rc_context(STYLE):
            for suffix, metadata in ((".png", {"Software": None}), (".svg", {"Date": None})):
                path = folder / f"{chart.name}{suffix}"
                figure.savefig(path, dpi=DPI, metadata=metadata)
                written.append(path)
    return written
