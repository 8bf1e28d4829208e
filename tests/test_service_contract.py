"""Unit tests: the service side of docs/contract.md (request parsing and validation)."""
import base64
import json

import pytest

from service.contract import CONTRACT, ScoreRequest, SeedRequest, parse_request
from service.errors import RequestRejected

CT = base64.b64encode(b"\x5e\xa1" + b"x" * 30).decode()
GOOD = {
    "contract": CONTRACT,
    "scheme": {"name": "ei", "version": "0.9", "params": {}},
    "ciphertexts": [CT],
    "keys": {"url": "http://127.0.0.1:10000/devstoreaccount1/public-keys/abc?sp=r&se=x&sig=y", "sha256": "0" * 64},
}
SEED = {"data": [CT], "key_id": "abc", "conn_str": "UseDevelopmentStorage=true", "container": "public-keys"}


def parse(body):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return parse_request(raw, max_request_bytes=10_000, max_ciphertexts=2, max_ciphertext_bytes=300)


def test_our_shape_parses():
    request = parse(GOOD)
    assert isinstance(request, ScoreRequest)
    assert request.ciphertexts == [base64.b64decode(CT)] and request.key_sha256 == "0" * 64


def test_seed_shape_parses():
    request = parse(SEED)
    assert isinstance(request, SeedRequest)
    assert (request.key_id, request.container) == ("abc", "public-keys")


def with_(base, **changes):
    body = json.loads(json.dumps(base))
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


BAD = [
    ("", 400, "bad_json"),
    ("{not json", 400, "bad_json"),
    ("[1, 2]", 400, "bad_json"),
    ('"text"', 400, "bad_json"),
    ("x" * 10_001, 413, "too_large"),
    (with_(GOOD, contract="other/v9"), 400, "bad_request"),
    (with_(GOOD, scheme="ei"), 400, "bad_request"),
    (with_(GOOD, keys=...), 400, "bad_request"),
    (with_(GOOD, keys={"url": "http://x", "sha256": "XYZ"}), 400, "bad_request"),
    (with_(GOOD, keys={"url": 5, "sha256": "0" * 64}), 400, "bad_request"),
    (with_(GOOD, ciphertexts=[]), 400, "bad_request"),
    (with_(GOOD, ciphertexts="abc"), 400, "bad_request"),
    (with_(GOOD, ciphertexts=[1]), 400, "bad_request"),
    (with_(GOOD, ciphertexts=["not base64!!"]), 400, "bad_request"),
    (with_(GOOD, ciphertexts=["abc"]), 400, "bad_request"),
    (with_(GOOD, ciphertexts=[CT, CT, CT]), 413, "too_large"),
    (with_(GOOD, ciphertexts=["A" * 800]), 413, "too_large"),
    (with_(SEED, key_id=...), 400, "bad_request"),
    (with_(SEED, key_id=""), 400, "bad_request"),
    (with_(SEED, key_id="a\nb"), 400, "bad_request"),
    (with_(SEED, container="Bad_Name"), 400, "bad_request"),
    (with_(SEED, conn_str=["x"]), 400, "bad_request"),
    (with_(SEED, data=None), 400, "bad_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD)
def test_bad_requests_are_refused_with_a_clear_code(body, status, code):
    with pytest.raises(RequestRejected) as caught:
        parse(body)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message
    assert set(caught.value.as_body()) == {"error", "message"}
