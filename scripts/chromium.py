"""Debian's Chromium as the browser tests and the browser benchmark launch it (headless, through Playwright).

Playwright never downloads a browser here: it drives /usr/bin/chromium (``scripts/setup.sh --dev``
installs it) with these flags.
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
