"""Unit tests: the service side of docs/contract.md: request parsing and validation, the WSGI layer
that gives every error the contract's shape, and the catch-all of ScoringService.handle."""
import base64
import json
import logging

import pytest

from service.contract import CONTRACT, ScoreRequest, SeedRequest, parse_request
from service.errors import ContractErrors, RequestRejected, contract_error, is_contract_error
from service.scoring import ScoringService
from service.settings import ServiceSettings
from service.shared.specs import SPECS

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


SUR = "\ud800"


@pytest.mark.parametrize(
    "body",
    [
        with_(GOOD, contract=SUR),
        with_(GOOD, scheme={"name": "ei" + SUR, "version": "0.9", "params": {}}),
        with_(GOOD, scheme={"name": "ei", "version": "0.9", "params": {"library": [["x", SUR]]}}),
        with_(GOOD, ciphertexts=[CT, "\udfff"]),
        with_(GOOD, keys={"url": GOOD["keys"]["url"] + SUR, "sha256": "0" * 64}),
        with_(GOOD, keys={"url": GOOD["keys"]["url"], "sha256": SUR}),
        with_(GOOD, **{SUR: 1}),
        with_(SEED, key_id="abc" + SUR),
        with_(SEED, conn_str=SUR),
        with_(SEED, container=SUR),
        with_(SEED, data=[SUR]),
    ],
)
def test_lone_surrogates_anywhere_are_bad_requests(body):
    """json.loads turns the escape "\\ud800" into a string UTF-8 cannot encode: refused, never a 500 later."""
    raw = json.dumps(body)  # ASCII, with the escape
    assert "\\ud800" in raw or "\\udfff" in raw
    with pytest.raises(RequestRejected) as caught:
        parse(raw)
    assert (caught.value.status, caught.value.code) == (400, "bad_request")
    assert "surrogate" in caught.value.message
    caught.value.message.encode("utf-8")  # the message itself is encodable


def test_the_message_names_the_field_with_the_surrogate():
    with pytest.raises(RequestRejected, match=r"'keys\.url'"):
        parse(with_(GOOD, keys={"url": GOOD["keys"]["url"] + SUR, "sha256": "0" * 64}))


def test_a_valid_surrogate_pair_is_text_and_passes():
    body = with_(GOOD, keys={"url": GOOD["keys"]["url"].replace("abc", "\U0001f600"), "sha256": "0" * 64})
    raw = json.dumps(body)
    assert "\\ud83d\\ude00" in raw
    assert "/public-keys/\U0001f600?" in parse(raw).key_url


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (json.dumps(GOOD).replace('"params": {}', '"params": {"a": NaN}'), "bad_json"),
        (json.dumps(GOOD).replace('"params": {}', '"params": {"a": -Infinity}'), "bad_json"),
        (json.dumps(GOOD).replace('"params": {}', '"params": {"a": ' + "7" * 5000 + "}"), "bad_json"),
        ("[" * 5000 + "]" * 5000, "bad_json"),
        (b"\xff\xfe{}", "bad_json"),
        (b'{"contract": "\xed\xa0\x80"}', "bad_json"),  # a surrogate encoded in UTF-8 (CESU): not UTF-8
        (json.dumps(GOOD).encode("utf-16"), "bad_json"),  # json.loads would take it; the contract is UTF-8
        (json.dumps(GOOD).encode("utf-8-sig"), "bad_json"),
        (with_(GOOD, keys={"url": GOOD["keys"]["url"], "sha256": "0" * 64 + "\n"}), "bad_request"),
        (with_(SEED, container="public-keys\n"), "bad_request"),
        (with_(SEED, key_id="a\x7fb"), "bad_request"),
        (with_(SEED, key_id="a\x85b"), "bad_request"),
    ],
)
def test_what_is_not_json_or_not_clean_text_is_refused(raw, code):
    with pytest.raises(RequestRejected) as caught:
        parse(raw)
    assert (caught.value.status, caught.value.code) == (400, code)


def test_utf8_bytes_parse_like_text():
    assert isinstance(parse(json.dumps(GOOD).encode("utf-8")), ScoreRequest)


# --- the WSGI layer: every error in the contract's shape (service/errors.py ContractErrors) -------------


class FakeApp:
    """A WSGI app answering a fixed response, the way Flask does (start_response, then an iterable)."""

    def __init__(self, status, headers, chunks, lazy=False, raises=None):
        self.status, self.headers, self.chunks, self.lazy, self.raises = status, headers, chunks, lazy, raises
        self.closed = self.iterated = False

    def __call__(self, environ, start_response):
        if self.raises:
            raise self.raises
        if not self.lazy:
            start_response(self.status, self.headers)
        return self.Body(self, start_response)

    class Body:
        def __init__(self, app, start_response):
            self.app, self.start_response = app, start_response

        def __iter__(self):
            self.app.iterated = True
            if self.app.lazy:
                self.start_response(self.app.status, self.app.headers)
            yield from self.app.chunks

        def close(self):
            self.app.closed = True


