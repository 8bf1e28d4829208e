"""The seed scheme's public keys with their random halves generated once, when a key set is cached.

SEAL 3.5 saves each of the 39 key ciphertexts in an ei key blob (12 Galois keys and the
relinearisation key, 3 parts each) *seeded*: the first polynomial, then a 64-byte seed from
which the second, uniformly random polynomial is regenerated on load. `ComputeDotProduct` loads
the blob once per class, so every ei request regenerated those 1.3 M coefficients ten times
(BLAKE2xb, a mutex per 4 random bytes, rejection sampling): half of its CPU time.

`expand_seeded_keys` generates each second polynomial once, exactly as this SEAL build does
(``sample_poly_uniform`` of SEAL 3.5.0, fed by ``BlakePRNG`` through the BLAKE2xb that the
package's own native library exports), and re-frames every key ciphertext unseeded. SEAL then
loads the same keys without regenerating anything; the results are byte for byte the same
(`tests/test_ei_native.py`). The expanded blob is about twice the size (20 MB), which the key
cache books.
"""
from __future__ import annotations

import ctypes
import struct
from functools import cache
from typing import Any

import numpy as np
from encrypted.inference.internal import einative

from service.shared.seal3 import MEMBERS, seal_coeff_modulus, seal_parms_id
from service.shared.seal_header import COMPR_NONE, HEADER_BYTES, SealFormatError, pack_header, read_header
from service.shared.specs import EI

_U64 = struct.Struct("<Q")
SEED_BYTES = 64  # seal::random_seed_type: 8 x u64
_PRNG_BUFFER_BYTES = 4096  # UniformRandomGenerator::buffer_size_
_KSWITCH_HEAD = 32 + 8  # parms_id, then the number of key vectors
_MAX_KEY_VECTORS = 1 << 16  # a Galois key vector per odd Galois element; N = 8192 has 8,192 slots for them
_MAX_KEYS_PER_VECTOR = 64  # one key ciphertext per decomposition prime


def _native_blake2xb() -> Any:
    function = einative._einative.blake2xb
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                         ctypes.c_char_p, ctypes.c_size_t]  # fmt: skip
    function.restype = ctypes.c_int
    return function


_blake2xb = _native_blake2xb()


