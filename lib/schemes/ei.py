"""The client half of the ``ei`` scheme (encrypted-inference 0.9: Microsoft SEAL 3.5, CKKS).

Roles: ``EiClient`` makes the key pair (``keygen`` happens in the constructor), hands out
``public_material()`` as bytes, ``encrypt``s a 784-pixel vector and ``decrypt``s the service's
per-class result ciphertexts. The secret key stays inside the native SEAL object of this process:
no method returns it, ``repr`` shows only the key id, and the object refuses to be pickled.

Two fast paths replace the package's Python loops over every byte (same native functions, same
results): public keys via ``GetPublicKeys`` + ``ctypes.string_at`` (about 1.8 s -> 0.9 s) and
decryption via ``DecryptResult`` on a buffer made with ``from_buffer_copy`` (0.6 s -> tens of ms).

Why decrypt checks so much first: SEAL 3.5 inside ``libeisdk.so`` throws C++ exceptions that
nothing catches, so one malformed result ciphertext *aborts the whole process* (here: the
Streamlit server). ``_check_result`` therefore re-does in Python every check SEAL makes when it
loads a ciphertext (header, zlib stream, parameter id, metadata, sizes, every coefficient below
its prime), and hands the native code only the uncompressed bytes it has checked. The primes and
parameter ids are derived from the package's ``parameters.json`` exactly as SEAL derives them,
and checked once against a real ciphertext, so they cannot drift from the installed library.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ctypes
import hashlib
import json
import math
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from encrypted.inference.eiclient import EILinearRegressionClient
from encrypted.inference.internal import _version, einative

from lib.errors import InvalidInput

__all__ = ["MAX_RESULTS", "EiClient", "ei_descriptor"]

SCHEME_NAME = "ei"
N_FEATURES = 784
MAX_RESULTS = 64  # a result per class; MNIST has 10
_MAX_RESULT_B64_CHARS = 4 * 1024 * 1024  # a real result is about 0.3 MB of base64

_PARAMETERS_PATH = Path(einative.__file__).with_name("parameters.json")
_HEADER = struct.Struct("<HBBBBHQ")  # SEAL header: magic, header size, major, minor, compression, 0, size
_SEAL_MAGIC = 0xA15E
_COMPR_NONE, _COMPR_ZLIB = 0, 1
_CKKS_SCHEME_ID = 2  # seal::scheme_type::CKKS in SEAL 3.x
# Ciphertext members after the header: parms_id (4 x u64), is_ntt_form (u8), size, N, #moduli (u64), scale (f64)
_MEMBERS = struct.Struct("<32sBQQQd")


def _parameters() -> dict[str, Any]:
    with _PARAMETERS_PATH.open(encoding="utf-8") as fh:
        return json.load(fh)


def ei_descriptor() -> dict[str, Any]:
    """The contract's scheme descriptor, read from the installed package so it cannot drift."""
    params = _parameters()
    scale = float(params["InitialScale"])
    scale_bits = round(math.log2(scale))
    if 2.0**scale_bits != scale:
        raise RuntimeError(f"encrypted-inference InitialScale {scale} is not a power of two")
    return {
        "name": SCHEME_NAME,
        "version": _version.__version__,
        "params": {
            "poly_modulus_degree": int(params["PolyModulusDegree"]),
            "coeff_modulus_bits": [int(b) for b in params["CoeffModulus"]],
            "scale_bits": scale_bits,
        },
    }


# --- what SEAL accepts as a result ciphertext -------------------------------------------------


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin, exact for every 64-bit integer."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in bases:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        y = pow(a, d, n)
        if y in (1, n - 1):
            continue
        for _ in range(s - 1):
            y = y * y % n
            if y == n - 1:
                break
        else:
            return False
    return True


def _seal_coeff_modulus(poly_modulus_degree: int, bit_sizes: Sequence[int]) -> list[int]:
    """SEAL's ``CoeffModulus::Create``: for each bit size, the largest primes = 1 mod 2N,
    found counting down; each use of a bit size takes the smallest one still unused."""
    factor = 2 * poly_modulus_degree
    pools: dict[int, list[int]] = {}
    for bits, count in Counter(bit_sizes).items():
        primes: list[int] = []
        value = (1 << bits) - factor + 1
        while len(primes) < count:
            if value <= factor:
                raise RuntimeError(f"no {bits}-bit NTT prime for N={poly_modulus_degree}")
            if _is_prime(value):
                primes.append(value)
            value -= factor
        pools[bits] = primes
    return [pools[bits].pop() for bits in bit_sizes]


def _seal_parms_id(poly_modulus_degree: int, moduli: Sequence[int]) -> bytes:
    """SEAL 3.5's parameter id: BLAKE2b-256 of (scheme, N, moduli..., plain modulus 0) as u64."""
    words = [_CKKS_SCHEME_ID, poly_modulus_degree, *moduli, 0]
    return hashlib.blake2b(struct.pack(f"<{len(words)}Q", *words), digest_size=32).digest()


