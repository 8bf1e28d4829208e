"""The one seam, tested from both sides: lib/ builds and reads what service/ reads and builds.

The JSON examples in docs/contract.md are part of the test: the documented response must be
accepted by the client, and the service's real response must have exactly the documented shape.
"""
import base64
import json
import re
from pathlib import Path

import pytest

from lib.contract import build_score_request, build_seed_request, parse_score_response
from lib.schemes import SCHEME_NAMES, descriptor
from service.contract import ScoreRequest, SeedRequest, parse_request
from service.schemes.ei_isolated import Evaluation
from service.scoring import ScoringService
from service.shared.specs import SPECS

DOC = Path(__file__).resolve().parents[1] / "docs" / "contract.md"
CIPHERTEXT = base64.b64encode(b"\x5e\xa1" + bytes(100)).decode()
SAS_URL = "http://127.0.0.1:10000/devstoreaccount1/public-keys/abc?sp=r&se=2099-01-01T00%3A00%3A00Z&sig=x"


def doc_json_blocks() -> list[object]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.DOTALL)]


def shape(value: object) -> object:
    """The keys of nested objects (the contract's shape), ignoring values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__ if not isinstance(value, (int, float)) or isinstance(value, bool) else "number"


def parse(body: dict):
    return parse_request(json.dumps(body), max_request_bytes=1 << 22, max_ciphertexts=8, max_ciphertext_bytes=1 << 20)


def documented_descriptors() -> dict:
    return next(block for block in doc_json_blocks() if isinstance(block, dict) and set(block) == set(SCHEME_NAMES))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_every_descriptor_is_exactly_the_documented_json(name):
    """One spec per scheme: the client sends it, the service expects it, docs/contract.md shows it."""
    documented = documented_descriptors()[name]
    assert json.dumps(descriptor(name)) == json.dumps(documented)  # same keys, order and values
    assert json.dumps(SPECS[name].descriptor()) == json.dumps(documented)
    assert SPECS[name].mismatch(documented) is None
    assert list(documented_descriptors()) == list(SCHEME_NAMES)


def test_ei_descriptor_is_the_seeds_parameters():
    assert descriptor("ei") == {"name": "ei", "version": "0.9", "params": {
        "poly_modulus_degree": 8192, "coeff_modulus_bits": [60, 40, 40, 60], "scale_bits": 40}}


def test_client_request_is_what_the_service_parses():
    body = build_score_request(descriptor("ei"), [CIPHERTEXT], SAS_URL, "ab" * 32)
    request = parse(body)
    assert isinstance(request, ScoreRequest)
    assert (request.ciphertexts, request.key_url, request.key_sha256) == (
        [base64.b64decode(CIPHERTEXT)], SAS_URL, "ab" * 32)
    assert request.scheme == descriptor("ei")


def test_seed_request_is_what_the_service_parses():
    body = build_seed_request([CIPHERTEXT], "keyid", "UseDevelopmentStorage=true", "public-keys")
    request = parse(body)
    assert isinstance(request, SeedRequest)
    assert (request.key_id, request.container) == ("keyid", "public-keys")


def test_documented_request_has_the_client_request_shape():
    documented = next(block for block in doc_json_blocks() if isinstance(block, dict) and "keys" in block)
    built = build_score_request(descriptor("ei"), [CIPHERTEXT], SAS_URL, "ab" * 32)
    assert shape(documented) == shape(built)
    assert documented["scheme"] == descriptor("ei")


def service_response(key_cache_hit: bool) -> dict:
    evaluation = Evaluation(results=[b"r" * 7] * 10, cache_hit=key_cache_hit, key_bytes=123, key_fetch_s=0.01,
                            compute_s=0.5)
    request = ScoreRequest(scheme=descriptor("ei"), ciphertexts=[base64.b64decode(CIPHERTEXT)], key_url=SAS_URL, key_sha256="ab" * 32)
    return ScoringService._response(request, "ei-0.9", ["cg=="] * 10, evaluation, "x" * 99, 0.001, 0.6)


@pytest.mark.parametrize("hit", [True, False])
def test_service_response_is_what_the_client_parses(hit):
    body = json.loads(json.dumps(service_response(hit)))
    result = parse_score_response(body, expected_scheme="ei-0.9", expected_results=10)
    assert result.key_cache == ("hit" if hit else "miss")
    assert result.sizes == {"request_bytes": 99, "ciphertext_bytes": 102, "key_bytes": 123, "result_bytes": 70}
    assert result.timings_ms["compute"] == pytest.approx(500.0)


def test_documented_response_has_the_service_response_shape_and_the_client_accepts_it():
    documented = next(block for block in doc_json_blocks() if isinstance(block, dict) and "server" in block)
    assert shape(documented) == shape(service_response(False))
    parse_score_response(documented)


def test_documented_error_body_is_what_the_service_sends():
    from service.errors import RequestRejected

    documented = next(block for block in doc_json_blocks() if isinstance(block, dict) and "error" in block)
    assert set(documented) == set(RequestRejected(404, "key_not_found", "m").as_body())
