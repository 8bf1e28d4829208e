"""Altair charts for the pages (data in, chart out; the rows come from ``lib.display``)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from lib.display import WaterfallRow, human_seconds

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
                "label": human_seconds(r.seconds),
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