@dataclass(frozen=True)
class _Layout:
    """What a valid ciphertext of this library and these parameters looks like."""

    version: tuple[int, int]
    poly_modulus_degree: int
    moduli: tuple[int, ...]
    levels: dict[bytes, int]  # parms_id -> number of primes at that (data) level

    def max_body_bytes(self) -> int:
        top = max(self.levels.values())
        return _MEMBERS.size + _HEADER.size + 8 + 8 * 2 * top * self.poly_modulus_degree


_NOT_VALID = "A result ciphertext from the service is not valid"
_layout_lock = threading.Lock()
_layout: _Layout | None = None


def _inflate(data: bytes, limit: int) -> bytes:
    """Inflate a complete zlib stream of at most ``limit`` bytes, or raise InvalidInput."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise InvalidInput(f"{_NOT_VALID}: its compressed data does not inflate.") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise InvalidInput(f"{_NOT_VALID}: it inflates to more than a ciphertext can hold.")
    if not inflater.eof or inflater.unused_data:
        raise InvalidInput(f"{_NOT_VALID}: it is truncated or has bytes after its end.")
    return out


def _check_result(raw: bytes, layout: _Layout) -> bytes:
    """Check ``raw`` as SEAL would and return it re-serialised without compression."""

    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"{_NOT_VALID}: {why}.")

    if len(raw) < _HEADER.size:
        raise bad("too short")
    magic, header_size, major, minor, compr, reserved, size = _HEADER.unpack_from(raw)
    if magic != _SEAL_MAGIC or header_size != _HEADER.size or reserved != 0:
        raise bad("not a serialized SEAL object")
    if (major, minor) != layout.version:
        raise bad(f"SEAL version {major}.{minor}, expected {layout.version[0]}.{layout.version[1]}")
    if size != len(raw):
        raise bad(f"declared size {size} but {len(raw)} bytes")
    limit = layout.max_body_bytes()
    if compr == _COMPR_ZLIB:
        body = _inflate(raw[_HEADER.size :], limit)
    elif compr == _COMPR_NONE:
        body = raw[_HEADER.size :]
        if len(body) > limit:
            raise bad("larger than a ciphertext can be")
    else:
        raise bad(f"unsupported compression mode {compr}")
    if len(body) < _MEMBERS.size + _HEADER.size + 8:
        raise bad("too short")
    parms_id, is_ntt, poly_count, n, n_moduli, scale = _MEMBERS.unpack_from(body)
    level = layout.levels.get(parms_id)
    if level is None:
        raise bad("made with other encryption parameters")
    if is_ntt != 1:
        raise bad("not in NTT form")
    if poly_count != 2:
        raise bad(f"{poly_count} polynomials, expected 2")
    if n != layout.poly_modulus_degree or n_moduli != level:
        raise bad("metadata does not match its parameters")
    level_bits = sum(m.bit_length() for m in layout.moduli[:level])
    if not (math.isfinite(scale) and scale > 0 and int(math.log2(scale)) < level_bits):
        raise bad("scale out of range")
    data = body[_MEMBERS.size :]
    d_magic, d_header_size, d_major, d_minor, d_compr, d_reserved, d_size = _HEADER.unpack_from(data)
    count = 2 * level * n
    if (
        d_magic != _SEAL_MAGIC
        or d_header_size != _HEADER.size
        or (d_major, d_minor) != layout.version
        or d_compr != _COMPR_NONE
        or d_reserved != 0
        or d_size != len(data)
        or struct.unpack_from("<Q", data, _HEADER.size)[0] != count
        or len(data) != _HEADER.size + 8 + 8 * count
    ):
        raise bad("its coefficient array is malformed")
    coeffs = np.frombuffer(data, dtype="<u8", offset=_HEADER.size + 8).reshape(2, level, n)
    moduli = np.array(layout.moduli[:level], dtype=np.uint64).reshape(1, level, 1)
    if not bool((coeffs < moduli).all()):
        raise bad("a coefficient is not reduced modulo its prime")
    return (
        _HEADER.pack(_SEAL_MAGIC, _HEADER.size, major, minor, _COMPR_NONE, 0, _HEADER.size + len(body)) + body
    )


# --- the client ----------------------------------------------------------------------------------


class EiClient:
    """Key owner for one app session: keygen, public_material, encrypt, decrypt."""

    name = SCHEME_NAME
    result_count = 10  # one result ciphertext per class

    def __init__(self, n_features: int = N_FEATURES) -> None:
        # verbose stays False: the package prints the secret key when verbose.
        self._client = EILinearRegressionClient(verbose=False)
        self._n_features = n_features
        self._public: bytes | None = None
        self._lock = threading.Lock()  # one native call at a time on this key

    def __repr__(self) -> str:
        return f"EiClient(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("EiClient holds a secret key and cannot be pickled or copied")

    @property
    def key_id(self) -> str:
        """32-character id of this key pair (a hash of the secret key, as the package defines it)."""
        return self._client.key_id

    @property
    def descriptor(self) -> dict[str, Any]:
        """The scheme descriptor for the contract (a fresh copy)."""
        return copy.deepcopy(_DESCRIPTOR)

    @property
    def scheme_id(self) -> str:
        """How the service names the scheme in its response, e.g. ``ei-0.9``."""
        return f"{_DESCRIPTOR['name']}-{_DESCRIPTOR['version']}"

    def public_material(self) -> bytes:
        """The serialized public keys (relinearization + Galois, about 9 MB); made once, then cached."""
        with self._lock:
            if self._public is None:
                ptr = self._client.seal_instance.native_ptr
                size = ctypes.c_uint64()
                _check_native(einative._einative.GetPublicKeys(ptr, ctypes.byref(size), None), "public keys")
                buf = (ctypes.c_byte * size.value)()
                _check_native(einative._einative.GetPublicKeys(ptr, ctypes.byref(size), buf), "public keys")
                self._public = ctypes.string_at(buf, size.value)
            return self._public

    def encrypt(self, x: np.ndarray) -> list[str]:
        """Encrypt a pixel vector of shape (784,) with values in [0, 1]; base64 SEAL ciphertexts."""
        try:
            values = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInput("The input must be an array of numbers.") from None
        if values.shape != (self._n_features,):
            raise InvalidInput(f"The input must have shape ({self._n_features},), got {values.shape}.")
        if not np.isfinite(values).all():
            raise InvalidInput("The input holds NaN or infinite values.")
        if values.min() < 0.0 or values.max() > 1.0:
            raise InvalidInput("The input values must lie in [0, 1].")
        with self._lock:
            return list(self._client.encrypt(values))

    def decrypt(self, results: Sequence[str]) -> np.ndarray:
        """Decrypt the service's result ciphertexts (one per class) into float64 scores.

        Every ciphertext is checked before native code sees it; anything malformed raises
        InvalidInput instead of aborting the process.
        """
        if isinstance(results, (str, bytes)) or not isinstance(results, Sequence):
            raise InvalidInput("The service's result must be a list of base64 ciphertexts.")
        if not 1 <= len(results) <= MAX_RESULTS:
            raise InvalidInput(
                f"The service returned {len(results)} result ciphertexts (expected 1-{MAX_RESULTS})."
            )
        layout = _native_layout(self)
        checked: list[bytes] = []
        for index, text in enumerate(results):
            if not isinstance(text, str):
                raise InvalidInput(f"Result ciphertext {index} is not a string.")
            if len(text) > _MAX_RESULT_B64_CHARS:
                raise InvalidInput(f"Result ciphertext {index} is larger than any real result.")
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"Result ciphertext {index} is not valid base64.") from None
            checked.append(_check_result(raw, layout))
        scores = np.empty(len(checked), dtype=np.float64)
        with self._lock:
            ptr = self._client.seal_instance.native_ptr
            out = ctypes.c_double()
            for index, raw in enumerate(checked):
                buf = (ctypes.c_byte * len(raw)).from_buffer_copy(raw)
                error = einative._einative.DecryptResult(
                    ptr, ctypes.c_uint64(len(raw)), buf, ctypes.byref(out)
                )
                if error != 0:
                    raise InvalidInput(
                        f"Result ciphertext {index} could not be decrypted (SEAL error {error:#x})."
                    )
                scores[index] = out.value
        return scores

    def _probe_ciphertext(self) -> bytes:
        """One fresh ciphertext of a single zero, to learn the library's serialization."""
        with self._lock:
            text = self._client.seal_instance.get_ciphertext_string_array(np.zeros(1))[0]
        return base64.b64decode(text)


