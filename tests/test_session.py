"""EncryptedSession end to end, plus the contract helpers and the HTTP client it builds on.

Three tiers here:
- unit: ``lib.contract`` request/response checks and ``ScoringClient`` against a tiny local HTTP
  stub (connection refused, timeouts, the contract's JSON errors, non-JSON bodies);
- integration with Azurite and ``ContractScorer``, an in-process stand-in for the service that
  follows docs/contract.md (downloads the keys through the SAS URL, checks their SHA-256, caches
  them, computes with the package's native dot product) so the session logic is tested even
  without the real service;
- integration with the real scoring service (``scoring_service`` fixture), compared with the
  plaintext model.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from encrypted.inference.internal import einative
from http_stub import serve

from lib.blob_store import strip_sas
from lib.contract import CONTRACT, build_score_request, build_seed_request, parse_score_response
from lib.errors import InvalidInput, ServiceRejected, ServiceUnavailable
from lib.scoring_client import ScoreCall, ScoringClient
from lib.session import EncryptedSession
from lib.settings import AppSettings

MODEL_PATH = Path(__file__).resolve().parents[1] / "service" / "model" / "mnist" / "1" / "mnist_linear.npz"
SHA = "ab" * 32
DESCRIPTOR = {"name": "ei", "version": "0.9", "params": {"poly_modulus_degree": 8192}}


def good_response(n: int = 10, **server: Any) -> dict[str, Any]:
    body = {
        "contract": CONTRACT,
        "scheme": "ei-0.9",
        "result": ["QUJD"] * n,
        "server": {
            "key_cache": "miss",
            "timings_ms": {"parse": 1.0, "key_fetch": 90.0, "compute": 1200.0, "total": 1300.0},
            "sizes": {"request_bytes": 10, "ciphertext_bytes": 5, "key_bytes": 7, "result_bytes": 3},
        },
    }
    body["server"].update(server)
    return body


# --- contract (client side) ----------------------------------------------------------------------


def test_build_score_request_follows_contract() -> None:
    request = build_score_request(DESCRIPTOR, ["Y3Q="], "http://127.0.0.1:1/a/b/c?sp=r&sig=x", SHA)
    assert request == {
        "contract": "encrypted-mnist/v1",
        "scheme": DESCRIPTOR,
        "ciphertexts": ["Y3Q="],
        "keys": {"url": "http://127.0.0.1:1/a/b/c?sp=r&sig=x", "sha256": SHA},
    }
    assert request["scheme"] is not DESCRIPTOR and request["scheme"]["params"] is not DESCRIPTOR["params"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((DESCRIPTOR, [], "http://h/b?sig=1", SHA), "ciphertexts"),
        ((DESCRIPTOR, "Y3Q=", "http://h/b?sig=1", SHA), "ciphertexts"),
        ((DESCRIPTOR, [""], "http://h/b?sig=1", SHA), "ciphertext"),
        ((DESCRIPTOR, ["Y3Q="], "http://h/b", SHA), "SAS"),
        ((DESCRIPTOR, ["Y3Q="], "file:///b?x", SHA), "SAS"),
        ((DESCRIPTOR, ["Y3Q="], "http://h/b?sig=1", "AB" * 32), "SHA-256"),
        (({"name": "ei"}, ["Y3Q="], "http://h/b?sig=1", SHA), "descriptor"),
    ],
)
def test_build_score_request_checks_inputs(args: tuple, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        build_score_request(*args)


def test_build_seed_request() -> None:
    assert build_seed_request(["Y3Q="], "kid", "AccountName=a", "c") == {
        "data": ["Y3Q="],
        "key_id": "kid",
        "conn_str": "AccountName=a",
        "container": "c",
    }
    with pytest.raises(InvalidInput, match="key_id"):
        build_seed_request(["Y3Q="], "", "AccountName=a", "c")


def test_parse_score_response_accepts_contract_example() -> None:
    result = parse_score_response(good_response(), expected_scheme="ei-0.9", expected_results=10)
    assert result.scheme == "ei-0.9" and result.key_cache == "miss" and len(result.result) == 10
    assert result.timings_ms["compute"] == 1200.0 and result.sizes["key_bytes"] == 7
    extra = good_response()
    extra["server"]["timings_ms"]["queue"] = 2  # extra fields are fine
    assert parse_score_response(extra).timings_ms["queue"] == 2.0


def _broken(path: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(good_response()))
    target = body
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[key]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "bad_response"),
        (_broken("contract", "other/v2"), "contract_mismatch"),
        (_broken("scheme", KeyError), "bad_response"),
        (_broken("scheme", "ei-1.0"), "bad_response"),
        (_broken("result", []), "bad_response"),
        (_broken("result", ["QUJD"] * 9), "bad_response"),
        (_broken("result", "QUJD"), "bad_response"),
        (_broken("server", KeyError), "bad_response"),
        (_broken("server.key_cache", "maybe"), "bad_response"),
        (_broken("server.timings_ms.compute", KeyError), "bad_response"),
        (_broken("server.timings_ms.compute", "fast"), "bad_response"),
        (_broken("server.timings_ms.compute", -1), "bad_response"),
        (_broken("server.timings_ms.compute", True), "bad_response"),
        (_broken("server.sizes.key_bytes", 1.5), "bad_response"),
        (_broken("server.sizes", None), "bad_response"),
    ],
)
def test_parse_score_response_rejects_malformed(body: Any, code: str) -> None:
    with pytest.raises(ServiceRejected) as info:
        parse_score_response(body, expected_scheme="ei-0.9", expected_results=10)
    assert info.value.status == 200 and info.value.code == code


# --- ScoringClient against a local HTTP stub --------------------------------------------------------


class StubHandler(BaseHTTPRequestHandler):
    """Answers by path: what a scoring service might do, good and bad."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b"Healthy", "text/plain")

    def do_POST(self) -> None:
        received = self.rfile.read(int(self.headers["Content-Length"]))
        path = self.path
        if path == "/score":
            self._send(200, json.dumps({**good_response(), "echo_bytes": len(received)}).encode())
        elif path == "/reject":
            self._send(404, b'{"error": "key_not_found", "message": "The public-key blob was not found."}')
        elif path == "/html500":
            self._send(500, b"<html>Internal Server Error</html>", "text/html")
        elif path == "/notjson":
            self._send(200, b"this is not json", "text/plain")
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, b"{}")
        else:
            self._send(404, b"nope", "text/plain")


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with serve(StubHandler) as url:
        yield url


