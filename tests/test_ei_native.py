"""Unit tests: the fast native path of the `ei` scheme, and its crash isolation."""
import base64
import struct
import zlib

import numpy as np
import pytest
from encrypted.inference.eiclient import EILinearRegressionClient
from encrypted.inference.eiserver import EIServer

from service.errors import RequestRejected
from service.schemes.ei import EiScheme
from service.schemes.ei_isolated import IsolatedEvaluator, KeyCache
from service.schemes.ei_key_expansion import expand_seeded_keys
from service.schemes.ei_native import EiNativeEvaluator, to_native_buffer
from service.scoring import load_model
from service.shared.seal3 import SEAL_VERSION, check_objects
from service.shared.seal_header import COMPR_NONE, COMPR_ZLIB, SealFormatError, read_header

pytestmark = pytest.mark.slow  # the seed's ei scheme: seconds per test

MODES = (COMPR_NONE, COMPR_ZLIB)


@pytest.fixture(scope="module")
def ei_client():
    client = EILinearRegressionClient()
    client.get_public_keys()
    return client


@pytest.fixture(scope="module")
def public_keys(ei_client):
    return ei_client.get_public_keys()[1]


@pytest.fixture(scope="module")
def model():
    return load_model("service/model/mnist/1")


@pytest.fixture(scope="module")
def digit():
    rng = np.random.default_rng(7)
    return rng.random(784) * (rng.random(784) > 0.7)


def test_fast_path_equals_eiserver_predict(ei_client, public_keys, model, digit):
    coef, intercept = model[0][:3], model[1][:3]  # the reference takes ~2.4 s per class
    ciphertexts = ei_client.encrypt(digit)
    reference = ei_client.decrypt(EIServer(coef, intercept).predict(ciphertexts, public_keys))
    evaluator = EiNativeEvaluator(coef, intercept, threads=2)
    ciphertext = base64.b64decode(ciphertexts[0])
    # As sent, and re-framed uncompressed the way the service feeds the native code.
    for ciphertext_bytes, key_bytes in (
        (ciphertext, public_keys),
        (check_objects(ciphertext, 1, SEAL_VERSION, MODES), EiScheme.check_key_blob(public_keys)),
    ):
        fast = evaluator.evaluate(ciphertext_bytes, to_native_buffer(key_bytes))
        decrypted = ei_client.decrypt([base64.b64encode(item).decode() for item in fast])
        assert np.max(np.abs(decrypted - reference)) <= 1e-6
        assert np.max(np.abs(decrypted - (coef @ digit + intercept))) <= 1e-4


def test_expanded_keys_give_byte_identical_results(ei_client, public_keys, model, digit):
    """Generating the keys' seeded halves once must reproduce SEAL's own expansion exactly: the
    native results (deterministic for the same keys) are the same bytes, and they decrypt right."""
    coef, intercept = model[0][:2], model[1][:2]
    ciphertext = check_objects(base64.b64decode(ei_client.encrypt(digit)[0]), 1, SEAL_VERSION, MODES)
    seeded = EiScheme.check_key_blob(public_keys)
    expanded = expand_seeded_keys(seeded)
    assert 1.9 * len(seeded) < len(expanded) < 2.1 * len(seeded)  # every key ciphertext was seeded
    assert expand_seeded_keys(expanded) == expanded  # nothing left to expand
    evaluator = EiNativeEvaluator(coef, intercept, threads=1)
    from_seeded = evaluator.evaluate(ciphertext, to_native_buffer(seeded))
    from_expanded = evaluator.evaluate(ciphertext, to_native_buffer(expanded))
    assert from_expanded == from_seeded
    decrypted = ei_client.decrypt([base64.b64encode(item).decode() for item in from_expanded])
    assert np.max(np.abs(decrypted - (coef @ digit + intercept))) <= 1e-4


def test_a_wrong_expansion_would_be_seen(ei_client, public_keys, model, digit):
    """The counter-check: one flipped seed byte changes a key, and the results with it."""
    coef, intercept = model[0][:1], model[1][:1]
    ciphertext = check_objects(base64.b64decode(ei_client.encrypt(digit)[0]), 1, SEAL_VERSION, MODES)
    seeded = bytearray(EiScheme.check_key_blob(public_keys))
    offset = 16 + 32 + 8  # the Galois keys' header, parms_id and vector count
    while struct.unpack_from("<Q", seeded, offset)[0] == 0:  # empty vectors up to the first key
        offset += 8
    first_key = offset + 8
    seeded[first_key + read_header(seeded, first_key).size - 1] ^= 1  # its seed's last byte
    evaluator = EiNativeEvaluator(coef, intercept, threads=1)
    good = evaluator.evaluate(ciphertext, to_native_buffer(expand_seeded_keys(EiScheme.check_key_blob(public_keys))))
    assert evaluator.evaluate(ciphertext, to_native_buffer(expand_seeded_keys(bytes(seeded)))) != good


