"""Integration: malformed and hostile requests against the real scoring service, over HTTP.

Every kind of bad input below gets its exact status and error code from docs/contract.md, in the
contract's shape (a JSON object with string ``error`` and ``message``, ``Content-Type:
application/json``), and the service is still healthy afterwards. The requests are made by hand
from real bfv and ckks key pairs whose public keys are in the tests' Azurite, so a case fails at the
one check it is about and not at an earlier one. A property-style test sends many random strings in
every string field and checks that none gets a 500. The last test starts a service of its own and
checks that a normal start and good requests log no ERROR and no traceback.

The seed's ``ei`` scheme has its slow cases (SEAL 3.5 aborting on crafted input, the seed's own
client) in tests/test_service_http.py.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import hashlib
import http.client
import json
import os
import random
import re
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from lib.schemes import ClientScheme, new_client
from scripts.local_stack import DEFAULT_ENTRY_SCRIPT, DEFAULT_MODEL_DIR, HOST, free_port, running, services
from service.shared.specs import SPECS

CONTAINER = "public-keys"
ACCOUNT = "devstoreaccount1"
CONTRACT = "encrypted-mnist/v1"
JSON = {"Content-Type": "application/json"}
SHA_OF_NOTHING = hashlib.sha256(b"").hexdigest()


def account_key(connection_string: str) -> str:
    return dict(part.split("=", 1) for part in connection_string.split(";") if part)["AccountKey"]


@dataclasses.dataclass(frozen=True)
class Keys:
    """One key pair's request material: ciphertexts of a digit, and its uploaded public keys."""

    client: ClientScheme
    ciphertexts: list[str]
    url: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class Ctx:
    """What the cases build their requests from."""

    azurite_port: int
    endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1
    connection_string: str
    bfv: Keys
    ckks: Keys
    sas: Callable[..., str]  # sas(blob, minutes=30, **permissions): a SAS URL of a blob
    upload: Callable[[str, bytes], str]  # upload(blob, data): its read-only SAS URL

    def query(self) -> str:
        """The bfv key's SAS query string."""
        return self.bfv.url.split("?", 1)[1]


@pytest.fixture(scope="module")
def ctx(azurite) -> Ctx:
    blob_service = BlobServiceClient.from_connection_string(azurite.connection_string)
    with contextlib.suppress(ResourceExistsError):
        blob_service.create_container(CONTAINER)
    key = account_key(azurite.connection_string)

    def sas(blob: str, minutes: float = 30, **permissions: bool) -> str:
        token = generate_blob_sas(
            ACCOUNT, CONTAINER, blob, account_key=key,
            permission=BlobSasPermissions(**(permissions or {"read": True})),
            expiry=datetime.now(UTC) + timedelta(minutes=minutes), start=datetime.now(UTC) - timedelta(minutes=5),
        )  # fmt: skip
        return f"{azurite.blob_endpoint}/{CONTAINER}/{blob}?{token}"

    def upload(blob: str, data: bytes) -> str:
        blob_service.get_blob_client(container=CONTAINER, blob=blob).upload_blob(data, overwrite=True)
        return sas(blob)

    rng = np.random.default_rng(10)
    digit = rng.random(784) * (rng.random(784) > 0.6)
    made = {}
    for name in ("bfv", "ckks"):
        client = new_client(name)
        material = client.public_material()
        made[name] = Keys(client, client.encrypt(digit), upload(client.key_id, material),
                          hashlib.sha256(material).hexdigest())
    return Ctx(azurite.port, azurite.blob_endpoint, azurite.connection_string, made["bfv"], made["ckks"], sas, upload)


# --- building requests -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One HTTP request: a body (a JSON-able object, or raw bytes), a method, a path, headers."""

    body: object = None
    method: str = "POST"
    path: str = "/score"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def data(self) -> bytes | None:
        if self.body is None or isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode("ascii")  # a lone surrogate becomes the escape "\ud800"


@dataclasses.dataclass(frozen=True)
class Raw:
    """Bytes sent as they are over a new connection (for what an HTTP client library will not send)."""

    request: bytes
    method: str = "POST"


def chunked(body: bytes, size: int = 4096) -> bytes:
    """``body`` in HTTP/1.1 chunked transfer coding."""
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def post_chunked(framed: bytes) -> Raw:
    return Raw(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + framed)


def ours(keys: Keys, /, **changes: object) -> dict[str, Any]:
    """A good request of ``keys``' scheme, with dotted paths changed ("keys.url": ...; ... deletes)."""
    body: dict[str, Any] = {"contract": CONTRACT, "scheme": keys.client.descriptor,
                            "ciphertexts": list(keys.ciphertexts), "keys": {"url": keys.url, "sha256": keys.sha256}}
    return edited(body, changes)


def edited(body: dict[str, Any], changes: dict[str, object]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for path, value in changes.items():
        *parents, last = path.split(".")
        target = body
        for name in parents:
            target = target[name]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return body


def sealed3(payload: bytes) -> bytes:
    """A SEAL 3.5 object frame (magic, version, zlib) around ``payload``: passes ei's header checks."""
    body = zlib.compress(payload)
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 3, 5, 1, 0, 16 + len(body)) + body


EI_CIPHERTEXT = base64.b64encode(sealed3(os.urandom(2000))).decode()