def test_scoring_client_success(stub_url: str) -> None:
    request = {"contract": CONTRACT, "ciphertexts": ["x" * 1000]}
    with ScoringClient(f"{stub_url}/score", 5) as client:
        call = client.score(request)
        assert (
            call.body["echo_bytes"] == call.request_bytes == len(json.dumps(request, separators=(",", ":")))
        )
        assert call.response_bytes > 100 and 0 < call.round_trip_s < 5
        assert client.is_healthy()


def test_scoring_client_maps_refusals(stub_url: str) -> None:
    with pytest.raises(ServiceRejected) as info:
        ScoringClient(f"{stub_url}/reject", 5).score({})
    assert (info.value.status, info.value.code) == (404, "key_not_found")
    assert "not found" in info.value.message
    with pytest.raises(ServiceRejected) as info:
        ScoringClient(f"{stub_url}/html500", 5).score({})
    assert (info.value.status, info.value.code) == (500, "server_error")
    with pytest.raises(ServiceRejected) as info:
        ScoringClient(f"{stub_url}/notjson", 5).score({})
    assert (info.value.status, info.value.code) == (200, "bad_response")


def test_scoring_client_timeout(stub_url: str) -> None:
    with pytest.raises(ServiceUnavailable, match=r"did not answer within 0\.5 s"):
        ScoringClient(f"{stub_url}/slow", 0.5).score({})


def test_scoring_client_unreachable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ScoringClient(f"http://127.0.0.1:{port}/score", 5)
    assert client.is_healthy() is False
    started = time.perf_counter()
    with pytest.raises(ServiceUnavailable) as info:
        client.score({})
    assert time.perf_counter() - started < 5
    assert f"http://127.0.0.1:{port}/score" in info.value.message
    assert "scripts.local_stack up" in info.value.message


# --- a contract-following stand-in for the service ---------------------------------------------


