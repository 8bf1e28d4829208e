"""Encrypted accuracy: N held-out MNIST digits through the encrypted path, with a Stop button."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.accuracy import AccuracyRun
from lib.batch_parts import estimate_seconds
from lib.digits import gallery
from lib.display import upscale
from lib.errors import DemoError
from lib.formatting import format_error, format_estimate, format_percent, format_seconds
from lib.session import EncryptedSession
from lib.view_models import error_source, scheme_title
from ui import charts
from ui.state import key_progress, page_setup, reference_model

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
        run.resume()


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
    disabled=run is None or running or run.complete,
    width="stretch",
    key="accuracy_resume",
)
per_digit = run.summary().latency_p50_s if run is not None and run.items else None
if per_digit is None and state.last is not None and state.last.scheme == state.scheme:
    per_digit = state.last.prediction.total_s
estimate = int(n) * per_digit if per_digit else estimate_seconds(state.scheme, int(n))
st.caption(f"Estimated time: {format_estimate(estimate)} for {int(n)} digits.")

if run is None:
    st.info("Choose how many digits to classify and press **Start**.", icon=":material/arrow_upward:")
    st.stop()

model = reference_model()

fraction, text = run.progress()
progress = st.progress(fraction, text=text)
live = st.empty()


def _report(run: AccuracyRun) -> None:
    summary = run.summary()
    with live.container():
        a, b, c, d = st.columns(4)
        a.metric(
            "Accuracy",
            format_percent(summary.accuracy),
            help="Encrypted prediction equals the true label.",
        )
        b.metric(
            "Agreement with plaintext",
            format_percent(summary.agreement),
            help="Encrypted prediction equals the plaintext model's prediction (expected: 100%).",
        )
        c.metric(
            "Median latency",
            format_seconds(summary.latency_p50_s),
            help="End to end per digit: encrypt, request, server compute, decrypt.",
        )
        d.metric("90th percentile", format_seconds(summary.latency_p90_s))
        if summary.max_abs_error is not None:
            st.caption(
                f"Largest score difference from plaintext: {format_error(summary.max_abs_error)} "
                f"({error_source(state.scheme)}). "
                f"Slowest digit: {format_seconds(summary.latency_max_s)}."
            )


_report(run)

if run.active:
    waiting = st.empty()
    session: EncryptedSession | None
    try:
        session = state.key.wait(key_progress(waiting))
    except DemoError as exc:
        run.fail(exc.message)
        session = None
    waiting.empty()
    while session is not None and run.active:
        item = run.step(session, images, labels, model)  # Stop reruns the page; we check between digits
        fraction, text = run.progress(item)
        progress.progress(fraction, text=text)
        _report(run)
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
elif run.complete:
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
