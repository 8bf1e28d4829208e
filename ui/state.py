"""Streamlit glue shared by every page: the session's AppState, the sidebar, the health banner.

The logic is in ``lib.app_state`` and the modules it uses (no Streamlit there); this module only
keeps one ``AppState`` per browser session in ``st.session_state`` and renders it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

from lib.app_state import AppState
from lib.errors import DemoError, SettingsError
from lib.formatting import format_bytes
from lib.health import START_STACK, Health
from lib.reference import PlaintextModel, ReferenceUnavailable, load_reference_model
from lib.schemes import SCHEME_NAMES, SPECS
from lib.session_key import KeyStatus, Progress
from lib.view_models import scheme_title

_STATE = "app_state"
SCHEME_CHOICE = "scheme_choice"  # the sidebar's scheme radio


def _secrets() -> dict[str, Any] | None:
    """``.streamlit/secrets.toml`` as a dict, None if there is none; a broken file is a SettingsError."""
    try:
        return st.secrets.to_dict()
    except StreamlitSecretNotFoundError as exc:
        if getattr(exc, "error_id", None) == "no-secrets-found":
            return None
        raise SettingsError(f"The secrets file could not be read: {exc}") from None


def get_state() -> AppState:
    """This browser session's AppState (made on first use); stops the page on a settings error."""
    state = st.session_state.get(_STATE)
    if state is None:
        try:
            state = AppState.load(_secrets())
        except SettingsError as exc:
            st.error(
                f"**The app is not configured.** {exc.message}  \nSet it as an environment variable or in "
                "`.streamlit/secrets.toml` (see `.streamlit/secrets.toml.example`), then reload this page."
            )
            st.stop()
        st.session_state[_STATE] = state
    return state


def page_setup(title: str) -> AppState:
    """What every page does first: page config, health check, key setup, health banner, sidebar."""
    st.set_page_config(page_title=f"{title} · Encrypted MNIST", page_icon="🔒", layout="wide")
    state = get_state()
    state.refresh()  # on every rerun: probe the services, (re)start key setup when storage answers
    sidebar(state, banner=st.empty())
    return state


def _health_banner(health: Health | None) -> None:
    """One error per service that is down, saying what to do."""
    for message in health.problems() if health is not None else []:
        st.error(message, icon=":material/cloud_off:")


def _service_line(ok: bool, name: str, where: str, refuses_key: bool = False) -> None:
    mark = ":green[●]" if ok else ":red[●]"
    verdict = "reachable" if ok else "**refuses the endpoint key**" if refuses_key else "**not reachable**"
    st.markdown(f"{mark} **{name}**: {verdict}")
    st.caption(f"`{where}`")