class ContractScorer:
    """In-process scorer that follows docs/contract.md section 1 (used where ScoringClient is).

    It fetches the keys only through the SAS URL with plain HTTP, checks their SHA-256, caches them
    by (blob URL, sha256), and answers with the same error codes as the service for a missing blob
    or a refused SAS. Computation is the package's native dot product on a random 10-class model.
    """

    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.coef = rng.normal(scale=0.05, size=(10, 784))
        self.intercept = rng.normal(size=10)
        self.received: list[dict[str, Any]] = []
        self.cache: dict[tuple[str, str], bytes] = {}
        self.closed = False
        self._native = einative.SEALServerInstance()

    def close(self) -> None:
        self.closed = True

    def _keys(self, url: str, sha256: str) -> tuple[bytes, str, float]:
        cache_key = (strip_sas(url), sha256)
        if cache_key in self.cache:
            return self.cache[cache_key], "hit", 0.0
        started = time.perf_counter()
        response = requests.get(url, timeout=30)
        if response.status_code == 404:
            raise ServiceRejected(
                404, "key_not_found", "The public-key blob was not found: upload the keys again."
            )
        if response.status_code == 403:
            raise ServiceRejected(403, "sas_invalid", "Blob storage refused the SAS.")
        response.raise_for_status()
        if hashlib.sha256(response.content).hexdigest() != sha256:
            raise ServiceRejected(422, "key_hash_mismatch", "The key blob does not hash to keys.sha256.")
        self.cache[cache_key] = response.content
        return response.content, "miss", time.perf_counter() - started

    def score(self, request: dict[str, Any]) -> ScoreCall:
        started = time.perf_counter()
        payload = json.dumps(request, separators=(",", ":")).encode()
        self.received.append(json.loads(payload))
        sas = parse_qs(urlsplit(request["keys"]["url"]).query)
        assert sas["sp"] == ["r"], "the session must send a read-only SAS"
        keys, cache, fetch_s = self._keys(request["keys"]["url"], request["keys"]["sha256"])
        compute_started = time.perf_counter()
        cipher = b"".join(base64.b64decode(c) for c in request["ciphertexts"])
        cipher_buf = (ctypes.c_byte * len(cipher)).from_buffer_copy(cipher)
        key_buf = (ctypes.c_byte * len(keys)).from_buffer_copy(keys)
        capacity = self._native.get_ciphertext_buffer_size()
        results = []
        for row, bias in zip(self.coef, self.intercept, strict=True):
            out = (ctypes.c_byte * capacity)()
            size = ctypes.c_uint64(capacity)
            error = einative._einative.ComputeDotProduct(
                self._native.native_ptr, ctypes.c_uint64(784), (ctypes.c_double * 784)(*row), ctypes.c_double(bias),
                ctypes.c_uint64(len(cipher)), cipher_buf, ctypes.c_uint64(len(keys)), key_buf,
                ctypes.byref(size), out,
            )  # fmt: skip
            assert error == 0
            results.append(base64.b64encode(ctypes.string_at(out, size.value)).decode())
        compute_s = time.perf_counter() - compute_started
        body = {
            "contract": CONTRACT,
            "scheme": "ei-0.9",
            "result": results,
            "server": {
                "key_cache": cache,
                "timings_ms": {
                    "parse": 1.0,
                    "key_fetch": fetch_s * 1000,
                    "compute": compute_s * 1000,
                    "total": (time.perf_counter() - started) * 1000,
                },
                "sizes": {
                    "request_bytes": len(payload),
                    "ciphertext_bytes": len(cipher),
                    "key_bytes": len(keys),
                    "result_bytes": sum(len(base64.b64decode(r)) for r in results),
                },
            },
        }
        response = json.dumps(body).encode()
        return ScoreCall(json.loads(response), len(payload), len(response), time.perf_counter() - started)


def blob_status(sas_or_url: str) -> int:
    return requests.get(sas_or_url, timeout=10).status_code


@pytest.fixture(scope="module")
def fake_session(azurite) -> Iterator[tuple[EncryptedSession, ContractScorer]]:
    settings = AppSettings(blob_connection_string=azurite.connection_string, blob_container="session-tests")
    scorer = ContractScorer()
    progress: list[tuple[str, float]] = []
    session = EncryptedSession.start(settings, lambda m, f: progress.append((m, f)), scheme="ei", scorer=scorer)  # type: ignore[arg-type]
    assert progress[0][1] == 0.0 and progress[-1] == ("Ready", 1.0)
    yield session, scorer
    session.close()


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    return np.random.default_rng(5).random(784).astype(np.float32)


@pytest.mark.slow
@pytest.mark.integration
def test_start_uploads_public_keys(fake_session: tuple[EncryptedSession, ContractScorer], azurite) -> None:
    session, _ = fake_session
    assert session.key_blob_url == f"{azurite.blob_endpoint}/session-tests/{session.key_id}"
    assert "?" not in session.key_blob_url
    assert set(session.setup_timings_s) == {"keygen", "upload"}
    assert all(v > 0 for v in session.setup_timings_s.values())
    downloaded = requests.get(session._sas_url, timeout=10)
    assert downloaded.status_code == 200
    assert downloaded.headers["x-ms-meta-scheme"] == "ei"
    assert len(downloaded.content) == session.key_bytes > 1_000_000
    assert hashlib.sha256(downloaded.content).hexdigest() == session.key_sha256
    assert session.sas_expires_at > datetime.now(UTC) + timedelta(minutes=55)
    assert session.key_id in repr(session) and "sig=" not in repr(session)


