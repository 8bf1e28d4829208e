"""Altair charts for the pages (data in, chart out; the rows come from ``lib.display`` and
``lib.comparison_view``, the labels from ``lib.formatting``)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from lib.display import WaterfallRow
from lib.formatting import format_seconds

ACCENT = "#4fc3f7"  # the theme's primary colour
MUTED = "#5b6475"
SERVER = "#ffb74d"
SETUP = "#9575cd"


def scores_chart(scores: np.ndarray, predicted: int, true_label: int | None = None) -> alt.Chart:
    """The 10 decrypted scores, the predicted class highlighted."""
    frame = pd.DataFrame(
        {
            "digit": [str(d) for d in range(10)],
            "score": np.asarray(scores, dtype=float),
            "kind": ["prediction" if d == predicted else "other" for d in range(10)],
            "truth": ["true label" if d == true_label else "" for d in range(10)],
        }
    )
    bars = (
        alt.Chart(frame)
        .mark_bar(cornerRadiusTopLeft=3, cornerRadiusTopRight=3)
        .encode(
            x=alt.X("digit:N", title="digit", axis=alt.Axis(labelAngle=0, labelFontSize=14)),
            y=alt.Y("score:Q", title="decrypted score (logit)"),
            color=alt.Color(
                "kind:N", scale=alt.Scale(domain=["prediction", "other"], range=[ACCENT, MUTED]), legend=None
            ),
            tooltip=[alt.Tooltip("digit:N"), alt.Tooltip("score:Q", format=".4f")],
        )
    )
    labels = bars.mark_text(dy=-8, fontSize=11, color="#e6e6e6").encode(
        text=alt.Text("score:Q", format=".1f"), color=alt.value("#e6e6e6")
    )
    return (bars + labels).properties(height=230)


def waterfall_chart(rows: Sequence[WaterfallRow]) -> alt.TopLevelMixin:
    """Horizontal bars from each stage's start to its end, one panel per phase, same time axis."""
    frame = pd.DataFrame(
        [
            {
                "phase": r.phase,
                "stage": r.stage,
                "where": "app, once per session" if r.phase == "Once per session" else r.where,
                "start_ms": r.start_s * 1e3,
                "end_ms": r.end_s * 1e3,
                "label": format_seconds(r.seconds),
                "order": i,
            }
            for i, r in enumerate(rows)
        ]
    )
    x_max = float(frame["end_ms"].max()) * 1.18 if len(frame) else 1.0
    colors = alt.Scale(domain=["app", "server", "app, once per session"], range=[ACCENT, SERVER, SETUP])

    def panel(phase: str, title: str) -> alt.LayerChart:
        data = frame[frame["phase"] == phase]
        base = alt.Chart(data).encode(
            y=alt.Y(
                "stage:N", sort=alt.EncodingSortField("order"), title=None, axis=alt.Axis(labelLimit=260)
            ),
        )
        bars = base.mark_bar(height=16, cornerRadius=2).encode(
            x=alt.X("start_ms:Q", title="milliseconds", scale=alt.Scale(domain=[0, x_max])),
            x2="end_ms:Q",
            color=alt.Color("where:N", scale=colors, legend=alt.Legend(orient="bottom", title=None)),
            tooltip=[alt.Tooltip("stage:N"), alt.Tooltip("label:N", title="time"), alt.Tooltip("where:N")],
        )
        text = base.mark_text(align="left", dx=4, fontSize=12, color="#e6e6e6").encode(
            x="end_ms:Q", text="label:N"
        )
        return (bars + text).properties(title=title, height=26 * max(len(data), 1))

    panels = []
    if (frame["phase"] == "Once per session").any():
        panels.append(panel("Once per session", "Once per session: key setup (before the first prediction)"))
    panels.append(panel("This prediction", "This prediction"))
    return panels[0] if len(panels) == 1 else alt.vconcat(*panels).resolve_scale(x="shared")


def latency_histogram(latencies_s: Sequence[float]) -> alt.Chart:
    """Distribution of end-to-end latencies."""
    frame = pd.DataFrame({"seconds": list(latencies_s)})
    return (
        alt.Chart(frame)
        .mark_bar(color=ACCENT)
        .encode(
            x=alt.X("seconds:Q", bin=alt.Bin(maxbins=20), title="end-to-end latency per digit (s)"),
            y=alt.Y("count():Q", title="digits"),
            tooltip=[alt.Tooltip("count():Q", title="digits")],
        )
        .properties(height=220)
    )


SCHEME_COLORS = {"ei": SETUP, "ckks": ACCENT, "bfv": SERVER}


