"""The client side of the scoring contract (docs/contract.md): build requests, check responses.

Requests carry ciphertexts plus *where* the public keys are (a read-only SAS URL and the keys'
SHA-256), never the keys themselves and never a secret key. Responses are checked field by field
so a malformed answer becomes a clear ``ServiceRejected`` instead of a KeyError somewhere later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lib.errors import InvalidInput, ServiceRejected

__all__ = [
    "CONTRACT",
    "ServerResult",
    "build_score_request",
    "build_seed_request",
    "parse_score_response",
]

CONTRACT = "encrypted-mnist/v1"

TIMING_KEYS = ("parse", "key_fetch", "compute", "total")
SIZE_KEYS = ("request_bytes", "ciphertext_bytes", "key_bytes", "result_bytes")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ServerResult:
    """A checked 200 response: result ciphertexts plus what the server measured."""

    scheme: str
    result: tuple[str, ...]
    key_cache: str  # "hit" or "miss"
    timings_ms: dict[str, float]
    sizes: dict[str, int]


def _check_ciphertexts(ciphertexts: Sequence[str]) -> list[str]:
    if isinstance(ciphertexts, (str, bytes)) or not isinstance(ciphertexts, Sequence) or not ciphertexts:
        raise InvalidInput("A request needs a non-empty list of base64 ciphertexts.")
    if not all(isinstance(c, str) and c for c in ciphertexts):
        raise InvalidInput("Every ciphertext must be a non-empty base64 string.")
    return list(ciphertexts)


def build_score_request(
    scheme_descriptor: Mapping[str, Any], ciphertexts: Sequence[str], key_url: str, key_sha256: str
) -> dict[str, Any]:
    """Our request (contract section 1): scheme, ciphertexts, and the keys' SAS URL and SHA-256."""
    name = scheme_descriptor.get("name")
    version = scheme_descriptor.get("version")
    params = scheme_descriptor.get("params")
    if not isinstance(name, str) or not isinstance(version, str) or not isinstance(params, Mapping):
        raise InvalidInput("The scheme descriptor needs a name, a version and params.")
    if not isinstance(key_url, str) or not key_url.startswith(("http://", "https://")) or "?" not in key_url:
        raise InvalidInput("The key URL must be an http(s) blob URL with a SAS query string.")
    if not isinstance(key_sha256, str) or not _SHA256_RE.match(key_sha256):
        raise InvalidInput("The key hash must be 64 lowercase hex digits (SHA-256).")
    return {
        "contract": CONTRACT,
        "scheme": {"name": name, "version": version, "params": _plain_json(params)},
        "ciphertexts": _check_ciphertexts(ciphertexts),
        "keys": {"url": key_url, "sha256": key_sha256},
    }


def build_seed_request(
    ciphertexts: Sequence[str], key_id: str, conn_str: str, container: str
) -> dict[str, Any]:
    """The seed's request (contract section 2), as the Azure ML how-to's client sends it.

    Note that it carries a storage connection string (with the account key) to the service; our
    own requests use a read-only SAS instead. The response is a bare JSON list of ciphertexts.
    """
    for label, value in (("key_id", key_id), ("conn_str", conn_str), ("container", container)):
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"The seed request needs a non-empty {label}.")
    return {
        "data": _check_ciphertexts(ciphertexts),
        "key_id": key_id,
        "conn_str": conn_str,
        "container": container,
    }


def _plain_json(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (so a caller's later edits cannot leak in)."""
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    return value


def _malformed(message: str) -> ServiceRejected:
    return ServiceRejected(
        200,
        "bad_response",
        f"{message}. Check that SCORING_URL points at this demo's scoring service (contract {CONTRACT}).",
    )


def _number_map(
    container: Mapping[str, Any], name: str, keys: Sequence[str], integral: bool
) -> dict[str, Any]:
    raw = container.get(name)
    if not isinstance(raw, Mapping):
        raise _malformed(f"server.{name} is missing or not an object")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        ok_type = isinstance(value, int) if integral else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < 0:
            raise _malformed(
                f"server.{name}.{key} must be a non-negative {'integer' if integral else 'number'}"
            )
        out[str(key)] = int(value) if integral else float(value)
    missing = [k for k in keys if k not in out]
    if missing:
        raise _malformed(f"server.{name} lacks {', '.join(missing)}")
    return out


def parse_score_response(
    body: Any, *, expected_scheme: str | None = None, expected_results: int | None = None
) -> ServerResult:
    """Check a 200 response body against the contract and return its parts.

    ``expected_scheme`` (e.g. ``"ei-0.9"``) and ``expected_results`` (e.g. 10 classes) add checks
    the caller knows about. Anything malformed raises ServiceRejected (status 200, ``bad_response``).
    """
    if not isinstance(body, Mapping):
        raise _malformed("The response is not a JSON object")
    if body.get("contract") != CONTRACT:
        raise ServiceRejected(
            200,
            "contract_mismatch",
            f"the service answered with contract {str(body.get('contract'))[:40]!r}, this app speaks "
            f"{CONTRACT!r}: check that SCORING_URL points at this demo's scoring service.",
        )
    scheme = body.get("scheme")
    if not isinstance(scheme, str) or not scheme:
        raise _malformed("scheme is missing")
    if expected_scheme is not None and scheme != expected_scheme:
        raise _malformed(f"scheme is {scheme!r}, expected {expected_scheme!r}")
    result = body.get("result")
    if not isinstance(result, list) or not result or not all(isinstance(r, str) and r for r in result):
        raise _malformed("result must be a non-empty list of base64 strings")
    if expected_results is not None and len(result) != expected_results:
        raise _malformed(f"result holds {len(result)} ciphertexts, expected {expected_results}")
    server = body.get("server")
    if not isinstance(server, Mapping):
        raise _malformed("server is missing or not an object")
    key_cache = server.get("key_cache")
    if key_cache not in ("hit", "miss"):
        raise _malformed("server.key_cache must be 'hit' or 'miss'")
    return ServerResult(
        scheme=scheme,
        result=tuple(result),
        key_cache=key_cache,
        timings_ms=_number_map(server, "timings_ms", TIMING_KEYS, integral=False),
        sizes=_number_map(server, "sizes", SIZE_KEYS, integral=True),
    )