@pytest.mark.slow
@pytest.mark.integration
def test_predict_matches_plaintext_model(
    fake_session: tuple[EncryptedSession, ContractScorer], digit: np.ndarray
) -> None:
    session, scorer = fake_session
    first = session.predict(digit)
    expected = scorer.coef @ digit.astype(np.float64) + scorer.intercept
    np.testing.assert_allclose(first.scores, expected, atol=1e-3)
    assert first.label == int(np.argmax(expected))
    assert first.key_cache == "miss"
    assert [(s.name, s.source) for s in first.stages] == [
        ("encrypt", "client"),
        ("request", "client"),
        ("parse", "server"),
        ("key fetch (cache miss)", "server"),
        ("compute", "server"),
        ("decrypt", "client"),
    ]
    assert all(s.seconds >= 0 for s in first.stages)
    assert sum(s.seconds for s in first.stages) <= first.total_s + 0.05
    assert first.stage_seconds("compute") == first.stages[4].seconds
    assert first.server_seconds == pytest.approx(sum(s.seconds for s in first.stages[2:5]))
    assert first.sizes["key_bytes"] == session.key_bytes
    assert first.sizes["request_bytes"] > first.sizes["ciphertext_bytes"] > 100_000
    assert first.sizes["response_bytes"] > first.sizes["result_bytes"] > 10 * 100_000

    second = session.predict(digit)
    assert second.key_cache == "hit"
    assert second.stages[3] == ("key fetch (cache hit)", 0.0, "server")
    np.testing.assert_allclose(second.scores, first.scores, atol=1e-4)


@pytest.mark.slow
@pytest.mark.integration
def test_request_body_is_ciphertexts_and_sas_only(
    fake_session: tuple[EncryptedSession, ContractScorer], digit: np.ndarray, azurite
) -> None:
    session, scorer = fake_session
    prediction = session.predict(digit)
    body = prediction.request_body
    assert body == scorer.received[-1]
    assert set(body) == {"contract", "scheme", "ciphertexts", "keys"}
    assert body["scheme"] == session.scheme
    assert strip_sas(body["keys"]["url"]) == session.key_blob_url
    assert body["keys"]["sha256"] == session.key_sha256
    text = json.dumps(body)
    assert "AccountKey" not in text and azurite.connection_string.split("AccountKey=")[1][:20] not in text


@pytest.mark.slow
@pytest.mark.integration
def test_sas_close_to_expiry_is_renewed(
    fake_session: tuple[EncryptedSession, ContractScorer], digit: np.ndarray
) -> None:
    session, scorer = fake_session
    session._sas_expires_at = datetime.now(UTC) + timedelta(seconds=30)
    session.predict(digit)
    assert session.sas_expires_at > datetime.now(UTC) + timedelta(minutes=55)
    assert scorer.received[-1]["keys"]["url"] == session._sas_url


@pytest.mark.slow
@pytest.mark.integration
def test_lost_blob_is_uploaded_again(
    fake_session: tuple[EncryptedSession, ContractScorer], digit: np.ndarray
) -> None:
    session, scorer = fake_session
    session._store.delete(session.key_id)
    scorer.cache.clear()
    prediction = session.predict(digit)
    assert "re-upload keys" in [s.name for s in prediction.stages]
    assert blob_status(session._sas_url) == 200


@pytest.mark.slow
@pytest.mark.integration
def test_rotate_and_close_delete_blobs(azurite, digit: np.ndarray) -> None:
    settings = AppSettings(blob_connection_string=azurite.connection_string, blob_container="session-tests")
    scorer = ContractScorer()
    session = EncryptedSession.start(settings, scheme="ei", scorer=scorer)  # type: ignore[arg-type]
    old_id, old_sas = session.key_id, session._sas_url
    session.rotate_key()
    assert session.key_id != old_id
    assert blob_status(old_sas) == 404
    assert blob_status(session._sas_url) == 200
    assert session.predict(digit).key_cache == "miss"
    new_sas = session._sas_url
    session.close()
    session.close()
    assert blob_status(new_sas) == 404 and scorer.closed
    with pytest.raises(RuntimeError, match="closed"):
        session.predict(digit)