class BlakePrng:
    """SEAL 3.5's BlakePRNG: 4,096-byte BLAKE2xb blocks keyed by the seed, over a u64 counter from 0."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise SealFormatError(f"a seed is {SEED_BYTES} bytes")
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def take(self, count: int) -> bytes:
        """The next ``count`` bytes of the stream."""
        blocks = [self._buffer]
        have = len(self._buffer)
        while have < count:
            out = ctypes.create_string_buffer(_PRNG_BUFFER_BYTES)
            if _blake2xb(out, _PRNG_BUFFER_BYTES, _U64.pack(self._counter), _U64.size, self._seed, SEED_BYTES):
                raise RuntimeError("blake2xb failed")
            self._counter += 1
            blocks.append(out.raw)
            have += _PRNG_BUFFER_BYTES
        stream = b"".join(blocks)
        self._buffer = stream[count:]
        return stream[:count]


def sample_poly_uniform(seed: bytes, moduli: tuple[int, ...], degree: int) -> np.ndarray:
    """SEAL 3.5.0's uniform polynomial: per prime, per coefficient, a 63-bit draw
    ``(u32 << 31) | (u32 >> 1)`` from the stream, rejected above the largest multiple of the prime."""
    prng = BlakePrng(seed)
    top = (1 << 63) - 1
    out = np.empty((len(moduli), degree), dtype=np.uint64)
    for row, prime in enumerate(moduli):
        limit = np.uint64(top - top % prime - 1)
        filled = 0
        while filled < degree:
            words = np.frombuffer(prng.take(8 * (degree - filled)), dtype="<u4").reshape(-1, 2).astype(np.uint64)
            draws = (words[:, 0] << np.uint64(31)) | (words[:, 1] >> np.uint64(1))
            kept = draws[draws < limit]  # rejected draws are skipped in order, as SEAL's loop does
            out[row, filled : filled + len(kept)] = kept % np.uint64(prime)
            filled += len(kept)
    return out


@cache
def _key_level() -> tuple[bytes, tuple[int, ...]]:
    """The parameter id and primes of the key level (every prime), where key ciphertexts live."""
    moduli = tuple(seal_coeff_modulus(EI.params.poly_modulus_degree, EI.params.coeff_modulus_bits))
    return seal_parms_id(EI.params.poly_modulus_degree, moduli), moduli


def _expand_key_ciphertext(data: bytes, parms_id: bytes, moduli: tuple[int, ...]) -> bytes:
    """One uncompressed key ciphertext, its seeded second polynomial generated."""
    degree = EI.params.poly_modulus_degree
    members = data[HEADER_BYTES:]
    if len(members) < MEMBERS.size + HEADER_BYTES + 8:
        raise SealFormatError("a key ciphertext is too short")
    ct_parms_id, _, size, n, n_moduli, _ = MEMBERS.unpack_from(members)
    if ct_parms_id != parms_id or size != 2 or n != degree or n_moduli != len(moduli):
        raise SealFormatError("a key ciphertext is not at the key level")
    array = members[MEMBERS.size :]
    array_header = read_header(array)
    (count,) = _U64.unpack_from(array, HEADER_BYTES)
    start = HEADER_BYTES + 8
    if count == 2 * n_moduli * degree:
        return data  # not seeded: nothing to do
    if count != n_moduli * degree or array_header.compr_mode != COMPR_NONE or array_header.size != start + 8 * count:
        raise SealFormatError("a key ciphertext's coefficient array is malformed")
    seed = array[array_header.size :]
    if len(seed) != SEED_BYTES:
        raise SealFormatError("a seeded key ciphertext lacks its seed")
    first = array[start : array_header.size]
    second = sample_poly_uniform(seed, moduli, degree).astype("<u8").tobytes()
    full = _U64.pack(2 * count) + first + second
    body = members[: MEMBERS.size] + pack_header(array_header.version, COMPR_NONE, len(full)) + full
    return pack_header(read_header(data).version, COMPR_NONE, len(body)) + body


def _expand_kswitch_keys(data: bytes) -> bytes:
    """One uncompressed KSwitchKeys object (Galois or relinearisation keys), every key expanded."""
    header = read_header(data)
    if header.compr_mode != COMPR_NONE or header.size != len(data):
        raise SealFormatError("key objects must be uncompressed and whole")
    members = data[HEADER_BYTES:]
    parms_id, moduli = _key_level()
    if len(members) < _KSWITCH_HEAD or members[:32] != parms_id:
        raise SealFormatError("the keys are not at the key level")
    (vectors,) = _U64.unpack_from(members, 32)
    if vectors > _MAX_KEY_VECTORS:
        raise SealFormatError("too many key vectors")
    parts: list[bytes] = [members[:_KSWITCH_HEAD]]
    offset = _KSWITCH_HEAD
    for _ in range(vectors):
        if offset + 8 > len(members):
            raise SealFormatError("the key vectors are truncated")
        (keys,) = _U64.unpack_from(members, offset)
        if keys > _MAX_KEYS_PER_VECTOR:
            raise SealFormatError("too many keys in a key vector")
        parts.append(members[offset : offset + 8])
        offset += 8
        for _ in range(keys):
            key_header = read_header(members, offset)
            parts.append(_expand_key_ciphertext(members[offset : offset + key_header.size], parms_id, moduli))
            offset += key_header.size
    if offset != len(members):
        raise SealFormatError("bytes after the last key")
    body = b"".join(parts)
    return pack_header(header.version, COMPR_NONE, len(body)) + body


def expand_seeded_keys(blob: bytes) -> bytes:
    """An uncompressed ei key blob (as `EiScheme.check_key_blob` returns it) with every seeded key
    ciphertext expanded. Raises SealFormatError if the blob is not laid out as expected; the caller
    then keeps the blob as it is and lets SEAL judge it."""
    objects = []
    offset = 0
    while offset < len(blob):
        header = read_header(blob, offset)
        objects.append(_expand_kswitch_keys(blob[offset : offset + header.size]))
        offset += header.size
    return b"".join(objects)
