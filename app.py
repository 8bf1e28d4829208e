"""Encrypted MNIST: the entry point (navigation, shared sidebar, health) and the main page.

Main page: draw a digit or pick a held-out MNIST digit, encrypt it with this session's key, have
the scoring service classify the ciphertext, decrypt, and show the result and what it cost.
All logic is in lib/ (lib.app_state, lib.digits, lib.view_models, lib.display); ui/ holds the
shared Streamlit glue.
"""

from __future__ import annotations

import altair as alt
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from lib.app_state import AppState
from lib.digits import DigitInput, gallery, pick_gallery_index
from lib.display import ciphertext_hex, softmax, upscale, waterfall_rows
from lib.errors import DemoError, InvalidInput
from lib.formatting import format_bytes, format_error, format_seconds
from lib.schemes import SPECS
from lib.view_models import Classified, error_source, public_material, scheme_title
from ui import charts
from ui.browser_encryption import browser_encryption
from ui.canvas_toolbar import keep_canvas_toolbar_off_the_canvas
from ui.state import key_progress, page_setup

DRAW, PICK = ":material/draw: Draw", ":material/casino: Pick a test digit"
TAB = ":material/shield_lock: Encrypt in my browser"
PENDING, PROBLEM = "classify_pending", "classify_problem"
INKS = {"White on black": ("#FFFFFF", "#000000"), "Black on white": ("#000000", "#FFFFFF")}


def _clear_canvas() -> None:
    st.session_state["canvas_version"] = st.session_state.get("canvas_version", 0) + 1


def _request_classification() -> None:
    # A flag, not the button's return value: a rerun that arrives mid-run (e.g. the canvas sending
    # the last stroke just after the click) restarts the script, and the flag survives that.
    st.session_state[PENDING] = True


def _pick(label: int | None) -> None:
    """Pick a random gallery digit (of ``label``) and classify it right away."""
    _, labels = gallery()
    state: AppState = st.session_state["app_state"]
    st.session_state["picked"] = pick_gallery_index(labels, state.rng, label, st.session_state.get("picked"))
    _request_classification()


def _pick_by_label() -> None:
    label = st.session_state.get("pick_label")
    if label is not None:
        _pick(int(label))
        st.session_state["pick_label"] = None  # a pill acts as a button: click 7 again for another 7


def _digit_image(pixels, caption: str, factor: int = 6) -> None:
    st.image(upscale(pixels, factor), caption=caption, width=28 * factor)


def _mode_selector() -> str | None:
    return st.segmented_control(
        "Input", [DRAW, PICK, TAB], default=DRAW, required=True, key="mode", label_visibility="collapsed"
    )


def _in_browser_page() -> None:
    """The "Encrypt in my browser" mode: the tab draws, encrypts and decrypts; this process only relays."""
    st.subheader("1 · Draw a digit · 2 · Result: both in your browser tab")
    _mode_selector()
    st.caption(
        "In this mode the key pair is made **inside your browser tab** (Microsoft SEAL 4.1 compiled to "
        "WebAssembly), which also turns your drawing into 28×28 pixels, encrypts it and decrypts the scores. "
        "This app's server process gets only the ciphertext and the public keys: it uploads the keys to blob "
        "storage and relays the ciphertext to the scoring service, and never holds your digit, the secret "
        "key or the prediction. You still trust the page's code, which this app's host serves; "
        "**How it works** draws the trust model."
    )
    browser_encryption()


def _input_column(state: AppState) -> tuple[DigitInput | None, str]:
    """The input widgets; returns the digit to encrypt, or None and why not."""
    st.subheader("1 · Choose a digit")
    mode = _mode_selector()
    if mode == PICK:
        st.button(
            "Random test digit", icon=":material/casino:", on_click=_pick, args=(None,), key="pick_random"
        )
        st.pills(
            "Or a random test digit with the label",
            list(range(10)),
            key="pick_label",
            on_change=_pick_by_label,
        )
        if st.session_state.get("picked") is None:
            st.session_state["picked"] = pick_gallery_index(gallery()[1], state.rng)
        digit = DigitInput.from_gallery(st.session_state["picked"])
        _digit_image(
            digit.pixels,
            f"True label {digit.true_label} · real MNIST digit #{digit.gallery_index}, never trained on",
            factor=7,
        )
        return digit, ""

    controls, ink_col = st.columns(2)
    stroke = controls.slider("Stroke width", 6, 40, 20, key="stroke")
    ink = ink_col.selectbox("Colours", list(INKS), key="ink")
    stroke_color, background = INKS[ink]
    row = st.container(horizontal=True, gap="medium")
    with row:
        canvas = st_canvas(
            stroke_width=stroke,
            stroke_color=stroke_color,
            background_color=background,
            height=280,
            width=280,
            drawing_mode="freedraw",
            return_image_data=True,
            key=f"canvas_{st.session_state.get('canvas_version', 0)}",
        )
        preview = st.container(width=120)
    keep_canvas_toolbar_off_the_canvas()
    st.button("Clear", icon=":material/ink_eraser:", on_click=_clear_canvas, key="clear")
    try:
        digit = DigitInput.from_drawing(canvas.image_data)
    except InvalidInput as exc:
        preview.caption(
            "Draw one digit on the canvas, as large as you like. The 28×28 image that gets encrypted appears here."
        )
        return None, exc.message
    with preview:
        _digit_image(digit.pixels, "What gets encrypted: your drawing as a 28×28 MNIST digit", factor=4)
    return digit, ""


