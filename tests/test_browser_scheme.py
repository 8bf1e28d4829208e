"""The ``browser`` scheme across the two SEAL builds: node-seal (SEAL 4.1) in the tab, seal-python
(SEAL 4.4) in the service, and the one place a result's version is rewritten
(service/schemes/node_seal_result.py). Round trips run the tab's own JS client in Node."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import numpy as np
import pytest
import seal

from lib.errors import InvalidInput
from lib.settings import AppSettings
from lib.tab_mode import checked_ciphertext, checked_public_material, start_relay, tab_config
from service.errors import RequestRejected
from service.key_source import KeyReference
from service.schemes.browser import BrowserScheme, make_context
from service.schemes.network import NetworkScheme
from service.schemes.node_seal_result import for_node_seal
from service.shared.network_model import NetworkWeights, load_network
from service.shared.seal4 import FILES
from service.shared.seal_header import SealFormatError
from service.shared.specs import BROWSER, NETWORK
from tests.node_tab import NodeTab

CACHE = 1 << 30


@pytest.fixture(scope="module")
def network() -> NetworkWeights:
    return load_network()


@pytest.fixture(scope="module")
def server(network: NetworkWeights) -> BrowserScheme:
    return BrowserScheme(network, CACHE)


@pytest.fixture(scope="module")
def tab() -> Iterator[NodeTab]:
    node_tab = NodeTab()
    yield node_tab
    node_tab.close()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from lib.mnist_data import SHARED_TEST_SET, load_test_set

    try:
        images, labels = load_test_set(SHARED_TEST_SET)
    except FileNotFoundError:
        pytest.skip(f"the real MNIST test set is not at {SHARED_TEST_SET}")
    return images.reshape(len(images), -1).astype(np.float64), labels


def keys_of(tab: NodeTab) -> KeyReference:
    blob = checked_public_material(tab.public_material)
    return KeyReference(blob_url="http://test/tab", cache_key=("tab", tab.public_material[:64]), fetch=lambda: blob)


def served(server: BrowserScheme, tab: NodeTab, pixels: np.ndarray) -> str:
    """One request through the service's half, in process: the base64 result as the response holds it."""
    ciphertext = checked_ciphertext(tab.encrypt(pixels))
    evaluation = server.evaluate(keys_of(tab), server.decode_ciphertexts([base64.b64decode(ciphertext)]))
    return server.encode_results(evaluation.results)[0]


# --- the round trip, in process --------------------------------------------------------------------


def test_node_seal_round_trip_through_the_service_half(server, tab, digits, network) -> None:
    images, _ = digits
    for pixels in images[:12]:
        scores = tab.decrypt(served(server, tab, pixels))
        assert not isinstance(scores, str), scores
        expected = network.logits(pixels)
        assert int(np.argmax(scores)) == int(np.argmax(expected))
        assert np.abs(scores - expected).max() < 2e-2


def test_the_browser_scheme_is_the_network_with_another_library() -> None:
    assert BROWSER.params.library != NETWORK.params.library
    ours = {k: v for k, v in BROWSER.descriptor()["params"].items() if k != "library"}
    theirs = {k: v for k, v in NETWORK.descriptor()["params"].items() if k != "library"}
    assert ours == theirs
    assert BROWSER.mismatch(NETWORK.descriptor()) is not None


def test_the_tab_config_matches_what_the_service_produces(server) -> None:
    config = tab_config()
    assert config["result_scale"] == server.result_scale
    assert config["output_slots"] == list(BROWSER.params.output_slots)
    assert len(config["slot_pixels"]) == BROWSER.params.slot_count


# --- the one rewrite: SEAL 4.4 result -> SEAL 4.1 ------------------------------------------------------


@pytest.fixture(scope="module")
def result_44() -> bytes:
    """A SEAL 4.4 ciphertext at the network's last level, as seal-python writes a result."""
    context = make_context()
    keygen = seal.KeyGenerator(context)
    encoder, evaluator = seal.CKKSEncoder(context), seal.Evaluator(context)
    ciphertext = seal.Encryptor(context, keygen.secret_key()).encrypt_symmetric(encoder.encode(np.ones(4096), 2.0**40))
    evaluator.rescale_to_next_inplace(ciphertext)
    return bytes(ciphertext.to_string())