def call(app, method="POST", path="/score", **environ):
    """(status, headers dict, body bytes, the iterable) of one request through ContractErrors."""
    started = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=status, headers=headers)
        return lambda data: None

    layer = ContractErrors(app, max_body_bytes=1000)
    iterable = layer({"REQUEST_METHOD": method, "PATH_INFO": path, **environ}, start_response)
    body = b"".join(iterable)
    if hasattr(iterable, "close"):
        iterable.close()
    return started["status"], dict(started["headers"]), body, iterable


def test_success_passes_through_untouched_and_unread():
    app = FakeApp("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("x-request-id", "r1")], [b"Heal", b"thy"])
    started = {}
    iterable = ContractErrors(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"},
                                   lambda status, headers, exc_info=None: started.update(s=status, h=headers))
    assert not app.iterated  # a streamed body is not read by the layer
    assert started == {"s": "200 OK", "h": app.headers} and isinstance(iterable, FakeApp.Body)
    assert b"".join(iterable) == b"Healthy"


def test_a_contract_error_passes_through_byte_for_byte():
    payload = b'{"error": "key_not_found", "message": "The public-key blob was not found."}'
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), ("x-request-id", "r2")]
    status, got_headers, body, _ = call(FakeApp("404 NOT FOUND", headers, [payload]))
    assert (status, body, got_headers) == ("404 NOT FOUND", payload, dict(headers))


@pytest.mark.parametrize(
    ("status", "server_body", "code"),
    [
        ("404 NOT FOUND", b'{"message": "The requested URL was not found on the server."}', "not_found"),
        ("405 METHOD NOT ALLOWED", b'{"message": "The method is not allowed for the requested URL."}',
         "method_not_allowed"),
        ("400 BAD REQUEST", b'{"message": "Input cannot be decoded as UTF-8: invalid start byte"}', "bad_json"),
        ("431 REQUEST HEADER FIELDS TOO LARGE", b'{"message": "x-request-id must not exceed 100 characters"}',
         "bad_request"),
        ("500 INTERNAL SERVER ERROR", b'{"message": "An unexpected error occurred in scoring script."}',
         "internal_error"),
        ("500 INTERNAL SERVER ERROR", b"<html>Internal Server Error</html>", "internal_error"),
        ("503 SERVICE UNAVAILABLE", b"", "not_ready"),
        ("418 I'M A TEAPOT", b"short and stout", "bad_request"),
    ],
)
def test_the_servers_own_errors_get_the_contracts_shape(status, server_body, code):
    app = FakeApp(status, [("Content-Type", "text/html"), ("Content-Length", str(len(server_body))),
                           ("x-ms-run-function-failed", "True"), ("x-request-id", "r3")], [server_body])
    got_status, headers, body, _ = call(app)
    parsed = json.loads(body)
    assert got_status == status and parsed["error"] == code and parsed["message"] and set(parsed) == {"error", "message"}
    assert headers["Content-Type"] == "application/json" and headers["Content-Length"] == str(len(body))
    assert headers["x-request-id"] == "r3" and headers["x-ms-run-function-failed"] == "True"  # others kept
    assert app.closed


def test_the_servers_messages_are_kept_where_they_say_more():
    _, _, body, _ = call(FakeApp("431 X", [], [b'{"message": "x-request-id must not exceed 100 characters"}']))
    assert json.loads(body)["message"] == "x-request-id must not exceed 100 characters"
    _, _, body, _ = call(FakeApp("405 X", [], [b'{"message": "The method is not allowed."}']), method="PUT")
    assert "PUT" in json.loads(body)["message"] and "POST /score" in json.loads(body)["message"]


def test_head_gets_the_headers_of_the_contract_error_and_no_body():
    app = FakeApp("405 METHOD NOT ALLOWED", [("Content-Type", "application/json"), ("Content-Length", "63")], [])
    status, headers, body, _ = call(app, method="HEAD")
    assert (status, body, headers["Content-Type"]) == ("405 METHOD NOT ALLOWED", b"", "application/json")
    assert int(headers["Content-Length"]) == len(json.dumps(contract_error(405, b"", "HEAD")))
    assert headers["Allow"] == "POST, OPTIONS"


def test_an_app_that_starts_its_response_lazily_is_handled():
    status, _, body, _ = call(FakeApp("404 NOT FOUND", [("Content-Type", "text/plain")], [b"no"], lazy=True))
    assert (status, json.loads(body)["error"]) == ("404 NOT FOUND", "not_found")
    app = FakeApp("200 OK", [("Content-Type", "text/plain")], [b"a", b"b"], lazy=True)
    status, _, body, _ = call(app)
    assert (status, body, app.closed) == ("200 OK", b"ab", True)