def _expires(at: datetime | None) -> str:
    if at is None:
        return "–"
    minutes = max(0, int((at - datetime.now(UTC)).total_seconds() // 60))
    return f"{at:%H:%M} UTC (in {minutes} min)"


def _key_panel(state: AppState, status: KeyStatus) -> None:
    st.markdown("#### Session key")
    if status.busy:
        if status.phase == "switching":
            what = f"Switching to {scheme_title(status.target_scheme)}"
        elif status.phase == "rotating":
            what = "Making a new key"
        else:
            what = f"Making this session's {scheme_title(status.target_scheme)} key"
        st.progress(max(status.fraction, 0.02), text=f"{what}: {status.message} … ({status.elapsed_s:.0f} s)")
        st.caption(
            "Once per session and per scheme (about 2 s for ei, well under a second for the SEAL 4 schemes). "
            "The secret key is made here and never leaves this app."
        )
    if status.phase == "failed":
        st.error(status.message, icon=":material/key_off:")
        if status.failed_on_storage:
            st.caption("The app retries by itself as soon as blob storage answers.")
        if st.button("Retry now", key="key_retry", width="stretch"):
            state.key.start()
            st.rerun()
    if status.key_id:
        st.markdown(
            f"**Scheme** {scheme_title(status.scheme)}  \n"
            f"**Key id** `{status.key_id}`  \n"
            f"**Public keys** {format_bytes(status.key_bytes)}, uploaded once  \n"
            f"**Read-only SAS expires** {_expires(status.sas_expires_at)}"
        )
        st.markdown("**Stored at** (blob URL, without the SAS)")
        st.code(status.key_blob_url, language=None, wrap_lines=True)
        st.caption("The secret key exists only in this app's memory.")
    if status.notice:
        st.warning(status.notice)
    if st.button(
        "New key",
        icon=":material/autorenew:",
        key="key_rotate",
        disabled=not status.usable,
        help="Make a new key pair, upload its public keys and delete the old key blob.",
        width="stretch",
    ):
        state.key.rotate()
        st.rerun()


def _choose_scheme() -> None:
    """The radio's callback: switch the session to the chosen scheme (a new key in the background)."""
    state: AppState = st.session_state[_STATE]
    try:
        state.use_scheme(st.session_state[SCHEME_CHOICE])
    except DemoError as exc:
        st.session_state[SCHEME_CHOICE] = state.scheme
        st.toast(exc.message, icon=":material/error:")


def _scheme_panel(state: AppState) -> None:
    """The scheme radio and what the chosen scheme puts in blob storage and how secure it is.

    Outside the status fragment on purpose: a change reruns the whole page, so the page's texts
    follow the new scheme at once.
    """
    # The AppState is the truth (it survives page switches); the radio shows it. A failed switch
    # sets it back to the scheme in use, and the next run shows that.
    st.session_state[SCHEME_CHOICE] = state.scheme
    st.markdown("#### Encryption scheme")
    st.radio(
        "Encryption scheme",
        SCHEME_NAMES,
        format_func=scheme_title,
        key=SCHEME_CHOICE,
        on_change=_choose_scheme,
        label_visibility="collapsed",
        help="Switching makes a new key pair for that scheme in the background, uploads its public "
        "material and deletes the old key's blob.",
    )
    info = SPECS[state.scheme]
    st.caption(f"{info.summary} ({info.library})")
    st.markdown(f"**Security** {info.security}  \n**In blob storage** {info.public_material}")


def sidebar(state: AppState, banner: Any) -> None:
    """Scheme, services and session key in the sidebar, and the health ``banner`` on the page.

    The scheme radio is drawn once per page run; a fragment draws the rest. While the key is being
    made, or a service is down, the fragment reruns on its own (not the whole page, so it never gets
    in the way of a click) to show progress and to notice a service coming back; otherwise every
    interaction redraws it.
    """
    status = state.key.status()
    health = state.health
    pending = status.busy or (health is not None and not health.all_ok) or status.phase == "failed"

    @st.fragment(run_every=1.0 if pending else None, key="sidebar_status")
    def panel() -> None:
        current_health = state.refresh(max_age_s=2.5) if pending else state.health
        with banner.container():
            _health_banner(current_health)
        st.markdown("#### Services")
        if current_health is not None:
            _service_line(current_health.storage_ok, "Blob storage", current_health.storage_endpoint)
            _service_line(
                current_health.scoring_ok,
                "Scoring service",
                current_health.scoring_url,
                current_health.scoring_refuses_key,
            )
            if current_health.stack_down:
                st.caption(f"Start them with {START_STACK}.")
        _key_panel(state, state.key.status())

    with st.sidebar:
        _scheme_panel(state)
        panel()


def key_progress(placeholder: Any) -> Progress:
    """A progress callback that shows key setup in ``placeholder`` while a prediction waits for it."""

    def show(message: str, fraction: float) -> None:
        placeholder.progress(
            max(fraction, 0.02),
            text=f"Waiting for this session's key (once per session and scheme): {message} …",
        )

    return show


def reference_model(missing_note: str = "") -> PlaintextModel | None:
    """The plaintext model for the reference columns; None, with a caption saying why, if unreadable."""
    try:
        return load_reference_model()
    except ReferenceUnavailable as exc:
        st.caption(f"{exc.message} {missing_note}".strip())
        return None