def test_the_rewrite_changes_exactly_the_two_minor_versions(result_44) -> None:
    rewritten = for_node_seal(result_44)
    changed = [i for i, (a, b) in enumerate(zip(result_44, rewritten, strict=True)) if a != b]
    assert len(rewritten) == len(result_44)
    assert changed == [4, 16 + 73 + 4]
    assert rewritten[4] == rewritten[16 + 73 + 4] == 1 and result_44[4] == 4


def _with(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:-8], "size does not match"),
        (lambda d: d + b"\0" * 8, "header says"),
        (lambda d: d[:40], "too short|size does not match"),
        (lambda d: _with(d, 4, b"\x01"), "written by SEAL 4.1, not 4.4"),
        (lambda d: _with(d, 4, b"\x03"), "written by SEAL 4.3"),
        (lambda d: _with(d, 3, b"\x03"), "written by SEAL 3.4"),
        (lambda d: _with(d, 5, b"\x02"), "compressed"),
        (lambda d: _with(d, 16 + 73 + 5, b"\x02"), "coefficients: compressed"),
        (lambda d: _with(d, 16 + 73 + 4, b"\x01"), "coefficients: written by SEAL 4.1"),
        (lambda d: _with(d, 16 + 32, b"\x07"), "not a ciphertext's fields"),
        (lambda d: _with(d, 16 + 33, struct.pack("<Q", 3)), "count does not match"),
        (lambda d: _with(d, 16 + 41, struct.pack("<Q", 4096)), "count does not match"),
        (lambda d: _with(d, 16 + 41, struct.pack("<Q", 1000)), "degree and scale"),
        (lambda d: _with(d, 16 + 57, struct.pack("<d", float("nan"))), "degree and scale"),
        (lambda d: _with(d, 0, b"\xbe\xef"), "bad header"),
    ],
)
def test_the_rewrite_refuses_anything_but_a_seal_44_ciphertext(result_44, mutate, message) -> None:
    with pytest.raises(SealFormatError, match=message):
        for_node_seal(mutate(result_44))


def test_the_rewrite_refuses_tenseals_43_and_compressed_objects(network) -> None:
    from tenseal import sealapi as sa

    scheme = NetworkScheme(network, CACHE)
    plaintext = sa.Plaintext()
    sa.CKKSEncoder(scheme.context).encode([1.0] * 8, scheme.context.first_parms_id(), 2.0**20, plaintext)
    keygen = sa.KeyGenerator(scheme.context)
    zstd_43 = FILES.to_bytes(sa.Encryptor(scheme.context, keygen.secret_key()).encrypt_symmetric(plaintext))
    with pytest.raises(SealFormatError, match=r"SEAL 4\.3|compressed"):
        for_node_seal(zstd_43)


# --- what the service refuses of a tab's request ----------------------------------------------------


def test_the_service_half_refuses_a_network_ciphertext_and_compressed_keys(server, network) -> None:
    from lib.schemes.network import NetworkClient

    client = NetworkClient()  # tenseal: SEAL 4.3, zstd-compressed
    ciphertext = base64.b64decode(client.encrypt(np.zeros(784))[0])
    with pytest.raises(RequestRejected, match="compressed"):
        server.decode_ciphertexts([ciphertext])
    keys = KeyReference(blob_url="http://test/n", cache_key=("n", "1"), fetch=client.public_material)
    with pytest.raises(RequestRejected, match="compressed"):
        server.evaluate(keys, [])


def test_the_service_half_refuses_a_wrong_scale_and_missing_rotations(server, tab) -> None:
    config = dict(tab_config(), input_scale_bits=30)
    other = NodeTab(config)
    try:
        with pytest.raises(RequestRejected, match="scale"):
            server.decode_ciphertexts([base64.b64decode(other.encrypt(np.zeros(784)))])
    finally:
        other.close()
    few = NodeTab(dict(tab_config(), galois_steps=[1, 2, 4]))
    try:
        with pytest.raises(RequestRejected, match=r"lack the rotation\(s\) \[8, 16"):
            server.evaluate(keys_of(few), [])
    finally:
        few.close()


