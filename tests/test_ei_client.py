"""EiClient: the fast paths equal the package's own, inputs are checked, the secret stays inside.

Keys are made once per session (about 1 s) and results come from the package's own
``EIServer.predict`` on a 2-class model (about 2.4 s per class), so the fast decrypt is compared
against real server output, not against values we made up.
"""

from __future__ import annotations

import base64
import copy
import json
import pickle
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from encrypted.inference.eiserver import EIServer
from encrypted.inference.internal import einative

from lib.errors import InvalidInput
from lib.schemes import descriptor
from lib.schemes.ei import EiClient

pytestmark = pytest.mark.slow  # the seed's ei scheme: seconds per test

HEADER = struct.Struct("<HBBBBHQ")
MEMBERS = struct.Struct("<32sBQQQd")


@pytest.fixture(scope="session")
def ei() -> EiClient:
    return EiClient()


@pytest.fixture(scope="session")
def model() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    return rng.normal(scale=0.5, size=(2, 784)), rng.normal(size=2)


@pytest.fixture(scope="session")
def pixels() -> np.ndarray:
    return np.random.default_rng(99).random(784)


@pytest.fixture(scope="session")
def results(ei: EiClient, model: tuple[np.ndarray, np.ndarray], pixels: np.ndarray) -> list[str]:
    coef, intercept = model
    return EIServer(coef, intercept).predict(ei.encrypt(pixels), ei.public_material())


def secret_forms(ei: EiClient) -> list[bytes]:
    """The secret key as raw bytes, base64 text and hex text (read here only to look for it)."""
    b64 = ei._client.secret_key()
    raw = base64.b64decode(b64)
    assert len(raw) == 64
    return [raw, b64.encode(), raw.hex().encode(), raw.hex().upper().encode()]


# --- descriptor and keys -------------------------------------------------------------------------


def test_descriptor_matches_package_parameters_and_contract(ei: EiClient) -> None:
    params = json.loads((Path(einative.__file__).with_name("parameters.json")).read_text())
    expected = {
        "name": "ei",
        "version": "0.9",
        "params": {"poly_modulus_degree": 8192, "coeff_modulus_bits": [60, 40, 40, 60], "scale_bits": 40},
    }
    assert ei.descriptor == expected == descriptor("ei")
    assert ei.descriptor["params"]["coeff_modulus_bits"] == params["CoeffModulus"]
    assert 2 ** ei.descriptor["params"]["scale_bits"] == params["InitialScale"]
    assert ei.scheme_id == "ei-0.9"
    ei.descriptor["params"]["scale_bits"] = 1  # a copy: callers cannot change the client's
    assert ei.descriptor["params"]["scale_bits"] == 40


def test_public_material_equals_package_and_is_cached(ei: EiClient) -> None:
    fast = ei.public_material()
    key_id, package = ei._client.get_public_keys()
    assert key_id == ei.key_id and len(ei.key_id) == 32
    assert fast == package
    assert ei.public_material() is fast
    assert fast[:2] == b"\x5e\xa1"  # a SEAL object
    for form in secret_forms(ei):
        assert form not in fast


def test_two_clients_have_different_keys(ei: EiClient) -> None:
    assert EiClient().key_id != ei.key_id


# --- encrypt -------------------------------------------------------------------------------------


