"""The "Encrypt in my browser" component: the tab's code (frontend/browser_encryption/) mounted in a page.

The tab's code is built into static/browser_encryption.js by scripts/setup.sh and served by Streamlit's
static file serving (``server.enableStaticServing``); the component itself is a small loader that
imports it (with the bundle's hash in the URL, so a rebuilt bundle is never served stale). Python
hands the tab the scheme's configuration and, after each request, the relay's answer; the tab hands
Python one trigger value per request (``request``), which ``lib.tab_mode.TabRelay`` answers in the
callback, before the page runs, so the answer goes down in the same run.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

from lib.tab_mode import TabRelay, tab_config
from ui.state import get_state

BUNDLE = Path(__file__).resolve().parents[1] / "static" / "browser_encryption.js"
KEY = "browser_encryption"
_ANSWER = "browser_encryption_answer"
_RELAY = "browser_encryption_relay"

_LOADER = """
export default function (component) {
  const url = new URL("app/static/browser_encryption.js?v=BUNDLE_HASH", document.baseURI);
  import(url.href).then((tab) => tab.mount(component)).catch((error) => {
    component.parentElement.textContent =
      "The in-browser encryption code could not be loaded (" + error + "). Reload the page; if that does not help, " +
      "run scripts/setup.sh on the app's host, which builds it.";
  });
}
"""


@functools.cache
def _component() -> Any:
    digest = hashlib.sha256(BUNDLE.read_bytes()).hexdigest()[:16]
    return st.components.v2.component(
        "encrypted_mnist.browser_encryption", html="<div></div>", js=_LOADER.replace("BUNDLE_HASH", digest)
    )


@functools.cache
def _config() -> dict[str, Any]:
    return tab_config()


def _relay() -> TabRelay:
    """This browser session's relay (made on first use; its blob goes when the session ends)."""
    relay = st.session_state.get(_RELAY)
    if relay is None:
        relay = st.session_state[_RELAY] = TabRelay(get_state().settings)
    return relay


def _on_request() -> None:
    """The tab sent a ciphertext: upload its keys if new, relay it, keep the answer for the tab."""
    request = st.session_state[KEY].get("request")
    if request is not None:
        st.session_state[_ANSWER] = _relay().answer(request)


def browser_encryption() -> None:
    """Mount the component: draw, encrypt, relay, decrypt, all but the relay in the tab."""
    if not BUNDLE.is_file():
        st.error(
            "The in-browser encryption code has not been built. Run `scripts/setup.sh` (it builds "
            "`static/browser_encryption.js` from `frontend/browser_encryption/`), then reload.",
            icon=":material/build:",
        )
        return
    _component()(
        key=KEY,
        data={"config": _config(), "answer": st.session_state.get(_ANSWER)},
        on_request_change=_on_request,
    )
