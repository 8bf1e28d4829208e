"""The tab's SEAL client (frontend/browser_encryption/src/tab_seal.js) driven from Python through Node.

``NodeTab`` runs tests/node_tab_client.mjs: one node-seal key pair, as the tab makes it, that encrypts
and decrypts on request; the tests put the real service (in process or over HTTP) between the two.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lib.tab_mode import tab_config

ROOT = Path(__file__).resolve().parents[1]


class NodeTab:
    """A node-seal key pair in a Node process: ``public_material``, ``encrypt``, ``decrypt``."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        node = shutil.which("node")
        if node is None or not (ROOT / "node_modules" / "node-seal").is_dir():
            pytest.skip("Node and node-seal are needed (scripts/setup.sh installs them)")
        self._proc = subprocess.Popen(
            [node, str(ROOT / "tests" / "node_tab_client.mjs")], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        reply = self._ask({"cmd": "keygen", "config": config or tab_config()})
        self.public_material: str = reply["public_material"]
        self.keygen_ms: float = reply["ms"]

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        reply = json.loads(self._proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(f"node: {reply['error']}")
        return reply

    def encrypt(self, pixels: np.ndarray) -> str:
        return str(self._ask({"cmd": "encrypt", "pixels": np.asarray(pixels, dtype=float).tolist()})["ciphertext"])

    def decrypt(self, result: str) -> np.ndarray | str:
        """The 10 scores, or the tab's message when it refuses the result."""
        reply = self._ask({"cmd": "decrypt", "result": result})
        return reply["refused"] if "refused" in reply else np.asarray(reply["scores"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)