def test_start_without_storage_fails_before_keygen(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from lib.errors import StorageUnavailable
    from lib.settings import azurite_connection_string

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = AppSettings(blob_connection_string=azurite_connection_string(port))

    def no_keygen(_scheme: str) -> None:
        raise AssertionError("keys were made although storage is down")

    monkeypatch.setattr("lib.session.new_client", no_keygen)
    with pytest.raises(StorageUnavailable, match=r"scripts\.local_stack up"):
        EncryptedSession.start(settings, scheme="ei", scorer=ContractScorer())  # type: ignore[arg-type]


# --- the real scoring service ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_service(request: pytest.FixtureRequest):
    if not MODEL_PATH.is_file():
        pytest.skip(f"{MODEL_PATH.name} has not been trained yet (scripts/train_model.py)")
    return request.getfixturevalue("scoring_service")


@pytest.mark.integration
@pytest.mark.parametrize("scheme", [pytest.param("ei", marks=pytest.mark.slow), "ckks", "bfv"])
def test_real_service_prediction(scheme: str, azurite, real_service, digit: np.ndarray) -> None:
    with np.load(MODEL_PATH) as model:
        coef, intercept = model["coef"], model["intercept"]
    settings = AppSettings(
        blob_connection_string=azurite.connection_string, scoring_url=real_service.url, scoring_timeout_s=300
    )
    with EncryptedSession.start(settings, scheme=scheme) as session:
        assert session._scorer.is_healthy()
        assert session.scheme["name"] == scheme
        first, *later = (session.predict(digit) for _ in range(3))
    pixels = digit.astype(np.float64)
    if scheme == "bfv":  # bfv computes on pixels quantised to 0..255
        pixels = np.rint(pixels * 255) / 255
    expected = coef @ pixels + intercept
    for prediction in (first, *later):
        np.testing.assert_allclose(prediction.scores, expected, atol=1e-3)
    assert first.label == int(np.argmax(expected))
    # Each of the fixture's 2 workers has its own cache: by the third request one of them has the keys.
    assert first.key_cache == "miss" and "hit" in [p.key_cache for p in later]
    assert first.sizes["key_bytes"] == session.key_bytes
    assert [s.source for s in first.stages] == ["client", "client", "server", "server", "server", "client"]


class FlakyScorer:
    """Fails the first calls with scripted errors, then scores through ``inner``."""

    def __init__(self, inner: ContractScorer, failures: list[Exception]) -> None:
        self.inner = inner
        self.failures = list(failures)
        self.calls = 0

    def score(self, request: dict[str, Any]) -> ScoreCall:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.inner.score(request)

    def close(self) -> None:
        self.inner.close()


def _replica_died() -> ServiceRejected:
    return ServiceRejected(502, "upstream_unavailable", "No scoring replica answered.")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("failure", [
    pytest.param(lambda: ServiceUnavailable("connection reset", transient=True), id="connection-broke"),
    pytest.param(_replica_died, id="502-from-the-front"),
    pytest.param(lambda: ServiceRejected(503, "not_ready", "The service is still starting."), id="503-not-ready"),
])
def test_a_transient_failure_is_retried_once_and_the_answer_is_right(
    fake_session: tuple[EncryptedSession, ContractScorer], digit: np.ndarray, failure: Any
) -> None:
    session, scorer = fake_session
    flaky = FlakyScorer(scorer, [failure()])
    session._scorer = flaky  # type: ignore[assignment]
    try:
        prediction = session.predict(digit)
    finally:
        session._scorer = scorer  # type: ignore[assignment]
    assert flaky.calls == 2
    assert "retry (service restarting)" in [s.name for s in prediction.stages]
    expected = scorer.coef @ digit + scorer.intercept
    assert prediction.label == int(np.argmax(expected))
    np.testing.assert_allclose(prediction.scores, expected, atol=1e-3)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("failures", [
    pytest.param([_replica_died(), _replica_died()], id="twice-transient"),
    pytest.param([ServiceUnavailable("did not answer within 120 s")], id="timeout"),
    pytest.param([ServiceRejected(502, "storage_unavailable", "Blob storage could not be reached.")], id="storage-down"),
    pytest.param([ServiceRejected(504, "upstream_timeout", "No answer in time.")], id="504"),
    pytest.param([ServiceRejected(422, "ciphertext_invalid", "Not a ciphertext.")], id="422"),
])
def test_other_failures_are_not_retried_again(
    fake_session: tuple[EncryptedSession, ContractScorer], digit: np.ndarray, failures: list[Exception]
) -> None:
    session, scorer = fake_session
    flaky = FlakyScorer(scorer, failures)
    session._scorer = flaky  # type: ignore[assignment]
    try:
        with pytest.raises(type(failures[-1])) as raised:
            session.predict(digit)
    finally:
        session._scorer = scorer  # type: ignore[assignment]
    assert raised.value is failures[-1]
    assert flaky.calls == len(failures)
