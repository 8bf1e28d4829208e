"""The service side of the scoring contract (docs/contract.md): parse and validate requests.

Nothing here touches the network or native code; every field is checked for type, shape and
size, so later stages only see well-formed values.
"""
from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass

from service.errors import RequestRejected

CONTRACT = "encrypted-mnist/v1"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: "$" would let a final "\n" through
_CONTAINER = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
# C0, DEL and C1 control characters: never part of a URL, a blob name, a container or a connection string.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# JSON's "\ud800" escapes decode to lone surrogates: strings that UTF-8 (HTTP, storage, logs) cannot carry.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# What in a JSON text can decode to a surrogate: an escape \uD800-\uDFFF, or the character itself.
_SURROGATE_SOURCE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


@dataclass(frozen=True)
class ScoreRequest:
    """Our request: scheme, ciphertexts, and a SAS URL of the public keys with their SHA-256."""

    scheme: dict
    ciphertexts: list[bytes]
    """Decoded from base64 (strictly) by the parser."""
    key_url: str
    key_sha256: str


@dataclass(frozen=True)
class SeedRequest:
    """The seed's request: ciphertexts, and blob name, container and connection string of the keys."""

    ciphertexts: list[bytes]
    key_id: str
    conn_str: str
    container: str


def _bad(message: str) -> RequestRejected:
    return RequestRejected(400, "bad_request", message)


def _string(body: dict, name: str, max_length: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(f"'{name}' must be a non-empty string.")
    if len(value) > max_length:
        raise _bad(f"'{name}' is longer than {max_length} characters.")
    if _CONTROL_CHARACTERS.search(value):
        raise _bad(f"'{name}' must not contain control characters.")
    return value


def _not_a_number(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON")


def _check_text(body: object, raw_text: str) -> None:
    """Refuse a body holding a string (a value or a key, at any depth) that UTF-8 cannot encode.

    JSON's ``\\udXXX`` escapes can make lone surrogates, which would fail wherever the string is
    encoded later (a URL, a log line); refused here, every later stage sees only encodable text.
    """
    if raw_text.isascii() and "\\u" not in raw_text:
        return  # the usual case, found in microseconds: no escapes, and no character beyond ASCII
    if not _SURROGATE_SOURCE.search(raw_text):
        return  # nothing in the text can decode to a surrogate
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"{_surrogate_field(body)} is not valid Unicode text: it holds a lone surrogate "
                   "(\\ud800-\\udfff).") from None
    except RecursionError:  # (json.loads took it, so it is not deeper than the limit; kept for safety)
        raise RequestRejected(400, "bad_json", "The request body is nested too deeply.") from None


def _surrogate_field(body: object, max_nodes: int = 100_000) -> str:
    """Where the first string with a lone surrogate is, as 'keys.url', for the message."""
    pending: list[tuple[object, str]] = [(body, "")]
    for _ in range(max_nodes):
        if not pending:
            break
        value, where = pending.pop()
        if isinstance(value, str):
            if _SURROGATES.search(value):
                return f"'{where[:80]}'"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATES.search(key):
                    return f"A key in '{where[:80] or 'the body'}'"
                pending.append((item, f"{where}.{key}" if where else key))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{index}]") for index, item in enumerate(value))
    return "A string in the body"


def _ciphertext_list(value: object, name: str, max_count: int, max_chars: int) -> list[bytes]:
    if not isinstance(value, list) or not value:
        raise _bad(f"'{name}' must be a non-empty list of base64 ciphertexts.")
    if len(value) > max_count:
        raise RequestRejected(413, "too_large", f"'{name}' holds {len(value)} ciphertexts; at most {max_count}.")
    decoded = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise _bad(f"Every item of '{name}' must be a non-empty base64 string.")
        if len(item) > max_chars:
            raise RequestRejected(413, "too_large", f"A ciphertext in '{name}' is over {max_chars} characters.")
        try:
            decoded.append(decode_base64(item))
        except RequestRejected:
            raise _bad(f"An item of '{name}' is not valid base64.") from None
    return decoded


def decode_base64(text: str) -> bytes:
    """Strict base64 decoding: only the alphabet, correct padding."""
    if len(text) % 4:
        raise _bad("A ciphertext is not valid base64.")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _bad("A ciphertext is not valid base64.") from None


def parse_request(
    raw_data: str | bytes | None, max_request_bytes: int, max_ciphertexts: int, max_ciphertext_bytes: int
) -> ScoreRequest | SeedRequest:
    """Parse a request body of either shape, or raise RequestRejected."""
    if raw_data is None or len(raw_data) == 0:
        raise RequestRejected(400, "bad_json", "The request body is empty; send a JSON object.")
    if len(raw_data) > max_request_bytes:
        raise RequestRejected(413, "too_large", f"The request body is over {max_request_bytes} bytes.")
    if isinstance(raw_data, bytes):
        try:  # JSON between systems is UTF-8 (RFC 8259); json.loads would also take UTF-16 and surrogates
            raw_data = raw_data.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRejected(400, "bad_json", "The request body is not UTF-8 text; send JSON in UTF-8.") \
                from None
    try:
        body = json.loads(raw_data, parse_constant=_not_a_number)  # NaN and Infinity are not JSON
    except (ValueError, RecursionError):  # also numbers of over 4300 digits, and nesting too deep
        raise RequestRejected(400, "bad_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise RequestRejected(400, "bad_json", "The request body must be a JSON object.")
    _check_text(body, raw_data)
    max_chars = 4 * (-(-max_ciphertext_bytes // 3))

    if "contract" not in body and "data" in body:
        return SeedRequest(
            ciphertexts=_ciphertext_list(body.get("data"), "data", max_ciphertexts, max_chars),
            key_id=_string(body, "key_id", 1024),
            conn_str=_string(body, "conn_str", 4096),
            container=_container(body),
        )

    if body.get("contract") != CONTRACT:
        raise _bad(f"'contract' must be {CONTRACT!r}, or send the seed's shape with 'data'.")
    scheme = body.get("scheme")
    if not isinstance(scheme, dict) or not isinstance(scheme.get("name"), str):
        raise _bad("'scheme' must be an object with 'name', 'version' and 'params'.")
    keys = body.get("keys")
    if not isinstance(keys, dict):
        raise _bad("'keys' must be an object with 'url' and 'sha256'.")
    key_url = _string(keys, "url", 4096)
    sha256 = keys.get("sha256")
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        raise _bad("'keys.sha256' must be 64 lowercase hex characters.")
    return ScoreRequest(
        scheme=scheme,
        ciphertexts=_ciphertext_list(body.get("ciphertexts"), "ciphertexts", max_ciphertexts, max_chars),
        key_url=key_url,
        key_sha256=sha256,
    )


def _container(body: dict) -> str:
    container = _string(body, "container", 63)
    if not _CONTAINER.fullmatch(container):
        raise _bad("'container' is not a valid blob container name.")
    return container