# --- what the tab refuses of a result ---------------------------------------------------------------


def test_the_tab_refuses_bad_results_with_a_clear_message(server, tab, digits) -> None:
    images, _ = digits
    good = base64.b64decode(served(server, tab, images[0]))

    def refusal(data: bytes) -> str:
        answer = tab.decrypt(base64.b64encode(data).decode())
        assert isinstance(answer, str), "the tab accepted a bad result"
        return answer

    assert "written by SEAL 4.4" in refusal(_with(good, 4, b"\x04"))  # not rewritten: node-seal's own refusal
    assert "compressed" in refusal(_with(good, 5, b"\x01"))
    assert "header does not match" in refusal(good[:-8])
    assert "SEAL rejected" in refusal(_with(good, len(good) - 8, b"\xff" * 8))  # a coefficient above its prime
    assert "at most" in refusal(good + good)
    assert "scale" in refusal(_with(good, 16 + 57, struct.pack("<d", 2.0**40)))
    other = NodeTab()
    try:  # a genuine result, but for another tab's key: decrypts to noise the model cannot produce
        assert "cannot produce" in refusal(base64.b64decode(served(server, other, images[0])))
    finally:
        other.close()


# --- what this process refuses of the tab's messages ------------------------------------------------


def test_the_relay_refuses_malformed_input_from_the_tab(tab) -> None:
    good_keys, good_ct = tab.public_material, tab.encrypt(np.zeros(784))
    assert checked_ciphertext(good_ct) == good_ct
    keys = base64.b64decode(good_keys)
    for bad, message in [
        (None, "no public keys"),
        ("", "no public keys"),
        ("not base64!", "not valid base64"),
        (base64.b64encode(keys[:-1]).decode(), "not what this scheme uploads"),
        (base64.b64encode(keys + b"x").decode(), "not what this scheme uploads"),
        (base64.b64encode(_with(keys, 4, b"\x03")).decode(), "not written by node-seal"),
        ("A" * (12 * 1024 * 1024), "larger than"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            checked_public_material(bad)
    ct = base64.b64decode(good_ct)
    for bad, message in [
        (42, "no ciphertext"),
        (base64.b64encode(ct[:-3]).decode(), "not a SEAL object"),
        (base64.b64encode(_with(ct, 5, b"\x02")).decode(), "not written by node-seal"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            checked_ciphertext(bad)


# --- node-seal -> the real service over HTTP -> node-seal, on 1,000 real test digits ---------------------


@pytest.mark.slow
def test_a_thousand_real_digits_round_trip_through_the_real_service(app_env, digits, network) -> None:
    """The tab's JS client in Node, the app's relay (upload to Azurite, read-only SAS, the contract) and the
    real scoring service: argmax agrees with the plaintext network on at least 999 of 1,000 real digits."""
    images, _ = digits
    settings = AppSettings(blob_connection_string=app_env["BLOB_CONNECTION_STRING"],
                           scoring_url=app_env["SCORING_URL"], blob_container="tab-tests")  # fmt: skip
    node_tab = NodeTab()
    agree, worst = 0, 0.0
    try:
        with start_relay(settings, checked_public_material(node_tab.public_material)) as relay:
            for pixels in images[:1000]:
                (result,) = relay.relay([checked_ciphertext(node_tab.encrypt(pixels))]).results
                scores = node_tab.decrypt(result)
                assert not isinstance(scores, str), scores
                expected = network.logits(pixels)
                agree += int(np.argmax(scores) == np.argmax(expected))
                worst = max(worst, float(np.abs(scores - expected).max()))
    finally:
        node_tab.close()
    print(f"browser scheme over HTTP: argmax agreement {agree}/1000, max score error {worst:.1e}")
    assert agree >= 999
    assert worst < 5e-2