def _scheme_scale(schemes: Sequence[str]) -> alt.Scale:
    names = list(dict.fromkeys(schemes))
    return alt.Scale(domain=names, range=[SCHEME_COLORS.get(name, MUTED) for name in names])


_AXIS_LABELS = {  # Vega expressions for the value axis, by the metric's unit
    "seconds": "datum.value < 1 ? format(datum.value * 1000, '~g') + ' ms' : format(datum.value, '~g') + ' s'",
    "bytes": "format(datum.value, '~s') + 'B'",
    "error": "format(datum.value, '.0e')",
    "fraction": "format(datum.value, '.0%')",
}


def comparison_bars(points: Sequence[dict], title: str, unit: str, log_scale: bool) -> alt.LayerChart:
    """One horizontal bar per scheme (``points``: scheme, value, label), labelled with value and ratio.

    On a log scale the bars start at the axis' left end (a log axis has no 0) and the ticks are
    powers of ten.
    """
    frame = pd.DataFrame(list(points), columns=["scheme", "value", "label"])
    if log_scale:
        frame = frame[frame["value"] > 0]  # a log axis cannot show 0
    if len(frame) == 0:
        frame = pd.DataFrame({"scheme": [], "value": [], "label": []})
    x_max = float(frame["value"].max()) if len(frame) else 1.0
    ticks: list[float] | None
    if log_scale:
        low = 10.0 ** np.floor(np.log10(float(frame["value"].min()) if len(frame) else 0.1))
        # Room on the right for the text labels: a log axis needs a multiplicative margin.
        high = 10.0 ** np.ceil(np.log10(x_max * 300))
        scale = alt.Scale(type="log", domain=[low, high], nice=False)
        top = int(np.ceil(np.log10(x_max)))  # no ticks in the labels' margin
        ticks = [10.0**e for e in range(int(np.log10(low)), top + 1)]
        frame = frame.assign(start=low)
    else:
        scale = alt.Scale(domain=[0, max(x_max, 1.0 if unit == "fraction" else x_max) * 1.6])
        ticks = [0.0, 0.5, 1.0] if unit == "fraction" else None
        frame = frame.assign(start=0.0)
    axis = alt.Axis(
        values=alt.Undefined if ticks is None else ticks,  # Undefined: altair picks the ticks (None is invalid)
        labelExpr=_AXIS_LABELS.get(unit, "datum.label"),
        grid=True,
        title=None,
    )
    base = alt.Chart(frame).encode(
        y=alt.Y("scheme:N", title=None, sort=None, axis=alt.Axis(labelFontSize=13)),
    )
    bars = base.mark_bar(height=18, cornerRadius=2).encode(
        x=alt.X("start:Q", scale=scale, axis=axis),
        x2="value:Q",
        color=alt.Color("scheme:N", scale=_scheme_scale(frame["scheme"].tolist()), legend=None),
        tooltip=[alt.Tooltip("scheme:N"), alt.Tooltip("label:N", title=title)],
    )
    text = base.mark_text(align="left", dx=4, fontSize=12, color="#e6e6e6").encode(
        x="value:Q", text="label:N"
    )
    return (bars + text).properties(title=title, height=alt.Step(30))


def latency_strip(rows: Sequence[dict]) -> alt.Chart:
    """Every digit's end-to-end time per scheme (``rows``: scheme, seconds, cache), on a log axis."""
    frame = pd.DataFrame(list(rows), columns=["scheme", "seconds", "cache"])
    low = float(frame["seconds"].min()) if len(frame) else 0.01
    high = float(frame["seconds"].max()) if len(frame) else 1.0
    ticks = [
        m * 10.0**e
        for e in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
        for m in (1, 3)
        if low / 3 <= m * 10.0**e <= high * 3
    ]
    axis = alt.Axis(values=ticks, labelExpr=_AXIS_LABELS["seconds"])
    return (
        alt.Chart(frame)
        .mark_tick(thickness=2, size=22)
        .encode(
            x=alt.X(
                "seconds:Q", title="end to end per digit (log scale)", scale=alt.Scale(type="log"), axis=axis
            ),
            y=alt.Y("scheme:N", title=None, sort=None, axis=alt.Axis(labelFontSize=13)),
            color=alt.Color("scheme:N", scale=_scheme_scale(frame["scheme"].tolist()), legend=None),
            opacity=alt.condition(alt.datum.cache == "miss", alt.value(1.0), alt.value(0.55)),
            tooltip=[alt.Tooltip("scheme:N"), alt.Tooltip("seconds:Q", format=".4f"), alt.Tooltip("cache:N")],
        )
        .properties(height=alt.Step(34))
    )