def seed(c: Ctx, **changes: object) -> dict[str, Any]:
    """The seed's request shape for a key blob that does not exist, with ``changes``."""
    body = {"data": [EI_CIPHERTEXT], "key_id": "no-such-key", "conn_str": c.connection_string, "container": CONTAINER}
    return edited(body, changes)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


def bfv_raw(c: Ctx, index: int = 0) -> bytes:
    return base64.b64decode(c.bfv.ciphertexts[index])


def azurite_url(c: Ctx, path: str, query: str | None = None) -> str:
    return f"http://127.0.0.1:{c.azurite_port}{path}?{c.query() if query is None else query}"


def blob_path(c: Ctx) -> str:
    return f"/{ACCOUNT}/{CONTAINER}/{c.bfv.client.key_id}"


def other_port(c: Ctx) -> int:
    return c.azurite_port + 1 if c.azurite_port < 65535 else c.azurite_port - 1


def with_query(c: Ctx, **fields: str) -> str:
    """The bfv key's SAS URL with query fields replaced (or added)."""
    query = dict(part.split("=", 1) for part in c.query().split("&"))
    query.update(fields)
    return f"{c.bfv.url.split('?')[0]}?{'&'.join(f'{k}={v}' for k, v in query.items())}"


def tampered(url: str) -> str:
    base, query = url.split("?", 1)
    fields = dict(part.split("=", 1) for part in query.split("&"))
    fields["sig"] = ("A" if fields["sig"][0] != "A" else "B") + fields["sig"][1:]
    return f"{base}?{'&'.join(f'{k}={v}' for k, v in fields.items())}"


def evil_conn(c: Ctx) -> str:
    return "DefaultEndpointsProtocol=https;AccountName=evil;AccountKey=a2V5;EndpointSuffix=core.windows.net"


def azurite_conn(c: Ctx, key: str) -> str:
    return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};BlobEndpoint={c.endpoint}"


SUR = "\ud800"  # a lone surrogate: json.loads makes it from the escape, UTF-8 cannot encode it

Build = Callable[[Ctx], object]  # a Call, a JSON-able body, or raw bytes
CASES: list[Any] = []


def case(name: str, status: int, code: str | set[str], build: Build) -> None:
    CASES.append(pytest.param(build, status, code, id=name))


# The body as a whole.
case("empty body", 400, "bad_json", lambda c: b"")
case("whitespace body", 400, "bad_json", lambda c: b"  \r\n\t ")
case("not json", 400, "bad_json", lambda c: b"{this is not json")
case("truncated json", 400, "bad_json", lambda c: json.dumps(ours(c.bfv)).encode()[:5000])
case("json array", 400, "bad_json", lambda c: b"[1, 2, 3]")
case("json string", 400, "bad_json", lambda c: b'"text"')
case("json null", 400, "bad_json", lambda c: b"null")
case("json number", 400, "bad_json", lambda c: b"12")
case("invalid utf-8", 400, "bad_json", lambda c: b"\xff\xfe{}")
case("truncated utf-8 sequence", 400, "bad_json", lambda c: b'{"contract": "\xe2\x82"}')
case("overlong utf-8", 400, "bad_json", lambda c: b'{"contract": "\xc0\xaf"}')
case("utf-8 encoded surrogate", 400, "bad_json", lambda c: b'{"contract": "\xed\xa0\x80"}')
case("utf-16 json", 400, "bad_json", lambda c: json.dumps(ours(c.bfv)).encode("utf-16"))
case("utf-8 byte order mark", 400, "bad_json", lambda c: b"\xef\xbb\xbf" + json.dumps(ours(c.bfv)).encode())
case("NaN", 400, "bad_json",
     lambda c: json.dumps(ours(c.bfv, **{"scheme.params.security_bits": float("nan")})).encode())
case("Infinity", 400, "bad_json",
     lambda c: json.dumps(ours(c.bfv, **{"scheme.params.security_bits": float("inf")})).encode())
case("integer of 5000 digits", 400, "bad_json",
     lambda c: json.dumps(ours(c.bfv)).replace('"security_bits": 128', '"security_bits": ' + "9" * 5000).encode())
case("number 1e999 (huge float)", 400, "scheme_mismatch",
     lambda c: json.dumps(ours(c.bfv)).replace('"security_bits": 128', '"security_bits": 1e999').encode())
case("huge integer in a count field", 400, "scheme_mismatch",
     lambda c: ours(c.bfv, **{"scheme.params.poly_modulus_degree": 10**4000}))
case("nesting 100000 deep", 400, "bad_json", lambda c: b"[" * 100_000 + b"]" * 100_000)
case("nesting 10000 deep inside the scheme", 400, "bad_json",
     lambda c: json.dumps(ours(c.bfv, **{"scheme.params": "@"})).replace('"@"', "[" * 10_000 + "]" * 10_000).encode())
case("nesting 500 deep inside the scheme", 400, "scheme_mismatch",
     lambda c: ours(c.bfv, **{"scheme.params": nested(500)}))
case("body over the size limit", 413, "too_large", lambda c: b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}')

