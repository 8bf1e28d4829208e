"""Pure helpers that turn results into what the pages show: stage labels, rows, previews.

Nothing here draws anything (no streamlit, no charts): the pages pass these rows and strings to
their widgets, and tests check them without a browser. Numbers are formatted by ``lib.formatting``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import numpy as np

from lib.session import Stage

__all__ = [
    "WaterfallRow",
    "ciphertext_hex",
    "redact_sas",
    "request_preview",
    "sas_fields",
    "softmax",
    "stage_label",
    "upscale",
    "waterfall_rows",
]

Phase = Literal["Once per session", "This prediction"]


_STAGE_LABELS = {
    "encrypt": "Encrypt (app)",
    "request": "Network + (de)serialisation",
    "parse": "Server: parse and checks",
    "compute": "Server: compute on ciphertext",
    "decrypt": "Decrypt (app)",
    "re-upload keys": "Re-upload public keys (app)",
    "keygen": "Key generation (app)",
    "upload": "Upload public keys (app)",
}


def stage_label(name: str) -> str:
    """A presenter-friendly name for a stage of ``Prediction.stages`` or of the key setup."""
    if name.startswith("key fetch"):
        cache = "hit" if "hit" in name else "miss" if "miss" in name else ""
        return f"Server: key fetch (cache {cache})" if cache else "Server: key fetch"
    return _STAGE_LABELS.get(name, name)


@dataclass(frozen=True)
class WaterfallRow:
    """One bar of the latency waterfall: [start_s, end_s] on the phase's own time axis."""

    phase: Phase
    stage: str
    where: Literal["app", "server"]
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        """The bar's length."""
        return self.end_s - self.start_s


def waterfall_rows(
    stages: list[Stage], setup_timings_s: dict[str, float] | None = None
) -> list[WaterfallRow]:
    """Bars for the waterfall chart: the one-off key setup, then this prediction's stages in order.

    Each phase starts at 0 s: key setup happens once per session (before the first prediction),
    so stacking it in front of every prediction would overstate what a prediction costs.
    """
    rows: list[WaterfallRow] = []
    t = 0.0
    for name in ("keygen", "upload"):
        seconds = (setup_timings_s or {}).get(name)
        if seconds is None:
            continue
        rows.append(WaterfallRow("Once per session", stage_label(name), "app", t, t + seconds))
        t += seconds
    t = 0.0
    for stage in stages:
        where: Literal["app", "server"] = "server" if stage.source == "server" else "app"
        rows.append(WaterfallRow("This prediction", stage_label(stage.name), where, t, t + stage.seconds))
        t += stage.seconds
    return rows


def softmax(scores: np.ndarray) -> np.ndarray:
    """Probabilities from the model's logits (the model is a multinomial logistic regression)."""
    z = np.asarray(scores, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def upscale(pixels: np.ndarray, factor: int = 8) -> np.ndarray:
    """784 pixels in [0, 1] as a crisp (28·factor)² uint8 image (no blurring by the browser)."""
    image = np.clip(np.asarray(pixels, dtype=np.float64).reshape(28, 28), 0.0, 1.0)
    big = np.kron(image, np.ones((factor, factor)))
    return np.rint(big * 255).astype(np.uint8)


def ciphertext_hex(ciphertext_b64: str, n_bytes: int = 96, per_line: int = 16) -> str:
    """The first ``n_bytes`` of a base64 ciphertext as a hex dump (offset, then bytes)."""
    # Decode only a prefix: a whole ciphertext is ~220 KB of base64.
    prefix = ciphertext_b64[: 4 * math.ceil(n_bytes / 3)]
    try:
        raw = base64.b64decode(prefix, validate=False)[:n_bytes]
    except (binascii.Error, ValueError):
        return "(not base64)"
    lines = []
    for offset in range(0, len(raw), per_line):
        chunk = raw[offset : offset + per_line]
        lines.append(f"{offset:04x}  " + " ".join(f"{b:02x}" for b in chunk))
    return "\n".join(lines)


def redact_sas(url: str) -> str:
    """``url`` with the SAS signature (``sig``) replaced by a placeholder; other fields kept."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    fields = [
        (key, "<signature hidden>" if key == "sig" else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    query = "&".join(f"{key}={value if key == 'sig' else quote(value, safe='-_.:')}" for key, value in fields)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def sas_fields(url: str) -> dict[str, str]:
    """The SAS query fields of ``url`` without the signature, e.g. {'sp': 'r', 'se': '...'}."""
    return {key: value for key, value in parse_qsl(urlsplit(url).query) if key != "sig"}


def request_preview(request_body: dict[str, Any], keep_chars: int = 120) -> dict[str, Any]:
    """The request body as sent, with each ciphertext cut to ``keep_chars`` and the SAS signature hidden."""
    body = copy.deepcopy(request_body)
    ciphertexts = body.get("ciphertexts")
    if isinstance(ciphertexts, list):
        body["ciphertexts"] = [
            f"{c[:keep_chars]}… [{len(c) - keep_chars:,} more base64 characters]"
            if isinstance(c, str) and len(c) > keep_chars
            else c
            for c in ciphertexts
        ]
    keys = body.get("keys")
    if isinstance(keys, dict) and isinstance(keys.get("url"), str):
        keys["url"] = redact_sas(keys["url"])
    return body