def test_encrypt_gives_one_base64_ciphertext(ei: EiClient, pixels: np.ndarray) -> None:
    ciphertexts = ei.encrypt(pixels)
    assert len(ciphertexts) == 1
    raw = base64.b64decode(ciphertexts[0], validate=True)
    assert raw[:2] == b"\x5e\xa1" and 100_000 < len(raw) < 400_000
    assert ei.encrypt(pixels) != ciphertexts  # encryption is randomised


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros(783), "shape"),
        (np.zeros((28, 28)), "shape"),
        (np.full(784, np.nan), "NaN"),
        (np.full(784, np.inf), "NaN"),
        (np.full(784, 1.5), r"\[0, 1\]"),
        (np.full(784, -0.1), r"\[0, 1\]"),
        (["a"] * 784, "numbers"),
    ],
)
def test_encrypt_rejects_bad_input(ei: EiClient, bad: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        ei.encrypt(bad)  # type: ignore[arg-type]


# --- decrypt -------------------------------------------------------------------------------------


def test_fast_decrypt_equals_package_decrypt(
    ei: EiClient, results: list[str], model: tuple[np.ndarray, np.ndarray], pixels: np.ndarray
) -> None:
    fast = ei.decrypt(results)
    package = ei._client.decrypt(results)
    assert fast.shape == (2,) and fast.dtype == np.float64
    np.testing.assert_allclose(fast, package, rtol=0, atol=1e-9)
    coef, intercept = model
    np.testing.assert_allclose(fast, coef @ pixels + intercept, atol=1e-4)


def test_fast_decrypt_is_faster(ei: EiClient, results: list[str]) -> None:
    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    ei.decrypt(results)  # warm the one-time layout probe
    fast, package = best(lambda: ei.decrypt(results)), best(lambda: ei._client.decrypt(results))
    assert fast < package / 2, (fast, package)


def _split(raw: bytes) -> tuple[tuple, bytes]:
    header = HEADER.unpack_from(raw)
    assert header[4] == 1, "the package writes zlib-compressed ciphertexts"
    return header, zlib.decompress(raw[HEADER.size :])


def _pack(header: tuple, body: bytes, compress: bool = True) -> str:
    magic, hsize, major, minor, _, reserved, _ = header
    payload = zlib.compress(body) if compress else body
    raw = HEADER.pack(magic, hsize, major, minor, 1 if compress else 0, reserved, HEADER.size + len(payload))
    return base64.b64encode(raw + payload).decode()


def _with_members(body: bytes, **changes: object) -> bytes:
    names = ("parms_id", "is_ntt", "size", "n", "n_moduli", "scale")
    values = dict(zip(names, MEMBERS.unpack_from(body), strict=True))
    values.update(changes)
    return MEMBERS.pack(*(values[n] for n in names)) + body[MEMBERS.size :]


def test_uncompressed_result_decrypts_the_same(ei: EiClient, results: list[str]) -> None:
    header, body = _split(base64.b64decode(results[0]))
    assert ei.decrypt([_pack(header, body, compress=False)])[0] == ei.decrypt(results[:1])[0]


def _mutations(raw: bytes) -> dict[str, str]:
    """Malformed variants of a real result; SEAL would abort the process on most of them."""
    header, body = _split(raw)
    b64 = lambda data: base64.b64encode(data).decode()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    coeff_at = MEMBERS.size + HEADER.size + 8 + 8 * 100
    big_coeff = body[:coeff_at] + b"\xff" * 8 + body[coeff_at + 8 :]
    wrong_id = bytes([body[0] ^ 1]) + body[1:]
    newer = HEADER.pack(header[0], header[1], header[2], header[3] + 1, *header[4:]) + raw[HEADER.size :]
    zstd = HEADER.pack(*header[:4], 2, *header[5:]) + raw[HEADER.size :]
    inner_count = (
        body[: MEMBERS.size + HEADER.size] + struct.pack("<Q", 5) + body[MEMBERS.size + HEADER.size + 8 :]
    )
    return {
        "zeros": b64(bytes(1000)),
        "flipped compressed byte": b64(bytes(flipped)),
        "truncated": b64(raw[: len(raw) // 2]),
        "trailing bytes": b64(raw + b"\x00"),
        "bad magic": b64(b"\x00\x00" + raw[2:]),
        "newer SEAL version": b64(newer),
        "zstd mode": b64(zstd),
        "coefficient above its prime": _pack(header, big_coeff),
        "other parameters": _pack(header, wrong_id),
        "not NTT": _pack(header, _with_members(body, is_ntt=0)),
        "three polynomials": _pack(header, _with_members(body, size=3)),
        "wrong degree": _pack(header, _with_members(body, n=4096)),
        "wrong modulus count": _pack(header, _with_members(body, n_moduli=3)),
        "infinite scale": _pack(header, _with_members(body, scale=float("inf"))),
        "huge scale": _pack(header, _with_members(body, scale=2.0**120)),
        "bad coefficient count": _pack(header, inner_count),
        "short body": _pack(header, body[:100]),
        "zlib bomb": _pack(header, body + bytes(10_000_000)),
    }


MUTATIONS = (
    "zeros",
    "flipped compressed byte",
    "truncated",
    "trailing bytes",
    "bad magic",
    "newer SEAL version",
    "zstd mode",
    "coefficient above its prime",
    "other parameters",
    "not NTT",
    "three polynomials",
    "wrong degree",
    "wrong modulus count",
    "infinite scale",
    "huge scale",
    "bad coefficient count",
    "short body",
    "zlib bomb",
)


def test_mutation_list_is_complete(results: list[str]) -> None:
    assert set(_mutations(base64.b64decode(results[0]))) == set(MUTATIONS)


@pytest.mark.parametrize("case", MUTATIONS)
def test_malformed_result_raises_instead_of_aborting(ei: EiClient, results: list[str], case: str) -> None:
    # If a check were missing, native SEAL would abort this whole test process.
    text = _mutations(base64.b64decode(results[0]))[case]
    with pytest.raises(InvalidInput, match="not valid"):
        ei.decrypt([results[1], text])


def test_input_ciphertext_echoed_back_is_rejected(ei: EiClient, pixels: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="not valid"):
        ei.decrypt(ei.encrypt(pixels))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("abc", "list"),
        (b"abc", "list"),
        ([], "expected 1-"),
        (["x"] * 65, "expected 1-"),
        ([123], "not a string"),
        (["not base64!!"], "base64"),
        (["A" * (4 * 1024 * 1024 + 4)], "larger"),
    ],
)
def test_decrypt_rejects_bad_containers(ei: EiClient, bad: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        ei.decrypt(bad)  # type: ignore[arg-type]


def test_package_decrypt_aborts_on_garbage() -> None:
    """Why the checks exist: the package's own decrypt kills the process on malformed bytes."""
    code = (
        "import base64\n"
        "from encrypted.inference.eiclient import EILinearRegressionClient\n"
        "EILinearRegressionClient().decrypt([base64.b64encode(bytes(1000)).decode()])\n"
        "print('survived')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert child.returncode != 0 and "survived" not in child.stdout


# --- the secret stays inside ---------------------------------------------------------------------


def test_repr_and_str_show_only_the_key_id(ei: EiClient) -> None:
    for text in (repr(ei), str(ei), f"{ei}"):
        assert text == f"EiClient(key_id={ei.key_id!r})"
        for form in secret_forms(ei):
            assert form.decode("latin-1") not in text


def test_client_cannot_be_pickled_or_copied(ei: EiClient) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(ei)
    with pytest.raises(TypeError):
        copy.deepcopy(ei)


def test_no_secret_in_public_outputs(ei: EiClient, pixels: np.ndarray, results: list[str]) -> None:
    outputs = [
        json.dumps(ei.descriptor).encode(),
        ei.key_id.encode(),
        *(base64.b64decode(c) for c in ei.encrypt(pixels)),
        *(c.encode() for c in ei.encrypt(pixels)),
    ]
    for form in secret_forms(ei):
        for output in outputs:
            assert form not in output