def _classify(state: AppState, digit: DigitInput | None, why_not: str) -> None:
    """Run a requested classification; its outcome lands in ``state.last`` or in PROBLEM."""
    st.session_state.pop(PROBLEM, None)
    if digit is None:
        st.session_state[PROBLEM] = ("warning", why_not)
        st.session_state.pop(PENDING, None)
        return
    waiting = st.empty()
    try:
        session = state.key.wait(key_progress(waiting))  # the one wait: key progress, then the spinner
        waiting.empty()
        with st.spinner("Encrypting, scoring the ciphertext on the server, decrypting …", show_time=True):
            state.classify(digit, session)
            st.session_state.pop(PENDING, None)  # done: before the next Streamlit call can restart the run
    except DemoError as exc:
        st.session_state.pop(PENDING, None)
        st.session_state[PROBLEM] = ("error", exc.message)
    waiting.empty()


def _big_prediction(result: Classified) -> None:
    prediction = result.prediction
    confidence = softmax(prediction.scores)[prediction.label]
    number, facts = st.columns([1, 2], vertical_alignment="center")
    number.markdown(
        "<div style='font-size:0.9rem;opacity:0.75'>Prediction</div>"
        f"<div id='predicted-digit' style='font-size:7.5rem;font-weight:800;line-height:1;color:#4fc3f7'>"
        f"{prediction.label}</div>",
        unsafe_allow_html=True,
    )
    lines = []
    if result.digit.true_label is not None:
        verdict = ":green[**correct**]" if result.correct else ":red[**wrong**]"
        lines.append(f"True label **{result.digit.true_label}**: {verdict}")
    else:
        lines.append("Your drawing (no true label)")
    lines.append(f"Confidence **{confidence:.0%}** (softmax of the decrypted scores)")
    lines.append(
        f"**{format_seconds(prediction.total_s)}** end to end · server key cache **{prediction.key_cache}**"
    )
    lines.append(f"Encrypted with **{scheme_title(result.scheme)}**")
    facts.markdown("  \n".join(lines))


def _reference(result: Classified) -> None:
    with st.container(border=True):
        st.markdown(
            "**Reference check** · :gray[demo and QA only: the same model run in plaintext inside this app, "
            "on the same 784 pixels. It is not part of the encrypted path.]"
        )
        check = result.reference
        if check is None:
            st.caption(result.reference_note)
            return
        agree, error = st.columns(2)
        agree.metric(
            "Agreement",
            f"Yes: both {check.plain_label}" if check.agrees else f"No: plaintext {check.plain_label}",
            help=f"Plaintext model predicts {check.plain_label}; the encrypted path predicts {check.encrypted_label}.",
        )
        error.metric(
            "Max absolute error",
            format_error(check.max_abs_error),
            help="Largest difference between the 10 decrypted scores and the plaintext scores "
            f"({error_source(result.scheme)}).",
        )


