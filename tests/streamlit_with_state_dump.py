"""``streamlit run`` in this process, for tests/test_browser_mode.py only: it can dump every session's state.

Usage: ``python tests/streamlit_with_state_dump.py DUMP_DIR run app.py [streamlit options]``. When the
file DUMP_DIR/request appears, a watcher thread writes DUMP_DIR/state.bin: every value in every
browser session's ``st.session_state``, walked into its bytes and texts (objects through their
attributes, arrays as their raw bytes), then removes the request. The test searches that dump for
the digit's pixels and the tab's secret key.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _walk(value: Any, out: list[bytes], seen: set[int], depth: int = 0) -> None:
    if depth > 12 or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, bytes | bytearray | memoryview):
        out.append(bytes(value))
    elif isinstance(value, str):
        out.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, int | float | bool) or value is None:
        out.append(repr(value).encode())
    elif isinstance(value, np.ndarray):
        out.append(value.tobytes())
        out.append(repr(value.tolist()).encode())
    elif isinstance(value, dict):
        for key, item in list(value.items()):
            _walk(key, out, seen, depth + 1)
            _walk(item, out, seen, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in list(value):
            _walk(item, out, seen, depth + 1)
    else:
        out.append(repr(value).encode())
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict):
            _walk(attributes, out, seen, depth + 1)
        for slot in getattr(type(value), "__slots__", ()):
            if isinstance(slot, str) and hasattr(value, slot):
                _walk(getattr(value, slot), out, seen, depth + 1)


def _dump(path: Path) -> None:
    from streamlit.runtime import Runtime

    out: list[bytes] = []
    for info in Runtime.instance()._session_mgr.list_sessions():
        state = info.session.session_state
        for key in list(state._keys()):
            try:
                value = state[key]
            except Exception:  # noqa: BLE001, S112 (a widget without a value yet)
                continue
            _walk(key, out, set())
            _walk(value, out, set())
    path.write_bytes(b"\n".join(out))


def _watch(folder: Path) -> None:
    request = folder / "request"
    while True:
        if request.exists():
            _dump(folder / "state.bin.tmp")
            (folder / "state.bin.tmp").rename(folder / "state.bin")
            request.unlink()
        time.sleep(0.1)


if __name__ == "__main__":
    dump_dir = Path(sys.argv[1])
    dump_dir.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_watch, args=(dump_dir,), daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", *sys.argv[2:]]
    sys.exit(cli.main())
