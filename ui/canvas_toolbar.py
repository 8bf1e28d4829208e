"""Keeps streamlit-drawable-canvas's toolbar off the drawing area, so that every stroke counts.

streamlit-drawable-canvas 0.13 places its toolbar (undo, redo, reset, edit) over the top-right
strip of the canvas (about x > 140, y < 32 on a 280 px canvas), invisible until hovered: a stroke
that starts there lands on the toolbar and is dropped, and the app then says the canvas is empty.
The component has no option to move or hide it, and its styles live in a shadow root that the
page's CSS cannot reach. So a tiny component of ours (script only, nothing shown) adds one style
sheet to the canvas's shadow root: the toolbar sits just above the canvas, and it takes the pointer
only while it is shown. `tests/test_browser.py` draws strokes from every corner and edge and from
under the old toolbar.
"""

from __future__ import annotations

import streamlit as st

# The canvas component's own class names (streamlit-drawable-canvas 0.13, its index-style.css).
_TOOLBAR_CSS = """
.dc-root { margin-top: 2.9rem; }
.dc-toolbar { top: auto !important; bottom: 100% !important; pointer-events: none; }
.dc-root:hover > .dc-toolbar, .dc-toolbar:hover, .dc-toolbar:focus-within,
.dc-toolbar[data-pinned=true] { pointer-events: auto; }
"""

# Adopted style sheets survive the component re-rendering its shadow root. Canvases appear later
# (a Clear remounts the canvas), so every DOM change is followed by one scan per animation frame.
_JS = (
    """
export default function () {
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(CSS_TEXT);
  const patch = () => {
    for (const host of document.querySelectorAll("*")) {
      const root = host.shadowRoot;
      if (root && !root.adoptedStyleSheets.includes(sheet)) {  // harmless where no .dc-* element is
        root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
      }
    }
  };
  let pending = false;
  const schedule = () => {
    if (!pending) {
      pending = true;
      requestAnimationFrame(() => { pending = false; patch(); });
    }
  };
  const observer = new MutationObserver(schedule);
  observer.observe(document.body, { childList: true, subtree: true });
  const timer = setInterval(patch, 500);  // a canvas filling its shadow root is not a body mutation
  patch();
  return () => { observer.disconnect(); clearInterval(timer); };
}
""".replace("CSS_TEXT", repr(_TOOLBAR_CSS.strip()).replace("\\n", " "))
)

_component = st.components.v2.component("encrypted_mnist.canvas_toolbar", html="<span></span>", js=_JS)


def keep_canvas_toolbar_off_the_canvas() -> None:
    """Mount the script (once per page run; it finds every canvas on the page, present or later)."""
    _component(key="canvas_toolbar_off_the_canvas")
