"""Encrypted accuracy: N held-out MNIST digits through the encrypted path, with a Stop button."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.accuracy import AccuracyRun
from lib.app_state import error_source, gallery, scheme_title
from lib.comparison import estimate_seconds
from lib.display import human_seconds, upscale
from lib.errors import DemoError
from lib.reference import ReferenceUnavailable, load_reference_model
from ui import charts
from ui.state import key_progress, page_setup

RUN = "accuracy_run"

state = page_setup("Encrypted accuracy")
images, labels = gallery()

st.title(":material/analytics: Encrypted accuracy")
st.caption(
    f"Classify real MNIST digits that the model never trained on ({len(labels)} in the gallery, "
    f"{len(labels) // 10} per label) through the full encrypted path, one request each, with this session's "
    f"**{scheme_title(state.scheme)}** key (the sidebar's scheme). "
    "Agreement compares each encrypted prediction with the same model run in plaintext (demo and QA only): "
    "it should be 100%."
)


def _start() -> None:
    st.session_state[RUN] = AccuracyRun.plan(labels, int(st.session_state["accuracy_n"]))


def _stop() -> None:
    run: AccuracyRun | None = st.session_state.get(RUN)
    if run is not None:
        run.stopped = True


def _resume() -> None:
    run: AccuracyRun | None = st.session_state.get(RUN)
    if run is not None:
        run.stopped = False
        run.errors.clear()


run: AccuracyRun | None = st.session_state.get(RUN)
running = run is not None and run.active

size, start, stop, resume = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
n = size.number_input(
    "Digits to classify",
    min_value=1,
    max_value=len(labels),
    value=20,
    step=10,
    disabled=running,
    help="Balanced by label: every label comes up equally often.",
    key="accuracy_n",
)
start.button(
    "Start",
    icon=":material/play_arrow:",
    type="primary",
    on_click=_start,
    disabled=running,
    width="stretch",
    key="accuracy_start",
)
stop.button(
    "Stop", icon=":material/stop:", on_click=_stop, disabled=not running, width="stretch", key="accuracy_stop"
)
resume.button(
    "Resume",
    icon=":material/resume:",
    on_click=_resume,
    disabled=run is None or running or run.finished,
    width="stretch",
    key="accuracy_resume",
)
per_digit = run.summary().latency_p50_s if run is not None and run.items else None
if per_digit is None and state.last is not None and state.last.scheme == state.scheme:
    per_digit = state.last.prediction.total_s
estimate = int(n) * per_digit if per_digit else estimate_seconds(state.scheme, int(n))
st.caption(
    f"Estimated time: about {estimate / 60:.0f} min for {int(n)} digits."
    if estimate >= 90
    else f"Estimated time: about {estimate:.0f} s for {int(n)} digits."
)

if run is None:
    st.info("Choose how many digits to classify and press **Start**.", icon=":material/arrow_upward:")
    st.stop()

try:
    model = load_reference_model()
except ReferenceUnavailable as exc:
    model = None
    st.caption(exc.message)

progress = st.progress(len(run.items) / run.planned, text=f"{len(run.items)} of {run.planned} digits")
live = st.empty()


def _report() -> None:
    summary = run.summary()
    with live.container():
        a, b, c, d = st.columns(4)
        a.metric(
            "Accuracy",
            "–" if summary.accuracy is None else f"{summary.accuracy:.1%}",
            help="Encrypted prediction equals the true label.",
        )
        b.metric(
            "Agreement with plaintext",
            "–" if summary.agreement is None else f"{summary.agreement:.1%}",
            help="Encrypted prediction equals the plaintext model's prediction (expected: 100%).",
        )
        c.metric(
            "Median latency",
            "–" if summary.latency_p50_s is None else human_seconds(summary.latency_p50_s),
            help="End to end per digit: encrypt, request, server compute, decrypt.",
        )
        d.metric(
            "90th percentile", "–" if summary.latency_p90_s is None else human_seconds(summary.latency_p90_s)
        )
        if summary.max_abs_error is not None:
            st.caption(
                f"Largest score difference from plaintext: {summary.max_abs_error:.1e} "
                f"({error_source(state.scheme)}). "
                f"Slowest digit: {human_seconds(summary.latency_max_s or 0.0)}."
            )


_report()

if run.active:
    waiting = st.empty()
    try:
        session = state.key.wait(key_progress(waiting))
    except DemoError as exc:
        run.errors.append(exc.message)
        session = None
    waiting.empty()
    while session is not None and run.active:
        try:
            item = run.step(session, images, labels, model)  # Stop reruns the page; we check between digits
        except DemoError as exc:
            run.errors.append(exc.message)
            break
        done = len(run.items)
        mark = "correct" if item is not None and item.correct else "wrong"
        progress.progress(done / run.planned, text=f"{done} of {run.planned} digits · last: {mark}")
        _report()
    st.rerun()  # redraw the buttons for a run that is no longer active

if run.errors:
    st.error(
        f"Stopped after {len(run.items)} of {run.planned} digits: {run.errors[-1]}", icon=":material/error:"
    )
elif run.stopped:
    st.warning(
        f"Stopped after {len(run.items)} of {run.planned} digits. **Resume** continues the run.",
        icon=":material/stop_circle:",
    )
elif run.finished:
    st.success(f"Done: {run.planned} digits classified on encrypted data.", icon=":material/check_circle:")

if run.items:
    histogram, table = st.columns([3, 2], gap="large")
    with histogram:
        st.markdown("**Latency distribution**")
        st.altair_chart(charts.latency_histogram([i.total_s for i in run.items]))
    with table:
        st.markdown("**Every digit**")
        columns = {
            "digit #": [i.index for i in run.items],
            "true label": [i.true_label for i in run.items],
            "encrypted": [i.encrypted_label for i in run.items],
            "plaintext": [i.plain_label for i in run.items],
            "latency (ms)": [round(i.total_s * 1e3) for i in run.items],
        }
        if model is None:
            del columns["plaintext"]
        st.dataframe(pd.DataFrame(columns), hide_index=True, height=260)
    wrong = [i for i in run.items if not i.correct]
    if wrong:
        st.markdown(f"**Misclassified ({len(wrong)})**: true label → encrypted prediction")
        st.image(
            [upscale(images[i.index], 3) for i in wrong[:24]],
            caption=[f"{i.true_label} → {i.encrypted_label}" for i in wrong[:24]],
        )