def test_bytes_given_to_write_come_first():
    def legacy(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first ")
        return [b"then"]

    assert call(legacy)[2] == b"first then"

    def legacy_error(environ, start_response):
        start_response("404 NOT FOUND", [("Content-Type", "text/plain")])(b"gone")
        return []

    assert json.loads(call(legacy_error)[2])["error"] == "not_found"


def test_an_exception_escaping_the_app_is_a_logged_500(caplog):
    with caplog.at_level(logging.ERROR, logger="encrypted_mnist.service"):
        status, headers, body, _ = call(FakeApp("200 OK", [], [], raises=RuntimeError("boom sig=SECRET1")))
    assert status.startswith("500") and json.loads(body)["error"] == "internal_error"
    assert headers["Content-Type"] == "application/json"
    logged = "\n".join(record.getMessage() for record in caplog.records if record.levelno == logging.ERROR)
    assert "Traceback" in logged and "RuntimeError: boom" in logged and "SECRET1" not in logged


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_score_is_refused_before_the_server_parses_its_query(method):
    app = FakeApp("200 OK", [], [], raises=AssertionError("the app must not be called"))
    status, headers, body, _ = call(app, method=method, QUERY_STRING="a=" + "[" * 1500 + "]" * 1500)
    assert status.startswith("405") and headers["Allow"] == "POST, OPTIONS"
    assert headers["Content-Type"] == "application/json" and int(headers["Content-Length"]) > 0
    if method == "HEAD":
        assert body == b""
    else:
        assert json.loads(body)["error"] == "method_not_allowed"


class Stream:
    """A wsgi.input that hands out ``chunks``, then raises ``error`` if one is given (broken framing)."""

    def __init__(self, chunks, error=None):
        self.chunks, self.error = list(chunks), error

    def read(self, size=-1):
        if self.chunks:
            return self.chunks.pop(0)
        if self.error:
            raise self.error
        return b""


def test_a_chunked_body_is_read_first_and_handed_on_from_memory():
    seen = {}

    def app(environ, start_response):
        seen.update(body=environ["wsgi.input"].read(), length=environ["CONTENT_LENGTH"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    status, _, body, _ = call(app, HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input": Stream([b'{"a":', b" 1}"])})
    assert (status, body, seen) == ("200 OK", b"{}", {"body": b'{"a": 1}', "length": "8"})


@pytest.mark.parametrize(
    ("stream", "status", "code"),
    [
        (Stream([b"{"], ValueError("Invalid chunk size: b'zz'")), "400", "bad_request"),  # gunicorn's InvalidChunkSize
        (Stream([b"x" * 600, b"x" * 600]), "413", "too_large"),
    ],
)
def test_a_chunked_body_that_cannot_be_read_or_is_too_large_is_refused(stream, status, code):
    app = FakeApp("200 OK", [], [], raises=AssertionError("the app must not be called"))
    got_status, headers, body, _ = call(app, HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input": stream})
    assert got_status.startswith(status) and json.loads(body)["error"] == code
    assert headers["Content-Type"] == "application/json"


def test_is_contract_error_wants_json_with_string_error_and_message():
    json_type = [("Content-Type", "application/json; charset=utf-8")]
    assert is_contract_error(json_type, b'{"error": "a", "message": "b"}')
    assert not is_contract_error([("Content-Type", "text/html")], b'{"error": "a", "message": "b"}')
    assert not is_contract_error(json_type, b'{"message": "b"}')
    assert not is_contract_error(json_type, b'{"error": 1, "message": "b"}')
    assert not is_contract_error(json_type, b"[1]")
    assert not is_contract_error(json_type, b"\xff")


# --- ScoringService.handle: no exception escapes, a bug is logged and answered 500 ---------------------


class BrokenScheme:
    """A scheme whose check raises what a bug would (quoting a secret, as SDK messages can)."""

    spec = SPECS["bfv"]

    def decode_ciphertexts(self, ciphertexts):
        raise RuntimeError("unexpected: http://h/x?sp=r&sig=TOPSECRET AccountKey=ALSOSECRET")


def test_an_unexpected_exception_is_a_logged_500_in_the_contracts_shape(caplog):
    service = ScoringService.__new__(ScoringService)  # no model or native schemes needed for this path
    service.settings = ServiceSettings(
        allowed_blob_hosts=frozenset({"127.0.0.1:10000"}), allowed_storage_account=None, max_key_bytes=1 << 24,
        key_cache_bytes=1 << 27, max_request_bytes=1 << 22, max_ciphertext_bytes=1 << 20, compute_threads=1,
        storage_timeout_s=1.0,
    )
    service.schemes = {"bfv": BrokenScheme()}
    request = with_(GOOD, scheme=SPECS["bfv"].descriptor(), ciphertexts=[CT, CT])
    with caplog.at_level(logging.INFO, logger="encrypted_mnist.service"):
        status, body = service.handle(json.dumps(request))
    assert (status, body["error"]) == (500, "internal_error") and set(body) == {"error", "message"}
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "Traceback" in text and "RuntimeError" in text and "decode_ciphertexts" in text
    assert "TOPSECRET" not in text and "ALSOSECRET" not in text and "sig=<redacted>" in text