def _check_native(error: int, what: str) -> None:
    if error != 0:
        raise RuntimeError(f"encrypted-inference native call failed ({what}, error {error:#x})")


def _native_layout(client: EiClient) -> _Layout:
    """Derive the valid-ciphertext layout once per process and confirm it on a real ciphertext."""
    global _layout
    with _layout_lock:
        if _layout is not None:
            return _layout
        params = _DESCRIPTOR["params"]
        n = params["poly_modulus_degree"]
        moduli = tuple(_seal_coeff_modulus(n, params["coeff_modulus_bits"]))
        # Data levels: all primes but the last (the special prime), down to one prime.
        levels = {_seal_parms_id(n, moduli[:k]): k for k in range(1, len(moduli))}
        probe = client._probe_ciphertext()
        _, _, major, minor, compr, _, _ = _HEADER.unpack_from(probe)
        body = zlib.decompress(probe[_HEADER.size :]) if compr == _COMPR_ZLIB else probe[_HEADER.size :]
        parms_id, _, _, probe_n, probe_moduli, _ = _MEMBERS.unpack_from(body)
        if levels.get(parms_id) != len(moduli) - 1 or probe_n != n or probe_moduli != len(moduli) - 1:
            raise RuntimeError(
                "encrypted-inference's ciphertexts do not match the parameters lib/schemes/ei.py derives; "
                "the installed package is not the one this code was written for"
            )
        _layout = _Layout(version=(major, minor), poly_modulus_degree=n, moduli=moduli, levels=levels)
        return _layout


_DESCRIPTOR: dict[str, Any] = ei_descriptor()