# The request's shape.
case("empty object", 400, "bad_request", lambda c: {})
case("unknown contract", 400, "bad_request", lambda c: ours(c.bfv, contract="encrypted-mnist/v0"))
case("contract not a string", 400, "bad_request", lambda c: ours(c.bfv, contract=1))
case("contract with a NUL", 400, "bad_request", lambda c: ours(c.bfv, contract=CONTRACT + "\0"))
case("scheme missing", 400, "bad_request", lambda c: ours(c.bfv, scheme=...))
case("scheme a string", 400, "bad_request", lambda c: ours(c.bfv, scheme="bfv"))
case("scheme name a number", 400, "bad_request", lambda c: ours(c.bfv, **{"scheme.name": 7}))
case("unknown scheme", 400, "unknown_scheme", lambda c: ours(c.bfv, **{"scheme.name": "rsa"}))
case("scheme name with a NUL", 400, "unknown_scheme", lambda c: ours(c.bfv, **{"scheme.name": "bfv\0"}))
case("scheme name with control characters", 400, "unknown_scheme",
     lambda c: ours(c.bfv, **{"scheme.name": "\x1b[31mbfv\r\n"}))
case("scheme version differs", 400, "scheme_mismatch", lambda c: ours(c.bfv, **{"scheme.version": "2"}))
case("scheme version a number", 400, "scheme_mismatch", lambda c: ours(c.bfv, **{"scheme.version": 1}))
case("scheme params missing", 400, "scheme_mismatch", lambda c: ours(c.bfv, **{"scheme.params": ...}))
case("scheme params a list", 400, "scheme_mismatch", lambda c: ours(c.bfv, **{"scheme.params": [1, 2]}))
case("a parameter differs", 400, "scheme_mismatch",
     lambda c: ours(c.bfv, **{"scheme.params.poly_modulus_degree": 8192}))
case("a parameter of the wrong type", 400, "scheme_mismatch",
     lambda c: ours(c.bfv, **{"scheme.params.poly_modulus_degree": "4096"}))
case("a parameter more", 400, "scheme_mismatch", lambda c: ours(c.bfv, **{"scheme.params.extra": 1}))
case("ckks name with bfv's parameters", 400, "scheme_mismatch",
     lambda c: ours(c.bfv, **{"scheme.name": "ckks", "scheme.version": "1"}))
case("ei params for bfv", 400, "scheme_mismatch",
     lambda c: ours(c.bfv, **{"scheme.params": SPECS["ei"].descriptor()["params"]}))

# Ciphertexts.
case("ciphertexts missing", 400, "bad_request", lambda c: ours(c.bfv, ciphertexts=...))
case("ciphertexts empty", 400, "bad_request", lambda c: ours(c.bfv, ciphertexts=[]))
case("ciphertexts a string", 400, "bad_request", lambda c: ours(c.bfv, ciphertexts=c.bfv.ciphertexts[0]))
case("ciphertext a number", 400, "bad_request", lambda c: ours(c.bfv, ciphertexts=[1, 2]))
case("ciphertext an object", 400, "bad_request", lambda c: ours(c.bfv, ciphertexts=[{}, {}]))
case("ciphertext empty string", 400, "bad_request", lambda c: ours(c.bfv, ciphertexts=["", ""]))
case("ciphertext not base64", 400, "bad_request", lambda c: ours(c.bfv, ciphertexts=["%%%%", "%%%%"]))
case("ciphertext base64 badly padded", 400, "bad_request",
     lambda c: ours(c.bfv, ciphertexts=[c.bfv.ciphertexts[0][:-1], c.bfv.ciphertexts[1]]))
case("ciphertext base64 with line breaks", 400, "bad_request",
     lambda c: ours(c.bfv, ciphertexts=["\n".join(re.findall(".{1,76}", c.bfv.ciphertexts[0])), c.bfv.ciphertexts[1]]))
case("ciphertext url-safe base64", 400, "bad_request",
     lambda c: ours(c.bfv, ciphertexts=["-_-_" * 10, c.bfv.ciphertexts[1]]))
case("ciphertext with a NUL", 400, "bad_request", lambda c: ours(c.bfv, ciphertexts=["AAAA\0", "AAAA"]))
case("too many ciphertexts", 413, "too_large", lambda c: ours(c.bfv, ciphertexts=c.bfv.ciphertexts * 5))
case("a ciphertext over the size limit", 413, "too_large",
     lambda c: ours(c.bfv, ciphertexts=["A" * 1_500_000, c.bfv.ciphertexts[1]]))
case("bfv: one ciphertext of two", 422, "ciphertext_invalid", lambda c: ours(c.bfv, ciphertexts=c.bfv.ciphertexts[:1]))
case("bfv: three ciphertexts", 422, "ciphertext_invalid",
     lambda c: ours(c.bfv, ciphertexts=[*c.bfv.ciphertexts, c.bfv.ciphertexts[0]]))
case("ckks: two ciphertexts", 422, "ciphertext_invalid", lambda c: ours(c.ckks, ciphertexts=c.ckks.ciphertexts * 2))
case("ei: two ciphertexts", 422, "ciphertext_invalid",
     lambda c: ours(c.bfv, scheme=SPECS["ei"].descriptor(), ciphertexts=[EI_CIPHERTEXT] * 2))
case("ei: not a SEAL 3.5 ciphertext", 422, "ciphertext_invalid",
     lambda c: ours(c.bfv, scheme=SPECS["ei"].descriptor(), ciphertexts=[c.bfv.ciphertexts[0]]))
case("bfv: random bytes", 422, "ciphertext_invalid",
     lambda c: ours(c.bfv, ciphertexts=[b64(os.urandom(60_000)), c.bfv.ciphertexts[1]]))
