"""Schemes: what each HE scheme is, and a live comparison on the same held-out digits (with Stop)."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from lib.batch_parts import estimate_seconds
from lib.comparison import ComparisonRun, default_digits, session_factory
from lib.comparison_view import BASELINE, METRICS, chart_points, latency_points, metric_rows
from lib.digits import gallery
from lib.formatting import format_estimate, format_percent
from lib.schemes import SCHEME_NAMES, SPECS
from lib.view_models import plaintext_accuracy, scheme_title
from ui import charts
from ui.state import page_setup, reference_model

RUN = "comparison_run"
SCHEMES = "cmp_schemes"
REDRAW_EVERY_S = 0.5  # the live table, while a run is under way
PER_DIGIT = {
    BASELINE: "ei takes about 1.5 s a digit, the SEAL 4 schemes a few tens of milliseconds.",
    "network": "About a tenth of a second a digit: 22 rotations on an N = 8192 ciphertext.",
}

state = page_setup("Schemes")
images, labels = gallery()

st.title(":material/compare_arrows: Schemes")
st.caption(
    "Four homomorphic encryption schemes on the same ciphertext-only service: ei, ckks and bfv run the linear "
    "model, network runs a small neural network. Choose the one this session uses in the sidebar; compare them "
    "here, live."
)

cards = st.columns(len(SCHEME_NAMES))
for card, name in zip(cards, SCHEME_NAMES, strict=True):
    info = SPECS[name]
    with card.container(border=True):
        in_use = " · :green[in use in this session]" if name == state.scheme else ""
        st.markdown(f"**{info.title}**{in_use}")
        st.caption(info.library)
        accuracy = plaintext_accuracy(name)
        measured = f", {format_percent(accuracy, 2)} on the real MNIST test set in plaintext" if accuracy is not None else ""
        st.markdown(
            f"{info.summary}\n\n**Model**: {info.model}{measured}\n\n"
            f"**In blob storage**: {info.public_material}\n\n**Security**: {info.security}"
        )

st.subheader("Live comparison")
st.caption(
    "Each scheme gets its own fresh key pair (not this session's key): key generation and upload, then the "
    "digits one request each. The first request meets a cold key cache on the service (it downloads the "
    "public keys); the others a warm one. Every scheme starts at the same held-out digits, balanced by label."
)


def _start() -> None:
    old: ComparisonRun | None = st.session_state.get(RUN)
    if old is not None:
        old.stop()
        old.close()
    chosen = [name for name in SCHEME_NAMES if name in st.session_state.get(SCHEMES, [])]
    plan = {name: int(st.session_state.get(f"cmp_n_{name}", default_digits(name))) for name in chosen}
    st.session_state[RUN] = ComparisonRun.plan(plan, labels)


def _stop() -> None:
    run: ComparisonRun | None = st.session_state.get(RUN)
    if run is not None:
        run.stop()


run: ComparisonRun | None = st.session_state.get(RUN)
if run is not None and run.stopped:
    run.close()  # after Stop: end the scheme under way (its key blob is deleted)
running = run is not None and run.active

chosen = st.multiselect(
    "Schemes to compare",
    SCHEME_NAMES,
    default=list(SCHEME_NAMES),
    format_func=scheme_title,
    key=SCHEMES,
    disabled=running,
)
chosen = [name for name in SCHEME_NAMES if name in chosen]
digit_columns = st.columns(max(len(chosen), 1))
for column, name in zip(digit_columns, chosen, strict=False):
    column.number_input(
        f"Digits for {name}",
        min_value=1,
        max_value=len(labels),
        value=default_digits(name),
        step=5 if name == BASELINE else 25,
        key=f"cmp_n_{name}",
        disabled=running,
        help=PER_DIGIT.get(name, "A few tens of milliseconds a digit."),
    )
planned = {name: int(st.session_state.get(f"cmp_n_{name}", default_digits(name))) for name in chosen}
estimate = sum(estimate_seconds(name, n) for name, n in planned.items())
note = (
    " ei is the slow one (about 1.5 s a digit), so it gets 5 digits by default: its accuracy over so few "
    "digits says little, the times and sizes say a lot."
    if BASELINE in planned
    else " Add ei to see each value as a ratio to the seed scheme."
)
st.caption(f"Estimated time: {format_estimate(estimate)}.{note}")

start, stop, _ = st.columns([1, 1, 4], vertical_alignment="bottom")
start.button(
    "Run comparison",
    icon=":material/play_arrow:",
    type="primary",
    on_click=_start,
    disabled=running or not chosen,
    width="stretch",
    key="cmp_start",
)
stop.button(
    "Stop", icon=":material/stop:", on_click=_stop, disabled=not running, width="stretch", key="cmp_stop"
)

if not chosen:
    st.warning("Choose at least one scheme to compare.", icon=":material/rule:")
if run is None:
    st.info(
        "Choose the schemes and how many digits each, then press **Run comparison**.",
        icon=":material/arrow_upward:",
    )
    st.stop()

model = reference_model("Without it there is no error column.")

fraction, text = run.progress()
progress = st.progress(fraction, text=text)
live = st.empty()


def _table(run: ComparisonRun) -> None:
    """The comparison table: one row per metric, a column per scheme, ratios to ei."""
    rows = metric_rows(run.summaries())
    live.dataframe(pd.DataFrame(rows).set_index("metric"), width="stretch", height=35 * (len(rows) + 1) + 3)


_table(run)

if run.active:
    factory = session_factory(state.settings)
    redrawn = time.monotonic()
    while run.active:
        report = run.step(factory, images, labels, model)  # Stop reruns the page; checked between steps
        fraction, text = run.progress()
        progress.progress(fraction, text=text)
        if report is not None and time.monotonic() - redrawn >= REDRAW_EVERY_S:
            _table(run)
            redrawn = time.monotonic()
    st.rerun()  # redraw the buttons and the results for a run that is no longer active

for scheme in run.schemes:
    if scheme.error:
        st.error(
            f"**{scheme_title(scheme.name)}** stopped after {len(scheme.digits)} of {scheme.planned} digits: "
            f"{scheme.error}",
            icon=":material/error:",
        )
    if scheme.notice:
        st.warning(f"**{scheme_title(scheme.name)}**: {scheme.notice}", icon=":material/warning:")
if run.stopped:
    st.warning("Stopped. The table shows what was measured until then.", icon=":material/stop_circle:")
elif run.finished and not any(s.error for s in run.schemes):
    done = ", ".join(f"{s.name} on {s.planned}" for s in run.schemes)
    st.success(f"Done: {done} digits, each scheme with its own fresh key.", icon=":material/check_circle:")

summaries = [s for s in run.summaries() if s.done or s.key_bytes]
if not summaries:
    st.stop()

st.markdown("**At a glance** (log scales: each step on an axis is a factor of ten)")
metrics = [m for m in METRICS if any(getattr(s, m.key) is not None for s in summaries)]
grid = st.columns(3, gap="large")
for i, metric in enumerate(metrics):
    with grid[i % 3]:
        chart = charts.comparison_bars(
            chart_points(summaries, metric), metric.label, metric.unit, metric.log_scale
        )
        st.altair_chart(chart)
        st.caption(metric.help)

strip = latency_points(run.schemes)
if strip:
    st.markdown(
        "**Every digit, end to end** (the first request of each scheme, with the cold key cache, "
        "is the bright tick)"
    )
    st.altair_chart(charts.latency_strip(strip))

accuracy_notes = [
    f"{s.name}: {format_percent(s.accuracy, 0)} on {s.done} digits (the plaintext model: "
    f"{format_percent(s.plain_accuracy, 0)}, agreement {format_percent(s.agreement, 0)})"
    for s in summaries
    if s.accuracy is not None and s.plain_accuracy is not None and s.agreement is not None
]
if accuracy_notes:
    st.caption(
        "Accuracy compares each scheme with the plaintext model on the *same* digits; schemes with different "
        "numbers of digits are not directly comparable. " + "; ".join(accuracy_notes) + "."
    )