@pytest.mark.parametrize("damage", ["truncated", "wrong_parms_id", "huge_vector_count", "trailing"])
def test_expansion_refuses_what_it_does_not_recognise(public_keys, damage):
    blob = bytearray(EiScheme.check_key_blob(public_keys))
    galois_end = read_header(blob).size
    galois = blob[:galois_end]
    if damage == "truncated":
        galois = galois[: len(galois) // 2]
        struct.pack_into("<Q", galois, 8, len(galois))  # a consistent header over a cut body
    elif damage == "wrong_parms_id":
        galois[16] ^= 0xFF
    elif damage == "huge_vector_count":
        struct.pack_into("<Q", galois, 16 + 32, 1 << 40)
    else:
        galois += b"\0" * 8
        struct.pack_into("<Q", galois, 8, len(galois))
    with pytest.raises(SealFormatError):
        expand_seeded_keys(bytes(galois))


def test_key_cache_is_bounded_and_least_recently_used_goes_first():
    cache = KeyCache(max_bytes=100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == ("A", 40)  # "a" is now the most recent
    cache.put("c", "C", 40)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.total_bytes == 80
    cache.put("huge", "H", 500)  # larger than the bound: kept alone, everything else goes
    assert len(cache) == 1 and cache.total_bytes == 500


def _fake_sealed_ciphertext() -> bytes:
    """Framing that passes the Python checks but is not a ciphertext: SEAL aborts on it."""
    payload = zlib.compress(bytes(range(256)) * 20)
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 3, 5, 1, 0, 16 + len(payload)) + payload


def test_a_native_crash_costs_a_restart_not_the_caller(ei_client, public_keys, model, digit):
    coef, intercept = model[0][:2], model[1][:2]
    evaluator = IsolatedEvaluator(coef, intercept, threads=1, cache_bytes=1 << 26)
    try:
        good = base64.b64decode(ei_client.encrypt(digit)[0])
        fetches = []

        def fetch():
            fetches.append(1)
            return EiScheme.check_key_blob(public_keys), len(public_keys)

        first = evaluator.evaluate("k", good, fetch)
        assert not first.cache_hit and first.key_bytes == len(public_keys) and len(first.results) == 2
        with pytest.raises(RequestRejected) as caught:
            evaluator.evaluate("k", _fake_sealed_ciphertext(), fetch)
        assert (caught.value.status, caught.value.code) == (422, "ciphertext_invalid")
        assert evaluator.restarts == 1
        again = evaluator.evaluate("k", good, fetch)  # a new child: the keys are fetched again
        assert not again.cache_hit and len(fetches) == 2
        decrypted = ei_client.decrypt([base64.b64encode(item).decode() for item in again.results])
        assert np.max(np.abs(decrypted - (coef @ digit + intercept))) <= 1e-4
        hit = evaluator.evaluate("k", good, fetch)
        assert hit.cache_hit and len(fetches) == 2
    finally:
        evaluator.close()


def test_scheme_refuses_bad_ciphertexts_and_key_blobs_before_native_code(public_keys, model):
    scheme = EiScheme(model[0][:1], model[1][:1], threads=1, cache_bytes=1 << 26)
    try:
        with pytest.raises(RequestRejected) as caught:
            scheme.decode_ciphertexts([b"\x00" * 100])
        assert caught.value.code == "ciphertext_invalid"
        with pytest.raises(RequestRejected) as caught:
            scheme.decode_ciphertexts([b"\x00\x00\x00", b"\x00\x00\x00"])
        assert (caught.value.status, caught.value.code) == (422, "ciphertext_invalid")  # a wrong count
        inflated = scheme.check_key_blob(public_keys)
        assert len(inflated) > len(public_keys)  # re-framed without compression
        for broken in (public_keys[:-100], public_keys[8_000_000:], b"garbage" * 100):
            with pytest.raises(RequestRejected) as caught:
                scheme.check_key_blob(broken)
            assert caught.value.code == "key_invalid"
        assert scheme.spec.descriptor()["params"] == {
            "poly_modulus_degree": 8192, "coeff_modulus_bits": [60, 40, 40, 60], "scale_bits": 40
        }
    finally:
        scheme.close()


def test_closing_before_the_child_is_ready_ends_it_cleanly(model, capfd: pytest.CaptureFixture[str]) -> None:
    """Closed at once (e.g. a worker shutting down during start-up): the child exits 0, no traceback."""
    coef, intercept = model
    evaluator = IsolatedEvaluator(coef, intercept, threads=1, cache_bytes=1 << 20)
    evaluator.close()  # the child is still building its native evaluator: its "ready" meets a closed pipe
    assert evaluator._process.returncode == 0
    assert "Traceback" not in capfd.readouterr().err