case("bfv: truncated SEAL bytes", 422, "ciphertext_invalid",
     lambda c: ours(c.bfv, ciphertexts=[b64(bfv_raw(c)[: len(bfv_raw(c)) // 2]), c.bfv.ciphertexts[1]]))
case("bfv: SEAL header garbled", 422, "ciphertext_invalid",
     lambda c: ours(c.bfv, ciphertexts=[b64(b"\0\0" + bfv_raw(c)[2:]), c.bfv.ciphertexts[1]]))
case("bfv: SEAL body garbled", 422, "ciphertext_invalid",
     lambda c: ours(c.bfv, ciphertexts=[b64(bfv_raw(c)[:16] + os.urandom(len(bfv_raw(c)) - 16)),
                                        c.bfv.ciphertexts[1]]))
case("bfv: SEAL bytes with trailing garbage", 422, "ciphertext_invalid",
     lambda c: ours(c.bfv, ciphertexts=[b64(bfv_raw(c) + b"garbage!"), c.bfv.ciphertexts[1]]))
case("bfv: ckks ciphertexts", 422, "ciphertext_invalid", lambda c: ours(c.bfv, ciphertexts=c.ckks.ciphertexts * 2))
case("ckks: a bfv ciphertext", 422, "ciphertext_invalid",
     lambda c: ours(c.ckks, ciphertexts=c.bfv.ciphertexts[:1]))

# keys: shape and the URL.
case("keys missing", 400, "bad_request", lambda c: ours(c.bfv, keys=...))
case("keys a list", 400, "bad_request", lambda c: ours(c.bfv, keys=[c.bfv.url, c.bfv.sha256]))
case("keys.url missing", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.url": ...}))
case("keys.url a number", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.url": 5}))
case("keys.url empty", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.url": ""}))
case("keys.url over 4096 characters", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url + "&x=" + "a" * 4096}))
case("keys.url with a NUL", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.url": c.bfv.url + "\0"}))
case("keys.url with CR LF (header injection)", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url + "\r\nX-Evil: 1"}))
case("keys.url with DEL", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.replace("?", "\x7f?")}))
case("keys.url with a C1 control", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.replace("?", "\x85?")}))
case("keys.url not a URL", 403, "host_not_allowed", lambda c: ours(c.bfv, **{"keys.url": "not a url at all"}))
case("keys.url port not a number", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": f"http://127.0.0.1:port{blob_path(c)}?{c.query()}"}))
case("keys.url port out of range", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": f"http://127.0.0.1:99999{blob_path(c)}?{c.query()}"}))
case("keys.url another port", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": f"http://127.0.0.1:{other_port(c)}{blob_path(c)}?{c.query()}"}))
case("keys.url another host", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": f"http://10.0.0.5:{c.azurite_port}{blob_path(c)}?{c.query()}"}))
case("keys.url localhost for 127.0.0.1", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": f"http://localhost:{c.azurite_port}{blob_path(c)}?{c.query()}"}))
case("keys.url 127.0.0.1 as a decimal number", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": f"http://2130706433:{c.azurite_port}{blob_path(c)}?{c.query()}"}))
case("keys.url IPv6 loopback", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": f"http://[::1]:{c.azurite_port}{blob_path(c)}?{c.query()}"}))
case("keys.url https to Azurite", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.replace("http://", "https://")}))
case("keys.url ftp", 403, "host_not_allowed", lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.replace("http://", "ftp://")}))
case("keys.url file", 403, "host_not_allowed", lambda c: ours(c.bfv, **{"keys.url": "file:///etc/passwd"}))
case("keys.url a public host", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": f"https://example.com{blob_path(c)}?{c.query()}"}))
case("keys.url user info hiding another host", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": f"http://127.0.0.1:{c.azurite_port}@evil.example{blob_path(c)}?{c.query()}"}))
case("keys.url user info on the allowed host", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": f"http://user:pw@127.0.0.1:{c.azurite_port}{blob_path(c)}?{c.query()}"}))
case("keys.url empty user info", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": f"http://@127.0.0.1:{c.azurite_port}{blob_path(c)}?{c.query()}"}))
case("keys.url with a fragment", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.url": c.bfv.url + "#frag"}))
case("keys.url another storage account", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": azurite_url(c, f"/otheraccount/{CONTAINER}/{c.bfv.client.key_id}")}))
case("keys.url without a blob name", 403, "host_not_allowed",
     lambda c: ours(c.bfv, **{"keys.url": azurite_url(c, f"/{ACCOUNT}/{CONTAINER}")}))
case("keys.url traversal ..", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": azurite_url(c, f"/{ACCOUNT}/{CONTAINER}/../other/{c.bfv.client.key_id}")}))
case("keys.url traversal %2e%2e", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": azurite_url(c, f"/{ACCOUNT}/{CONTAINER}/%2e%2e/{CONTAINER}/x")}))
case("keys.url traversal %2E%2e, mixed case", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": azurite_url(c, f"/{ACCOUNT}/{CONTAINER}/%2E%2e/%2e%2E/x")}))
case("keys.url a %2e segment", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": azurite_url(c, f"/{ACCOUNT}/{CONTAINER}/%2e/{c.bfv.client.key_id}")}))
case("keys.url that storage answers 400 (bad container name)", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": azurite_url(c, f"/{ACCOUNT}/Bad_Container/{c.bfv.client.key_id}")}))

# keys: the SAS.
case("SAS missing", 403, "sas_invalid", lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.split("?")[0]}))
case("SAS without a signature", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": re.sub(r"&?sig=[^&]*", "", c.bfv.url)}))
case("SAS with two signatures", 403, "sas_invalid", lambda c: ours(c.bfv, **{"keys.url": c.bfv.url + "&sig=abc"}))
case("SAS not read-only (read, write)", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": c.sas(c.bfv.client.key_id, read=True, write=True)}))
case("SAS not read-only (read, delete)", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": c.sas(c.bfv.client.key_id, read=True, delete=True)}))
case("SAS without read", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": c.sas(c.bfv.client.key_id, write=True)}))
case("SAS expired", 403, "sas_invalid", lambda c: ours(c.bfv, **{"keys.url": c.sas(c.bfv.client.key_id, minutes=-1)}))
case("SAS expiry missing", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": re.sub(r"&?se=[^&]*", "", c.bfv.url)}))
case("SAS expiry not a time", 403, "sas_invalid", lambda c: ours(c.bfv, **{"keys.url": with_query(c, se="tomorrow")}))
case("SAS permission edited to r (forged)", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": c.sas(c.bfv.client.key_id, read=True, write=True).replace("sp=rw", "sp=r")}))
case("SAS expiry extended (forged)", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": with_query(c, se="2099-01-01T00%3A00%3A00Z")}))
case("SAS signature tampered", 403, "sas_invalid", lambda c: ours(c.bfv, **{"keys.url": tampered(c.bfv.url)}))
case("SAS of another blob", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.split("?")[0] + "?" + c.ckks.url.split("?")[1]}))

# keys: the SHA-256 and the blob.
case("sha256 missing", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.sha256": ...}))
case("sha256 a number", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.sha256": 12}))
case("sha256 upper case", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.sha256": c.bfv.sha256.upper()}))
case("sha256 63 characters", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.sha256": c.bfv.sha256[:-1]}))
case("sha256 not hex", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.sha256": "g" * 64}))
case("sha256 with a newline after it", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.sha256": c.bfv.sha256 + "\n"}))
case("sha256 of other bytes", 422, "key_hash_mismatch", lambda c: ours(c.bfv, **{"keys.sha256": SHA_OF_NOTHING}))
case("key blob missing", 404, "key_not_found", lambda c: ours(c.bfv, **{"keys.url": c.sas("no-such-key")}))
case("key blob of random bytes", 422, "key_invalid",
     lambda c: ours(c.bfv, **{"keys.url": c.upload("junk-keys", b"j" * 4096),
                              "keys.sha256": hashlib.sha256(b"j" * 4096).hexdigest()}))
case("key blob empty", 422, "key_invalid",
     lambda c: ours(c.bfv, **{"keys.url": c.upload("empty-keys", b""), "keys.sha256": SHA_OF_NOTHING}))
case("ckks keys for a bfv request", 422, "key_invalid", lambda c: ours(c.bfv, keys={"url": c.ckks.url,
                                                                                    "sha256": c.ckks.sha256}))
case("key blob over the size limit", 413, "too_large",
     lambda c: ours(c.bfv, **{"keys.url": c.upload("huge-keys", b"\0" * (17 << 20)),
                              "keys.sha256": hashlib.sha256(b"\0" * (17 << 20)).hexdigest()}))

# Lone surrogates, in every string field.
case("lone surrogate: contract", 400, "bad_request", lambda c: ours(c.bfv, contract=CONTRACT + SUR))
case("lone surrogate: scheme.name", 400, "bad_request", lambda c: ours(c.bfv, **{"scheme.name": SUR}))
case("lone surrogate: scheme.version", 400, "bad_request", lambda c: ours(c.bfv, **{"scheme.version": "1" + SUR}))
case("lone surrogate: scheme.params.library", 400, "bad_request",
     lambda c: ours(c.bfv, **{"scheme.params.library": SUR}))
case("lone surrogate: a key", 400, "bad_request", lambda c: ours(c.bfv, **{"keys." + SUR: 1}))
case("lone surrogate: ciphertexts", 400, "bad_request",
     lambda c: ours(c.bfv, ciphertexts=[c.bfv.ciphertexts[0], "\udfff" * 4]))
case("lone surrogate: keys.url path", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.replace("?", SUR + "?")}))
case("lone surrogate: keys.url query", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.url": c.bfv.url + SUR}))
case("lone surrogate: keys.url host", 400, "bad_request",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.replace("127.0.0.1", "127.0.0.1" + SUR)}))
case("lone surrogate: keys.sha256", 400, "bad_request", lambda c: ours(c.bfv, **{"keys.sha256": SUR * 64}))
case("lone surrogate: seed data", 400, "bad_request", lambda c: seed(c, data=[SUR]))
case("lone surrogate: seed key_id", 400, "bad_request", lambda c: seed(c, key_id="key" + SUR))
case("lone surrogate: seed conn_str", 400, "bad_request", lambda c: seed(c, conn_str=c.connection_string + SUR))
case("lone surrogate: seed container", 400, "bad_request", lambda c: seed(c, container=SUR))
case("a valid surrogate pair in keys.url (not the signed blob)", 403, "sas_invalid",
     lambda c: ours(c.bfv, **{"keys.url": c.bfv.url.replace("?", "\ud83d\ude00?")}))

# The seed's request shape.
case("seed: key blob missing", 404, "key_not_found", lambda c: seed(c))
case("seed: host not allowed", 403, "host_not_allowed", lambda c: seed(c, conn_str=evil_conn(c)))
case("seed: user info hiding another host", 403, "host_not_allowed",
     lambda c: seed(c, conn_str=azurite_conn(c, "a2V5").replace("http://127.0.0.1:", "http://127.0.0.1:1@evil.example:")))
case("seed: wrong account key", 403, "sas_invalid", lambda c: seed(c, conn_str=azurite_conn(c, "a2V5")))
case("seed: account key not base64", 403, "sas_invalid", lambda c: seed(c, conn_str=azurite_conn(c, "!!!")))
case("seed: garbage connection string", 400, "bad_request", lambda c: seed(c, conn_str="this is not one"))
case("seed: connection string of semicolons", 400, "bad_request", lambda c: seed(c, conn_str=";;;;"))
case("seed: conn_str with a newline", 400, "bad_request", lambda c: seed(c, conn_str=c.connection_string + "\n"))
case("seed: conn_str missing", 400, "bad_request", lambda c: seed(c, conn_str=...))
case("seed: key_id missing", 400, "bad_request", lambda c: seed(c, key_id=...))
case("seed: key_id empty", 400, "bad_request", lambda c: seed(c, key_id=""))
case("seed: key_id with a NUL", 400, "bad_request", lambda c: seed(c, key_id="a\0b"))
case("seed: key_id a number", 400, "bad_request", lambda c: seed(c, key_id=5))
case("seed: key_id traversal", 400, "bad_request", lambda c: seed(c, key_id="../other/x"))
case("seed: container name invalid", 400, "bad_request", lambda c: seed(c, container="Not_Valid"))
case("seed: container name too long", 400, "bad_request", lambda c: seed(c, container="a" * 64))
case("seed: container missing", 400, "bad_request", lambda c: seed(c, container=...))
case("seed: data not a list", 400, "bad_request", lambda c: seed(c, data=EI_CIPHERTEXT))
case("seed: data empty", 400, "bad_request", lambda c: seed(c, data=[]))
case("seed: data not base64", 400, "bad_request", lambda c: seed(c, data=["not base64!"]))
case("seed: two ciphertexts", 422, "ciphertext_invalid", lambda c: seed(c, data=[EI_CIPHERTEXT] * 2))
case("seed: not a SEAL 3.5 ciphertext", 422, "ciphertext_invalid", lambda c: seed(c, data=[c.bfv.ciphertexts[0]]))

# HTTP: methods, paths, headers.
case("PUT /score", 405, "method_not_allowed", lambda c: Call(ours(c.bfv), method="PUT"))
case("DELETE /score", 405, "method_not_allowed", lambda c: Call(method="DELETE"))
case("PATCH /score", 405, "method_not_allowed", lambda c: Call(ours(c.bfv), method="PATCH"))
case("POST /", 405, "method_not_allowed", lambda c: Call(ours(c.bfv), path="/"))
case("DELETE /", 405, "method_not_allowed", lambda c: Call(method="DELETE", path="/"))
case("HEAD /score", 405, "method_not_allowed", lambda c: Call(method="HEAD"))
case("HEAD of an unknown path", 404, "not_found", lambda c: Call(method="HEAD", path="/nope"))
case("GET of an unknown path", 404, "not_found", lambda c: Call(method="GET", path="/admin"))
case("POST to an unknown path", 404, "not_found", lambda c: Call(ours(c.bfv), path="/score/v2"))
case("path traversal in the URL", 404, "not_found", lambda c: Call(method="GET", path="/a/b/%2e%2e/%2e%2e/etc/passwd"))
case("GET /score (the contract scores with POST)", 405, "method_not_allowed", lambda c: Call(method="GET"))
case("GET /score with a deeply nested query", 405, "method_not_allowed", lambda c: Raw(
    b"GET /score?a=" + b"[" * 1500 + b"]" * 1500 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "GET"))
case("chunked body with a bad chunk size", 400, "bad_request", lambda c: post_chunked(b"zz\r\n{}\r\n0\r\n\r\n"))
case("chunked body without its terminator", 400, "bad_request", lambda c: post_chunked(b"2\r\n{}XX0\r\n\r\n"))
case("chunked body over the size limit", 413, "too_large",
     lambda c: post_chunked(chunked(b'{"pad": "' + b"x" * (4 * 1024 * 1024 + 100_000) + b'"}', 1 << 16)))
case("chunked bad json", 400, "bad_json", lambda c: post_chunked(chunked(b"{not json")))
case("x-request-id over 100 characters", 431, "bad_request",
     lambda c: Call(ours(c.bfv), headers={"x-request-id": "r" * 101}))


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a raw request got back, with what the tests read of a requests.Response."""

    status_code: int
    headers: http.client.HTTPMessage
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def send_raw(base_url: str, raw: Raw) -> Answer:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=120) as sock:
        sock.sendall(raw.request)
        response = http.client.HTTPResponse(sock, method=raw.method)
        response.begin()
        return Answer(response.status, response.headers, response.read())


def send(base_url: str, built: object, session: requests.Session | None = None) -> requests.Response:
    """One request on a new connection, or on ``session``'s.

    gunicorn closes a connection after answering a request whose body the app did not read (a 404 or
    405) if over 64 kB of it is left, so the bad requests get a connection each.
    """
    call = built if isinstance(built, Call) else Call(built)
    return (session or requests).request(call.method, base_url + call.path, data=call.data(),
                                         headers={**JSON, **call.headers}, timeout=120)


def assert_contract_error(answer: requests.Response | Answer, status: int, code: str | set[str], method: str = "POST") -> None:
    """The exact status and code, in the contract's shape: JSON object, string error and message."""
    assert answer.headers.get("Content-Type", "").split(";")[0] == "application/json", answer.headers
    if method == "HEAD":  # no body; the headers are those of the contract's body
        assert answer.status_code == status and answer.content == b""
        assert int(answer.headers["Content-Length"]) > len('{"error": "", "message": ""}')
        return
    body = answer.json()
    codes = {code} if isinstance(code, str) else code
    assert answer.status_code == status and body.get("error") in codes, (answer.status_code, body)
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["message"], str) and body["message"].strip(), body


def assert_healthy(base_url: str) -> None:
    health = requests.get(base_url + "/", timeout=30)
    assert (health.status_code, health.text) == (200, "Healthy")


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as opened:
        yield opened


def test_there_are_at_least_60_kinds() -> None:
    names = [param.id for param in CASES]
    assert len(names) == len(set(names)) and len(names) >= 60


@pytest.mark.parametrize(("build", "status", "code"), CASES)
def test_malformed_request_gets_its_contract_error(scoring_service, ctx: Ctx, build: Build, status: int,
                                                   code: str) -> None:
    built = build(ctx)
    answer = send_raw(scoring_service.base_url, built) if isinstance(built, Raw) else send(scoring_service.base_url, built)
    assert_contract_error(answer, status, code, built.method if isinstance(built, (Call, Raw)) else "POST")
    assert_healthy(scoring_service.base_url)


@pytest.mark.parametrize("name", ["bfv", "ckks"])
def test_good_requests_still_pass_byte_for_byte_json(scoring_service, ctx: Ctx, session: requests.Session,
                                                     name: str) -> None:
    """After all that, a good request is answered 200, with the service's JSON untouched."""
    keys: Keys = getattr(ctx, name)
    answer = send(scoring_service.base_url, ours(keys), session)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    body = json.loads(answer.content)
    assert body["scheme"] == keys.client.scheme_id and json.dumps(body).encode() == answer.content
    keys.client.decrypt(body["result"])  # a real result of this key pair


def test_a_good_request_sent_chunked_is_answered(scoring_service, ctx: Ctx) -> None:
    """The layer reads a chunked body itself (to refuse broken framing); a good one still scores."""
    body = json.dumps(ours(ctx.bfv)).encode()
    answer = send_raw(scoring_service.base_url, post_chunked(chunked(body)))
    assert answer.status_code == 200, answer.content[:300]
    assert json.loads(answer.content)["server"]["sizes"]["request_bytes"] == len(body)


def test_health_probe_and_options_pass_through_untouched(scoring_service, session: requests.Session) -> None:
    health = session.get(scoring_service.base_url + "/", timeout=30)
    assert (health.status_code, health.content, health.headers["Content-Type"]) == (
        200, b"Healthy", "text/html; charset=utf-8")
    head = session.head(scoring_service.base_url + "/", timeout=30)
    assert (head.status_code, head.content, head.headers["Content-Length"]) == (200, b"", "7")
    options = session.options(scoring_service.url, timeout=30)
    assert options.status_code == 200


# --- no string gives a 500 ---------------------------------------------------------------------------

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz0123456789-_.~",
    "".join(chr(code) for code in range(0x20)) + "\x7f\x85\x9f",
    "%/?#@:;=&+ \\'\"<>[]{}|^`,",
    "\ud800\udbff\udc00\udfff",
    "é漢字\u200b\u202e\ufeff\ufffd\U0001f600\U0010ffff",
    "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=+/",
]


def fuzzed(rng: random.Random) -> str:
    """A random string: a mix of plain, control, URL, surrogate, astral and base64 characters."""
    size = rng.choice([0, 1, 2, 5, 16, 64, 300, 5000])
    pools = rng.sample(ALPHABETS, rng.randint(1, len(ALPHABETS)))
    return "".join(rng.choice(rng.choice(pools)) for _ in range(size))


def fuzz_bodies(c: Ctx, count: int, seed_value: int) -> Iterator[tuple[str, bytes]]:
    """(field, body) with a random string in one string field of an otherwise good request."""
    rng = random.Random(seed_value)
    base = f"http://127.0.0.1:{c.azurite_port}/{ACCOUNT}/{CONTAINER}/"
    fields: dict[str, Callable[[str], object]] = {
        "contract": lambda text: ours(c.bfv, contract=text),
        "scheme.name": lambda text: ours(c.bfv, **{"scheme.name": text}),
        "scheme.version": lambda text: ours(c.bfv, **{"scheme.version": text}),
        "scheme.params.library": lambda text: ours(c.bfv, **{"scheme.params.library": text}),
        "a key": lambda text: ours(c.bfv, **{"keys." + text.replace(".", ""): text}),
        "ciphertexts": lambda text: ours(c.bfv, ciphertexts=[text, c.bfv.ciphertexts[1]]),
        "keys.url": lambda text: ours(c.bfv, **{"keys.url": text}),
        "keys.url path": lambda text: ours(c.bfv, **{"keys.url": base + text + "?" + c.query()}),
        "keys.url query": lambda text: ours(c.bfv, **{"keys.url": c.bfv.url + "&" + text}),
        "keys.url host": lambda text: ours(c.bfv, **{"keys.url": f"http://{text}/{ACCOUNT}/{CONTAINER}/x?{c.query()}"}),
        "keys.sha256": lambda text: ours(c.bfv, **{"keys.sha256": text}),
        "seed data": lambda text: seed(c, data=[text]),
        "seed key_id": lambda text: seed(c, key_id=text),
        "seed conn_str": lambda text: seed(c, conn_str=text),
        "seed conn_str key": lambda text: seed(c, conn_str=azurite_conn(c, text)),
        "seed container": lambda text: seed(c, container=text),
    }
    for index in range(count):
        field = list(fields)[index % len(fields)]
        yield field, json.dumps(fields[field](fuzzed(rng))).encode("ascii")
    for _ in range(count // 8):  # and raw bytes, as a body
        yield "raw bytes", bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 100, 2000])))


def test_no_random_string_in_any_field_gives_a_500(scoring_service, ctx: Ctx, session: requests.Session) -> None:
    """Property: a random string in any string field never gets a 5xx; every refusal is in the contract's shape.

    (Some random strings are harmless, e.g. in an extra key or an extra SAS query field: those get 200.)
    """
    failures, statuses = [], set()
    for field, body in fuzz_bodies(ctx, 480, seed_value=20261201):
        answer = session.post(scoring_service.url, data=body, headers=JSON, timeout=120)
        statuses.add(answer.status_code)
        if answer.status_code == 200:
            continue
        try:
            payload = answer.json()
            shaped = isinstance(payload, dict) and {type(payload.get(k)) for k in ("error", "message")} == {str}
        except ValueError:
            payload, shaped = answer.text, False
        if answer.status_code >= 500 or not shaped:
            failures.append(f"{field}: {answer.status_code} {str(payload)[:200]} for {body[:300]!r}")
    assert not failures, "\n".join(failures[:20])
    assert statuses <= {200, 400, 403, 404, 413, 422} and {400, 403, 422} <= statuses, statuses
    assert_healthy(scoring_service.base_url)


def test_the_fuzzer_makes_what_it_should(ctx: Ctx) -> None:
    """The counter-check: the fuzzed strings do hold surrogates, controls and long strings in every field."""
    bodies = list(fuzz_bodies(ctx, 480, seed_value=20261201))
    fields = {field for field, _ in bodies}
    assert len(fields) == 17
    texts = b"".join(body for _, body in bodies)
    for made in (b"\\ud800", b"\\udfff", b"\\u0000", b"\\u007f", b"\\u00e9", b"\\ud83d\\ude00", b"%", b"@", b"#"):
        assert made in texts, made  # lone surrogates, controls, non-ASCII, astral, URL syntax
    assert sum(len(body) > 5000 for field, body in bodies if field != "raw bytes") > 10


# --- a normal start logs no ERROR --------------------------------------------------------------------

ERROR_LINE = re.compile(r"\bERROR\b|\[ERROR\]| E \[\d+\] |Traceback|CRITICAL")


@pytest.fixture(scope="module")
def fresh_service(azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A scoring service of its own (2 workers), to read its log from the start."""
    port, log_path = free_port(), tmp_path_factory.mktemp("fresh-scoring") / "scoring.log"
    service = services.scoring_service(
        port, 2, entry_script=DEFAULT_ENTRY_SCRIPT, model_dir=DEFAULT_MODEL_DIR, log_path=log_path,
        env=dict(os.environ, ALLOWED_BLOB_HOSTS=f"{HOST}:{azurite.port}"), timeout=300.0,
    )  # fmt: skip
    with running(service):
        yield f"http://{HOST}:{port}", log_path


def wait_for_log(log_path: Path, done: Callable[[str], bool], patience_s: float = 120.0) -> str:
    """The log once ``done`` holds for it (the second worker may start after the first has answered)."""
    deadline = time.monotonic() + patience_s
    while True:
        text = log_path.read_text(errors="replace")
        if done(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


@pytest.mark.slow
def test_a_normal_start_and_good_requests_log_no_error(fresh_service, ctx: Ctx) -> None:
    base_url, log_path = fresh_service
    with requests.Session() as opened:
        for keys in (ctx.bfv, ctx.ckks, ctx.bfv, ctx.ckks):
            answer = send(base_url, ours(keys), opened)
            assert answer.status_code == 200, answer.text
        assert_healthy(base_url)
    text = wait_for_log(log_path, lambda seen: seen.count("ready for serving traffic") == 2)
    assert text.count("ready for serving traffic") == 2 and "status=200" in text  # the log is the right one
    assert "mnist/1" in text
    bad = [line for line in text.splitlines() if ERROR_LINE.search(line)]
    assert not bad, "\n".join(bad[:20])


def test_the_error_check_sees_errors() -> None:
    """The counter-check for the log test: the AzureML server's, gunicorn's and our ERROR lines match."""
    for line in ("2026-12-01 22:39:18,153 E [6819] azmlinfsrv.trace - Error while fetching model IDs",
                 "Traceback (most recent call last):", "[2026-12-01 22:39:17 +0000] [6818] [ERROR] Worker failed",
                 "2026-12-01 22:39:18,640 encrypted_mnist.service ERROR score status=500"):
        assert ERROR_LINE.search(line), line
    assert not ERROR_LINE.search("2026-12-01 22:39:18,640 I [6820] azmlinfsrv - POST /score 400 0.513ms 117")