def _costs(result: Classified) -> None:
    prediction = result.prediction
    sizes = prediction.sizes
    server_compute = prediction.stage_seconds("compute")
    st.subheader("3 · What it cost")
    st.caption(
        f"With {scheme_title(result.scheme)}. Compare the schemes side by side on the **Schemes** page."
    )
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Ciphertext sent",
        format_bytes(sizes["ciphertext_bytes"]),
        help="The encrypted digit. The whole request body (base64 JSON) is "
        f"{format_bytes(sizes['request_bytes'])}.",
    )
    c2.metric(
        "Public keys uploaded",
        format_bytes(sizes["key_bytes"]),
        help=f"Once per session, to blob storage: {public_material(result.scheme)}. Requests only carry a "
        "read-only link to them.",
    )
    c3.metric(
        "Response",
        format_bytes(sizes["response_bytes"]),
        help=f"The 10 scores, encrypted ({format_bytes(sizes['result_bytes'])} of ciphertext), base64 in JSON.",
    )
    c4.metric(
        "Latency",
        format_seconds(prediction.total_s),
        help=f"Encrypt to decrypt; the server's homomorphic compute took {format_seconds(server_compute)}.",
    )
    c1.caption(f"request body {format_bytes(sizes['request_bytes'])}")
    c2.caption("once per session")
    c3.caption("the 10 scores, encrypted")
    c4.caption(f"server compute {format_seconds(server_compute)}")

    waterfall, seen = st.columns([5, 4], gap="large")
    with waterfall:
        st.markdown("**Latency by stage**")
        chart = charts.waterfall_chart(waterfall_rows(prediction.stages, result.setup_timings_s))
        assert isinstance(chart, alt.LayerChart | alt.VConcatChart)  # one panel, or two stacked
        st.altair_chart(chart)
        st.caption(
            "App stages run in this Streamlit process; server stages are the service's own timings. "
            "'Network' is the round trip minus the server's time. A key-cache miss happens on the first "
            "request with a new key."
        )
    with seen:
        st.markdown("**What the server sees**")
        digit_col, hex_col = st.columns([1, 2.4])
        with digit_col:
            _digit_image(result.digit.pixels, "Your digit: it stays in this app", factor=4)
        with hex_col:
            ciphertext = prediction.request_body["ciphertexts"][0]
            st.code(ciphertext_hex(ciphertext, 64, per_line=8), language=None)
            st.caption(
                f"First 64 of {sizes['ciphertext_bytes']:,} bytes of the ciphertext the server gets instead."
            )
        st.page_link(
            "pages/3_What_the_server_sees.py", label="The full request body", icon=":material/visibility:"
        )


def classify_page() -> None:
    """The main page."""
    state = page_setup("Classify a digit")
    info = SPECS[state.scheme]
    st.title(":material/lock: Encrypted MNIST inference")
    if st.session_state.get("mode") == TAB:
        _in_browser_page()
        return
    st.caption(
        f"Your digit is encrypted here with this session's **{info.title}** key ({info.library}; choose the "
        "scheme in the sidebar). The scoring service classifies the ciphertext without being able to read "
        "the digit or the result; only this app can decrypt the 10 scores."
    )
    left, right = st.columns(2, gap="large")
    with left:
        digit, why_not = _input_column(state)
        st.button(
            "Encrypt and classify",
            icon=":material/lock:",
            type="primary",
            key="classify",
            width="stretch",
            on_click=_request_classification,
        )

    with right:
        st.subheader("2 · Result")
        if st.session_state.get(PENDING):
            _classify(state, digit, why_not)
        problem = st.session_state.get(PROBLEM)
        if problem is not None and problem[0] == "warning" and digit is not None:
            st.session_state.pop(PROBLEM)  # the canvas has a digit now: the "empty" warning is outdated
            problem = None
        if problem is not None:
            kind, message = problem
            if kind == "warning":
                st.warning(message, icon=":material/draw:")
            else:
                st.error(message, icon=":material/error:")
            return
        result = state.last
        if result is None:
            st.info(
                "Draw a digit or pick a test digit, then press **Encrypt and classify**.",
                icon=":material/arrow_back:",
            )
            return
        _big_prediction(result)
        st.altair_chart(charts.scores_chart(result.prediction.scores, result.label, result.digit.true_label))
        _reference(result)
    _costs(result)


# Each page calls ui.state.page_setup() first (services, key, sidebar), so it works on its own too:
# Streamlit runs a page file directly when it treats pages/ as a folder of pages (AppTest does).
st.set_page_config(page_title="Encrypted MNIST", page_icon="🔒", layout="wide")  # before navigation: favicon
navigation = st.navigation(
    [
        st.Page(classify_page, title="Classify a digit", icon=":material/lock:", default=True),
        st.Page("pages/1_How_it_works.py", title="How it works", icon=":material/schema:"),
        st.Page("pages/2_Encrypted_accuracy.py", title="Encrypted accuracy", icon=":material/analytics:"),
        st.Page(
            "pages/3_What_the_server_sees.py", title="What the server sees", icon=":material/visibility:"
        ),
        st.Page("pages/4_Schemes.py", title="Schemes", icon=":material/compare_arrows:"),
    ]
)
navigation.run()
