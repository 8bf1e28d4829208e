"""lib.display: the latency waterfall, and what the request preview hides (units: test_formatting.py)."""

from __future__ import annotations

import pytest
from app_fakes import SAS_URL

from lib.display import (
    ciphertext_hex,
    redact_sas,
    request_preview,
    sas_fields,
    waterfall_rows,
)
from lib.session import Stage


def test_waterfall_puts_key_setup_apart_and_stages_end_to_end() -> None:
    stages = [
        Stage("encrypt", 0.1, "client"),
        Stage("key fetch (cache miss)", 0.2, "server"),
        Stage("decrypt", 0.3, "client"),
    ]
    rows = waterfall_rows(stages, {"keygen": 2.0, "upload": 0.5})
    assert [r.phase for r in rows] == ["Once per session"] * 2 + ["This prediction"] * 3
    assert [r.stage for r in rows[2:]] == ["Encrypt (app)", "Server: key fetch (cache miss)", "Decrypt (app)"]
    assert rows[1].start_s == pytest.approx(2.0) and rows[1].end_s == pytest.approx(2.5)
    assert rows[2].start_s == 0.0 and rows[4].end_s == pytest.approx(0.6)
    assert [r.where for r in rows[2:]] == ["app", "server", "app"]


def test_sas_signature_is_hidden_and_the_body_is_truncated_not_mutated() -> None:
    assert "SECRETSIG" not in redact_sas(SAS_URL) and "sig=<signature hidden>" in redact_sas(SAS_URL)
    assert sas_fields(SAS_URL)["sp"] == "r" and "sig" not in sas_fields(SAS_URL)
    body = {"ciphertexts": ["x" * 1000], "keys": {"url": SAS_URL, "sha256": "ab"}}
    preview = request_preview(body, keep_chars=10)
    assert preview["ciphertexts"][0].startswith("x" * 10 + "… [990 more")
    assert "SECRETSIG" not in str(preview)
    assert body["ciphertexts"][0] == "x" * 1000 and body["keys"]["url"] == SAS_URL


def test_ciphertext_hex_dumps_the_first_bytes() -> None:
    assert ciphertext_hex("XqEQAwUB", n_bytes=4, per_line=2) == "0000  5e a1\n0002  10 03"
