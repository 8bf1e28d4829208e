"""The scheme interface from both sides: every client half against its service half, in process.

Round trips, agreement with the plaintext model on real MNIST test digits (1,000 for ckks and
bfv, 20 for the slow seed scheme), the one spec both sides hold, refusals of foreign or
malformed inputs, and the bfv mask: a crafted unit-vector query must not reveal a weight.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tenseal import sealapi as sa

from lib.errors import InvalidInput
from lib.mnist_data import SHARED_TEST_SET, load_test_set
from lib.schemes import SCHEME_NAMES, descriptor, new_client
from lib.schemes import SPECS as CLIENT_SPECS
from service.errors import RequestRejected
from service.key_source import KeyReference
from service.schemes import build_schemes
from service.schemes.bfv import BfvScheme, quantised_model, weight_polynomials
from service.schemes.ckks import CkksScheme
from service.schemes.ei import EiScheme
from service.schemes.network import MASK_BOUND, NetworkScheme
from service.scoring import load_model
from service.settings import ServiceSettings
from service.shared.network_layout import hidden_bias, layer1_diagonals, layer2_row_weights, slot_pixels
from service.shared.network_model import NetworkWeights, load_network
from service.shared.seal4 import FILES, galois_element, load_object, plaintext_from_coefficients
from service.shared.specs import BFV, BROWSER, CKKS, NETWORK, SERVED_SPECS, SPECS

OUTPUT_COEFFICIENTS = list(BFV.params.output_coefficients)

MODEL_DIR = Path(__file__).resolve().parents[1] / "service" / "model" / "mnist" / "1"
CACHE = 64 << 20
CKKS_OUTPUT_SLOTS = CKKS.params.output_slots
NETWORK_OUTPUT_SLOTS = NETWORK.params.output_slots
# The largest |decrypted - plaintext score| allowed: ckks and bfv measure about 1e-4; the network's
# scales leave it about 5e-3 (measured; see test_network_agreement_on_1000_real_test_digits).
TOLERANCE = {"ckks": 1e-3, "bfv": 1e-3, "network": 0.02}


@pytest.fixture(scope="module")
def model() -> tuple[np.ndarray, np.ndarray]:
    return load_model(MODEL_DIR)


@pytest.fixture(scope="module")
def network() -> NetworkWeights:
    return load_network(MODEL_DIR)


@pytest.fixture(scope="module")
def test_digits() -> tuple[np.ndarray, np.ndarray]:
    if not Path(SHARED_TEST_SET).exists():
        pytest.skip(f"the real MNIST test set is not at {SHARED_TEST_SET}")
    images, labels = load_test_set()
    return images.reshape(len(images), -1).astype(np.float64), labels


@pytest.fixture(scope="module")
def servers(model, network) -> Iterator[dict]:
    coef, intercept = model
    schemes = {"ckks": CkksScheme(coef, intercept, CACHE), "bfv": BfvScheme(coef, intercept, CACHE),
               "network": NetworkScheme(network, CACHE)}
    yield schemes


@pytest.fixture(scope="module")
def ei_server(model) -> Iterator[EiScheme]:
    coef, intercept = model
    scheme = EiScheme(coef, intercept, 2, CACHE)
    scheme.wait_ready()
    yield scheme
    scheme.close()


def keys_of(blob: bytes, name: str = "blob") -> KeyReference:
    return KeyReference(blob_url=f"http://test/{name}", cache_key=(name, str(hash(blob))), fetch=lambda: blob)


def decoded(texts: list[str]) -> list[bytes]:
    """The request's ciphertexts as the service's parser hands them to a scheme."""
    return [base64.b64decode(text) for text in texts]


def score(client, server, pixels: np.ndarray, keys: KeyReference) -> np.ndarray:
    """One prediction through both halves, exactly as the service would run it (minus HTTP)."""
    ciphertexts = client.encrypt(pixels)
    evaluation = server.evaluate(keys, server.decode_ciphertexts(decoded(ciphertexts)))
    return client.decrypt(server.encode_results(evaluation.results))


def plaintext_scores(model, pixels: np.ndarray, scheme: str) -> np.ndarray:
    if scheme == "network":
        return load_network(MODEL_DIR).logits(pixels)
    coef, intercept = model
    if scheme == "bfv":  # bfv computes on pixels quantised to 0..255
        pixels = np.rint(pixels * 255) / 255
    return pixels @ coef.T + intercept


# --- the descriptors: one spec per scheme, held by both sides ----------------------------------------


def test_both_sides_hold_the_one_spec_of_every_scheme(model, network) -> None:
    """The client's request descriptor and the service's expected one are derived from one object."""
    coef, intercept = model
    schemes = build_schemes(coef, intercept, ServiceSettings.from_env(), network=network)
    try:
        assert list(schemes) == [*SCHEME_NAMES, BROWSER.name] == list(SERVED_SPECS)
        assert list(SCHEME_NAMES) == list(SPECS) == list(CLIENT_SPECS)
        assert schemes[BROWSER.name].spec is BROWSER  # its client half is the tab's (tests/test_browser_scheme.py)
        for name in SCHEME_NAMES:
            scheme, client = schemes[name], new_client(name)
            assert scheme.spec is type(client).spec is SPECS[name] is CLIENT_SPECS[name]
            assert scheme.spec.mismatch(client.descriptor) is None  # what the client sends is what the service runs
            assert client.descriptor == scheme.spec.descriptor() == descriptor(name) == SPECS[name].descriptor()
            assert client.scheme_id == scheme.spec.label == f"{name}-{scheme.spec.version}"
            assert client.result_count == scheme.spec.result_count
    finally:
        for scheme in schemes.values():
            scheme.close()
    for name in ("ckks", "bfv", "network"):
        assert descriptor(name)["params"]["security_bits"] == 128


def test_descriptors_are_fresh_copies() -> None:
    """A caller that changes a descriptor changes neither the spec nor what the service expects."""
    for name in SCHEME_NAMES:
        sent = descriptor(name)
        sent["params"]["coeff_modulus_bits"].append(1)
        sent["version"] = "changed"
        assert descriptor(name) != sent
        assert SPECS[name].mismatch(descriptor(name)) is None
        assert SPECS[name].mismatch(sent) == ["coeff_modulus_bits", "version"]


def test_unknown_scheme_is_refused_by_the_client() -> None:
    with pytest.raises(InvalidInput, match="Unknown scheme"):
        new_client("rsa")


# --- round trips and agreement with the plaintext model ------------------------------------------


@pytest.mark.parametrize("name", ["ckks", "bfv", "network"])
def test_round_trip_matches_the_plaintext_model(name: str, model, servers) -> None:
    client = new_client(name)
    keys = keys_of(client.public_material(), name)
    pixels = np.random.default_rng(3).random(784)
    scores = score(client, servers[name], pixels, keys)
    np.testing.assert_allclose(scores, plaintext_scores(model, pixels, name), atol=TOLERANCE[name])
    assert "secret" not in repr(client).lower() and client.key_id in repr(client)
    with pytest.raises(TypeError, match="cannot be pickled"):
        json.dumps(client, default=lambda o: o.__reduce__())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ckks", "bfv"])
def test_agreement_on_1000_real_test_digits(name: str, model, servers, test_digits) -> None:
    images, labels = test_digits
    client = new_client(name)
    keys = keys_of(client.public_material(), name)
    worst, agree, correct = 0.0, 0, 0
    for pixels, label in zip(images[:1000], labels[:1000], strict=True):
        scores = score(client, servers[name], pixels, keys)
        expected = plaintext_scores(model, pixels, name)
        worst = max(worst, float(np.abs(scores - expected).max()))
        agree += int(np.argmax(scores) == np.argmax(expected))
        correct += int(np.argmax(scores) == label)
    print(f"{name}: max |error| {worst:.2e}, argmax agreement {agree}/1000, accuracy {correct / 1000:.3f}")
    assert agree == 1000
    assert worst <= 1e-3
    assert correct >= 900


@pytest.mark.slow
def test_ei_agreement_on_20_real_test_digits(model, ei_server, test_digits) -> None:
    images, _ = test_digits
    client = new_client("ei")
    keys = keys_of(client.public_material(), "ei")
    for pixels in images[:20]:
        scores = score(client, ei_server, pixels, keys)
        expected = plaintext_scores(model, pixels, "ei")
        assert np.argmax(scores) == np.argmax(expected)
        assert np.abs(scores - expected).max() <= 1e-3


def test_bfv_quantisation_never_changes_the_argmax_on_the_real_test_set(model, test_digits) -> None:
    """BFV is exact mod t, so integer arithmetic here is what the service computes: check all 10,000."""
    coef, intercept = model
    images, _ = test_digits
    weights, biases = quantised_model(coef, intercept)
    levels = np.rint(images * 255).astype(np.int64)
    fixed_point = levels @ weights.T + biases
    assert np.abs(fixed_point).max() < 2**31  # fits t / 2 = 2^31
    float_argmax = np.argmax(images @ coef.T + intercept, axis=1)
    changed = int((np.argmax(fixed_point, axis=1) != float_argmax).sum())
    assert changed == 0, f"quantisation changes the prediction of {changed} test digits"


def test_bfv_result_is_exactly_the_fixed_point_score(model, servers, test_digits) -> None:
    """The integer simulation above is what BFV returns, to the last bit."""
    coef, intercept = model
    images, _ = test_digits
    weights, biases = quantised_model(coef, intercept)
    client = new_client("bfv")
    keys = keys_of(client.public_material(), "bfv-exact")
    for pixels in images[:5]:
        scores = score(client, servers["bfv"], pixels, keys)
        exact = (np.rint(pixels * 255).astype(np.int64) @ weights.T + biases) / (255 * 2.0**15)
        np.testing.assert_array_equal(scores, exact)


def test_bfv_noise_margin_holds_for_the_largest_inputs(servers) -> None:
    """All-white and all-black images, and a checkerboard: the result keeps a wide noise margin."""
    client = new_client("bfv")
    keys = keys_of(client.public_material(), "bfv-noise")
    server = servers["bfv"]
    for pixels in (np.ones(784), np.zeros(784), np.indices((28, 28)).sum(axis=0).ravel() % 2.0):
        evaluation = server.evaluate(keys, server.decode_ciphertexts(decoded(client.encrypt(pixels))))
        result = sa.Ciphertext()
        FILES.load(result, evaluation.results[0], client._context)
        assert client._decryptor.invariant_noise_budget(result) >= 6  # bits left; 0 would decrypt wrongly


# --- the bfv mask -------------------------------------------------------------------------------


def decrypt_all_coefficients(client, result_text: str) -> np.ndarray:
    """Every coefficient of a bfv result (a test-only look behind the client's decrypt)."""
    ciphertext = sa.Ciphertext()
    FILES.load(ciphertext, base64.b64decode(result_text), client._context)
    plaintext = sa.Plaintext()
    client._decryptor.decrypt(ciphertext, plaintext)
    return np.array([plaintext.data(i) if i < plaintext.coeff_count() else 0 for i in range(4096)], dtype=np.int64)


def leaked_weights(coefficients: np.ndarray, model, pixel: int) -> int:
    """How many weights of the model sit in the result's coefficients for a unit query at ``pixel``."""
    coef, intercept = model
    weights, biases = quantised_model(coef, intercept)
    half_weights = weight_polynomials(weights, biases)[pixel // 392]
    # x = X^(pixel mod 392) in that half, so the product is P shifted by that much (negacyclic).
    shift = pixel % 392
    expected = np.concatenate([-half_weights[4096 - shift :], half_weights[: 4096 - shift]]) % 2**32
    nonzero = (expected != 0) & ~np.isin(np.arange(4096), OUTPUT_COEFFICIENTS)
    return int((coefficients[nonzero] == expected[nonzero]).sum())


def unit_query(client, pixel: int) -> list[str]:
    """A crafted query: the plaintext with a single 1 (no bias term), what a malicious client sends."""
    texts = []
    for half in range(2):
        coefficients = np.zeros(393, dtype=np.uint64)
        if pixel // 392 == half:
            coefficients[pixel % 392] = 1
        plaintext = plaintext_from_coefficients(coefficients, client._context)
        texts.append(base64.b64encode(FILES.to_bytes(client._encryptor.encrypt_symmetric(plaintext))).decode())
    return texts


def test_bfv_unit_vector_query_reveals_no_weight(model) -> None:
    coef, intercept = model
    client = new_client("bfv")
    keys = keys_of(client.public_material(), "bfv-mask")
    unmasked = BfvScheme(coef, intercept, CACHE, mask_result=False)
    masked = BfvScheme(coef, intercept, CACHE)
    pixel = 200  # a central pixel: its weights are far from zero
    query = unit_query(client, pixel)

    def coefficients(server) -> np.ndarray:
        evaluation = server.evaluate(keys, server.decode_ciphertexts(decoded(query)))
        return decrypt_all_coefficients(client, server.encode_results(evaluation.results)[0])

    # Without the mask the attack works: thousands of weights sit in the product's coefficients.
    assert leaked_weights(coefficients(unmasked), model, pixel) > 3000
    # With it, only chance matches of a uniform value mod 2^32 remain (expected: 0).
    with_mask = coefficients(masked)
    assert leaked_weights(with_mask, model, pixel) <= 2
    others = np.delete(with_mask, OUTPUT_COEFFICIENTS)
    assert len(np.unique(others)) > 4000 and abs(others.mean() / 2**31 - 1) < 0.05  # uniform-looking
    # ... and the outputs are still right: a unit query legitimately returns w[c, pixel] (no bias sent).
    weights, _ = quantised_model(coef, intercept)
    assert (with_mask[OUTPUT_COEFFICIENTS] == weights[:, pixel] % 2**32).all()


# --- the ckks mask ------------------------------------------------------------------------------


def result_slots(client, server, keys, pixels: np.ndarray) -> np.ndarray:
    """Every slot of a CKKS result, not just the scores (a test-only look behind the client's decrypt)."""
    evaluation = server.evaluate(keys, server.decode_ciphertexts(decoded(client.encrypt(pixels))))
    ciphertext = sa.Ciphertext()
    FILES.load(ciphertext, base64.b64decode(server.encode_results(evaluation.results)[0]), client._context)
    plaintext = sa.Plaintext()
    client._decryptor.decrypt(ciphertext, plaintext)
    return np.asarray(client._encoder.decode_double(plaintext))


def weights_read(slots: np.ndarray, weights: np.ndarray) -> int:
    """How many non-output slots hold one of ``weights`` (to 1e-3): what a crafted query reads."""
    others = np.delete(slots, list(CKKS_OUTPUT_SLOTS))
    return sum(int(np.sum(np.abs(others - weight) < 1e-3)) for weight in weights if abs(weight) > 1e-3)


def test_ckks_unit_vector_query_reveals_no_weight(model) -> None:
    coef, intercept = model
    client = new_client("ckks")
    keys = keys_of(client.public_material(), "ckks-mask")
    pixel = 300  # a central pixel: its weights are far from zero
    query = np.zeros(784)
    query[pixel] = 1.0
    weights = coef[:, pixel]

    # Without the mask the attack works: over a thousand slots are this pixel's weights.
    assert weights_read(result_slots(client, CkksScheme(coef, intercept, CACHE, mask_result=False), keys, query),
                        weights) > 1000  # fmt: skip
    # With it, none: every other slot is fresh noise, different in each answer.
    masked = CkksScheme(coef, intercept, CACHE)
    first, second = (result_slots(client, masked, keys, query) for _ in range(2))
    assert weights_read(first, weights) <= 2
    others = np.delete(first, list(CKKS_OUTPUT_SLOTS))
    # noise in +-512 on top of a partial sum (here a weight, below 1 in size): uniform-looking
    assert np.abs(others).max() <= 512 + 2 and np.abs(others).mean() > 200
    assert np.abs(others - np.delete(second, list(CKKS_OUTPUT_SLOTS))).min() > 1e-6
    # ... and the outputs are still right: a unit query legitimately returns w[c, pixel] + b[c].
    assert np.max(np.abs(first[list(CKKS_OUTPUT_SLOTS)] - (weights + intercept))) < 1e-3
    assert np.max(np.abs(score(client, masked, np.eye(784)[pixel], keys) - (weights + intercept))) < 1e-3


def test_bfv_result_is_rerandomised_so_c1_does_not_give_away_the_weights(model) -> None:
    """Unmasked, the result's second polynomial is c1 * P, which the client could divide out."""
    coef, intercept = model
    client = new_client("bfv")
    keys = keys_of(client.public_material(), "bfv-c1")
    query = client.encrypt(np.random.default_rng(5).random(784))
    context = client._context

    def second_polynomial(server) -> bytes:
        evaluation = server.evaluate(keys, server.decode_ciphertexts(decoded(query)))
        result = sa.Ciphertext()
        load_object(result, evaluation.results[0], context, "result")
        values = result.dyn_array()  # polynomial 1 (c1) starts after 4096 coefficients x 2 primes
        return np.array([values.at(4096 * 2 + i) for i in range(64)], dtype=np.uint64).tobytes()

    unmasked = BfvScheme(coef, intercept, CACHE, mask_result=False)
    masked = BfvScheme(coef, intercept, CACHE)
    assert second_polynomial(unmasked) == second_polynomial(unmasked)  # deterministic: c1 * P
    assert second_polynomial(masked) != second_polynomial(unmasked)
    assert second_polynomial(masked) != second_polynomial(masked)  # fresh randomness every time


# --- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ckks", "bfv", "network"])
def test_malformed_ciphertexts_are_refused_not_crashed(name: str, servers) -> None:
    server = servers[name]
    client = new_client(name)
    good = client.encrypt(np.zeros(784))
    raw = base64.b64decode(good[0])
    rng = np.random.default_rng(7)
    variants = {
        "truncated": raw[: len(raw) // 2],
        "random": rng.bytes(len(raw)),
        "header only": raw[:16],
        "size lies": raw[:8] + (len(raw) * 4).to_bytes(8, "little") + raw[16:],
    }
    for flip in range(20):  # bit flips in the body
        damaged = bytearray(raw)
        damaged[int(rng.integers(16, len(raw)))] ^= 1 << int(rng.integers(8))
        variants[f"bit flip {flip}"] = bytes(damaged)
    other = new_client("ckks" if name == "bfv" else "bfv").encrypt(np.zeros(784))
    variants["other scheme's ciphertext"] = base64.b64decode(other[0])
    refused = set()
    for label, data in variants.items():
        texts = list(good)
        texts[0] = base64.b64encode(data).decode()
        try:
            server.decode_ciphertexts(decoded(texts))  # never a crash: refused, or a valid ciphertext of garbage
        except RequestRejected as error:
            assert error.status in (400, 422), label
            refused.add(label)
    assert {"truncated", "random", "header only", "size lies", "other scheme's ciphertext"} <= refused
    with pytest.raises(RequestRejected, match="takes"):
        server.decode_ciphertexts(decoded(good + good))


@pytest.mark.parametrize("name", ["ckks", "bfv", "network"])
def test_foreign_or_broken_public_material_is_refused(name: str, servers) -> None:
    server = servers[name]
    client = new_client(name)
    ciphertexts = server.decode_ciphertexts(decoded(client.encrypt(np.zeros(784))))
    other = new_client("bfv" if name == "ckks" else "ckks").public_material()
    for label, blob in {"other scheme's keys": other, "junk": b"\x5e\xa1" + bytes(200),
                        "truncated": client.public_material()[:1000]}.items():
        with pytest.raises(RequestRejected) as caught:
            server.evaluate(keys_of(blob, f"{name}-{label}"), ciphertexts)
        assert (caught.value.status, caught.value.code) == (422, "key_invalid"), label


def test_ckks_keys_without_a_needed_rotation_are_refused(servers) -> None:
    client = new_client("ckks")
    keygen_context = client._context
    keygen = sa.KeyGenerator(keygen_context)
    partial = FILES.to_bytes(keygen.create_galois_keys([galois_element(1, 4096)]))
    server = servers["ckks"]
    with pytest.raises(RequestRejected, match="lack the rotation"):
        server.evaluate(keys_of(partial, "partial"), server.decode_ciphertexts(decoded(client.encrypt(np.zeros(784)))))


@pytest.mark.parametrize("name", ["ckks", "bfv", "network"])
def test_client_refuses_malformed_results(name: str) -> None:
    client = new_client(name)
    with pytest.raises(InvalidInput):
        client.decrypt(["AAAA"])
    with pytest.raises(InvalidInput):
        client.decrypt([])
    with pytest.raises(InvalidInput):
        client.decrypt([client.encrypt(np.zeros(784))[0]] * 2)
    with pytest.raises(InvalidInput):  # a request ciphertext is not a result of this scheme
        client.decrypt([base64.b64encode(b"\x5e\xa1\x10\x04" + bytes(60)).decode()])


# --- the service refuses an unknown scheme or other parameters, before touching storage ----------


@pytest.fixture(scope="module")
def scoring_service_in_process(model, network) -> Iterator[object]:
    from service.scoring import ScoringService

    coef, intercept = model
    service = ScoringService(coef, intercept, ServiceSettings.from_env(), network=network)
    yield service
    service.close()


def request_body(descriptor: dict, ciphertexts: list[str]) -> str:
    url = "http://127.0.0.1:10000/devstoreaccount1/public-keys/k?sp=r&se=2099-01-01T00%3A00%3A00Z&sig=x"
    return json.dumps({"contract": "encrypted-mnist/v1", "scheme": descriptor, "ciphertexts": ciphertexts,
                       "keys": {"url": url, "sha256": "0" * 64}})


@pytest.mark.parametrize("name", ["ei", "ckks", "bfv", "network"])
def test_service_refuses_mismatched_parameters(name: str, scoring_service_in_process) -> None:
    expected = descriptor(name)
    ciphertexts = ["XqE="]
    mismatches = {"version": {**expected, "version": "99"}}
    for key, value in expected["params"].items():
        changed = value + 1 if isinstance(value, int) else (value[:-1] if isinstance(value, list) else value + "x")
        mismatches[key] = {**expected, "params": {**expected["params"], key: changed}}
    mismatches["extra parameter"] = {**expected, "params": {**expected["params"], "extra": 1}}
    mismatches["extra field"] = {**expected, "extra": 1}
    for label, sent in mismatches.items():
        status, body = scoring_service_in_process.handle(request_body(sent, ciphertexts))
        assert (status, body["error"]) == (400, "scheme_mismatch"), label
        assert name in body["message"]
    status, body = scoring_service_in_process.handle(request_body({**expected, "name": "paillier"}, ciphertexts))
    assert (status, body["error"]) == (400, "unknown_scheme")
    assert "bfv" in body["message"] and "ckks" in body["message"]


# --- the network scheme: its layout, its agreement, its mask, its limits ----------------------------


def network_in_the_clear(weights: NetworkWeights, pixels: np.ndarray) -> np.ndarray:
    """The service's slot algorithm (service/schemes/network.py) run on plain numpy vectors."""
    p = NETWORK.params
    slots = np.where(slot_pixels(p) >= 0, pixels[np.maximum(slot_pixels(p), 0)], 0.0)

    def rotated(vector: np.ndarray, step: int) -> np.ndarray:
        return np.roll(vector, -step)

    diagonals = layer1_diagonals(weights.w1, p)
    acc = None
    for giant in range(p.giant_steps - 1, -1, -1):
        inner = sum(diagonals[giant * p.baby_steps + i] * rotated(slots, i) for i in range(p.baby_steps))
        acc = inner if acc is None else inner + rotated(acc, p.baby_steps)
    step = p.hidden_units
    while step < p.slot_count:  # the sum over the chunks
        acc, step = acc + rotated(acc, step), 2 * step
    acc = (acc + hidden_bias(weights.b1, p)) ** 2 * layer2_row_weights(weights.w2, p)
    step = 1
    while step < p.hidden_units:  # the sum inside each chunk
        acc, step = acc + rotated(acc, step), 2 * step
    return acc[list(p.output_slots)] + weights.b2


def test_network_layout_covers_every_weight_exactly_once() -> None:
    """Random weights and pixels: the layout's products and rotations give exactly the network's scores."""
    rng = np.random.default_rng(11)
    hidden = NETWORK.params.hidden_units
    weights = NetworkWeights(rng.normal(size=(hidden, 784)), rng.normal(size=hidden),
                             rng.normal(size=(10, hidden)), rng.normal(size=10))
    for _ in range(3):
        pixels = rng.random(784)
        np.testing.assert_allclose(network_in_the_clear(weights, pixels), weights.logits(pixels), rtol=1e-9)
    every_pixel = slot_pixels(NETWORK.params)
    assert sorted(set(every_pixel) - {-1}) == list(range(784))  # every pixel is sent, nothing else


@pytest.mark.slow
def test_network_agreement_on_1000_real_test_digits(network, servers, test_digits) -> None:
    images, labels = test_digits
    client = new_client("network")
    keys = keys_of(client.public_material(), "network")
    errors, agree, correct = [], 0, 0
    for pixels, label in zip(images[:1000], labels[:1000], strict=True):
        scores = score(client, servers["network"], pixels, keys)
        expected = network.logits(pixels)
        errors.append(float(np.abs(scores - expected).max()))
        agree += int(np.argmax(scores) == np.argmax(expected))
        correct += int(np.argmax(scores) == label)
    print(f"network: max |error| {max(errors):.2e} (median {np.median(errors):.2e}), argmax agreement "
          f"{agree}/1000, accuracy {correct / 1000:.3f}")
    assert agree >= 999  # the target: the encrypted argmax is the plaintext's on at least 99.9 %
    assert max(errors) <= TOLERANCE["network"]
    assert correct >= 970


def test_network_result_reveals_no_hidden_unit(network) -> None:
    """Unmasked, the slots after class 9's score hold its sum over units j..H-1, so the difference of
    two neighbours is one hidden unit's contribution w2[9, j] * h_j**2: the model, unit by unit."""
    client = new_client("network")
    keys = keys_of(client.public_material(), "network-mask")
    query = np.random.default_rng(3).random(784) * 0.3
    hidden = query @ network.w1.T + network.b1
    contributions = network.w2[9] * hidden**2  # what class 9's score adds up, unit by unit
    start, hidden = NETWORK_OUTPUT_SLOTS[9], network.hidden_units

    def units_read(slots: np.ndarray) -> int:
        differences = slots[start : start + hidden - 1] - slots[start + 1 : start + hidden]
        return int(np.sum(np.abs(differences - contributions[: hidden - 1]) < 0.05))

    unmasked = NetworkScheme(network, CACHE, mask_result=False)
    assert units_read(result_slots(client, unmasked, keys, query)) > 0.8 * hidden
    masked = NetworkScheme(network, CACHE)
    first, second = (result_slots(client, masked, keys, query) for _ in range(2))
    assert units_read(first) <= 5  # chance: a difference of two uniform masks within 0.05 of a value
    others = np.delete(first, list(NETWORK_OUTPUT_SLOTS))
    assert np.abs(others).mean() > MASK_BOUND / 4  # uniform in +-MASK_BOUND on top of partial sums
    assert np.abs(others - np.delete(second, list(NETWORK_OUTPUT_SLOTS))).min() > 1e-6  # fresh each time
    np.testing.assert_allclose(first[list(NETWORK_OUTPUT_SLOTS)], network.logits(query), atol=TOLERANCE["network"])


def test_network_scheme_refuses_a_model_that_would_overflow(network) -> None:
    """Scores of any input in [0, 1] must fit the moduli; a model ten times larger does not."""
    bigger = NetworkWeights(network.w1 * 10, network.b1 * 10, network.w2, network.b2)
    with pytest.raises(ValueError, match="worst case"):
        NetworkScheme(bigger, CACHE)
    narrower = NetworkWeights(network.w1[:64], network.b1[:64], network.w2[:, :64], network.b2)
    with pytest.raises(ValueError, match="hidden units"):
        NetworkScheme(narrower, CACHE)


def test_network_public_material_must_hold_both_keys_and_every_rotation(servers) -> None:
    client = new_client("network")
    server = servers["network"]
    ciphertexts = server.decode_ciphertexts(decoded(client.encrypt(np.zeros(784))))
    keygen = sa.KeyGenerator(client._context)
    some_rotations = FILES.to_bytes(keygen.create_galois_keys([galois_element(1, 8192)]))
    relin = FILES.to_bytes(keygen.create_relin_keys())
    galois_only = client.public_material()[: len(client.public_material()) - len(relin)]
    for label, blob, message in [
        ("Galois keys only", galois_only, "SEAL object 2 of 2"),
        ("a missing rotation", some_rotations + relin, "lack the rotation"),
        ("bytes after the keys", client.public_material() + b"x", "follow the 2 SEAL objects"),
        ("the keys the other way round", relin + galois_only, "lack the rotation|relinearisation|SEAL rejected"),
    ]:
        with pytest.raises(RequestRejected, match=message) as caught:
            server.evaluate(keys_of(blob, f"network-{label}"), ciphertexts)
        assert caught.value.code == "key_invalid", label


def test_network_client_refuses_a_result_at_the_wrong_level() -> None:
    client = new_client("network")
    with pytest.raises(InvalidInput, match="level"):  # its own request: the top level, not the last
        client.decrypt(client.encrypt(np.zeros(784)))
