"""Checks on serialized Microsoft SEAL 3.5 objects, made before any bytes reach native code.

encrypted-inference 0.9 (the ``ei`` scheme) bundles SEAL 3.5, whose native library aborts the
whole process on malformed input. So both halves check in Python first:
- the service checks the framing of request ciphertexts and key blobs (``check_objects``; it
  still runs the native code in a child process, see service/schemes/ei_isolated.py);
- the client checks every result ciphertext completely (``check_ciphertext``): everything SEAL
  checks when it loads one (header, zlib stream, parameter id, metadata, sizes, every
  coefficient below its prime), against a ``CiphertextLayout`` derived from the parameters
  exactly as SEAL derives primes and parameter ids.
Both return the objects re-framed without compression, the form the native code loads fastest.
"""
from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.shared.seal_header import (
    COMPR_NONE,
    COMPR_ZLIB,
    HEADER,
    HEADER_BYTES,
    SEAL_MAGIC,
    SealFormatError,
    SealHeader,
    pack_header,
    read_header,
)
from service.shared.specs import EiParams

SEAL_VERSION = (3, 5)
MAX_INFLATED_BYTES = 64 << 20
_CKKS_SCHEME_ID = 2  # seal::scheme_type::CKKS in SEAL 3.x
# Ciphertext members after the header: parms_id (4 x u64), is_ntt_form (u8), size, N, #moduli (u64), scale (f64)
MEMBERS = struct.Struct("<32sBQQQd")


def inflate(data: bytes | memoryview, limit: int) -> bytes:
    """A complete zlib stream inflated to at most ``limit`` bytes (a flipped or cut stream aborts SEAL)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise SealFormatError("its compressed data is corrupt") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise SealFormatError(f"it inflates to more than {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise SealFormatError("its compressed data is truncated or has trailing bytes")
    return out


def _members(data: memoryview, header: SealHeader, limit: int) -> bytes:
    """The object's members, uncompressed."""
    if header.compr_mode == COMPR_NONE:
        if len(data) > limit:
            raise SealFormatError(f"it is larger than {limit} bytes")
        return bytes(data)
    if header.compr_mode != COMPR_ZLIB:
        raise SealFormatError("zstd-compressed SEAL objects are not supported")
    return inflate(data, limit)


def check_objects(data: bytes, count: int, version: tuple[int, int], compr_modes: tuple[int, ...]) -> bytes:
    """Check that ``data`` is exactly ``count`` SEAL objects of ``version``, back to back.

    Returns the same objects re-framed without compression. SEAL loads those without inflating
    them again, which makes each native call that reloads the 8 MB key blob about a third
    cheaper; the objects' content is unchanged.
    """
    view = memoryview(data)
    offset = 0
    inflated = []
    for _ in range(count):
        header = read_header(data, offset)
        if header.version != version:
            raise SealFormatError(
                f"SEAL version {header.version[0]}.{header.version[1]}, expected {version[0]}.{version[1]}"
            )
        if header.compr_mode not in compr_modes:
            raise SealFormatError("SEAL object uses a compression mode this scheme does not")
        members = _members(view[offset + HEADER_BYTES : offset + header.size], header, MAX_INFLATED_BYTES)
        inflated += [pack_header(version, COMPR_NONE, len(members)), members]
        offset += header.size
    if offset != len(data):
        raise SealFormatError(f"expected {count} SEAL object(s) and nothing after them")
    return b"".join(inflated)


# --- what SEAL accepts as a ciphertext ------------------------------------------------------------


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


def seal_coeff_modulus(poly_modulus_degree: int, bit_sizes: Sequence[int]) -> list[int]:
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


def seal_parms_id(poly_modulus_degree: int, moduli: Sequence[int]) -> bytes:
    """SEAL 3.5's parameter id: BLAKE2b-256 of (scheme, N, moduli..., plain modulus 0) as u64."""
    words = [_CKKS_SCHEME_ID, poly_modulus_degree, *moduli, 0]
    return hashlib.blake2b(struct.pack(f"<{len(words)}Q", *words), digest_size=32).digest()


@dataclass(frozen=True)
class CiphertextLayout:
    """What a valid CKKS ciphertext of one SEAL 3.5 build and one parameter set looks like."""

    version: tuple[int, int]
    poly_modulus_degree: int
    moduli: tuple[int, ...]
    levels: dict[bytes, int]
    """parms_id -> number of primes at that (data) level."""

    @classmethod
    def of(cls, params: EiParams, version: tuple[int, int] = SEAL_VERSION) -> CiphertextLayout:
        """The layout SEAL derives from these parameters: data levels are all primes but the last
        (the special prime), down to one prime."""
        n = params.poly_modulus_degree
        moduli = tuple(seal_coeff_modulus(n, params.coeff_modulus_bits))
        levels = {seal_parms_id(n, moduli[:k]): k for k in range(1, len(moduli))}
        return cls(version=version, poly_modulus_degree=n, moduli=moduli, levels=levels)

    def max_body_bytes(self) -> int:
        top = max(self.levels.values())
        return MEMBERS.size + HEADER_BYTES + 8 + 8 * 2 * top * self.poly_modulus_degree

    def is_fresh(self, ciphertext: bytes) -> bool:
        """Whether a ciphertext the library just made sits at this layout's top data level."""
        header = read_header(ciphertext)
        payload = ciphertext[HEADER_BYTES : header.size]
        body = zlib.decompress(payload) if header.compr_mode == COMPR_ZLIB else payload
        parms_id, _, _, n, n_moduli, _ = MEMBERS.unpack_from(body)
        top = len(self.moduli) - 1
        return self.levels.get(parms_id) == top and n == self.poly_modulus_degree and n_moduli == top


def check_ciphertext(raw: bytes, layout: CiphertextLayout) -> bytes:
    """Check ``raw`` as SEAL would load it and return it re-serialised without compression."""
    header = read_header(raw)
    if header.version != layout.version:
        raise SealFormatError(f"SEAL version {header.version[0]}.{header.version[1]}, "
                              f"expected {layout.version[0]}.{layout.version[1]}")
    if header.size != len(raw):
        raise SealFormatError(f"declared size {header.size} but {len(raw)} bytes")
    if header.compr_mode not in (COMPR_NONE, COMPR_ZLIB):
        raise SealFormatError(f"unsupported compression mode {header.compr_mode}")
    body = _members(memoryview(raw)[HEADER_BYTES:], header, layout.max_body_bytes())
    if len(body) < MEMBERS.size + HEADER_BYTES + 8:
        raise SealFormatError("too short")
    parms_id, is_ntt, poly_count, n, n_moduli, scale = MEMBERS.unpack_from(body)
    level = layout.levels.get(parms_id)
    if level is None:
        raise SealFormatError("made with other encryption parameters")
    if is_ntt != 1:
        raise SealFormatError("not in NTT form")
    if poly_count != 2:
        raise SealFormatError(f"{poly_count} polynomials, expected 2")
    if n != layout.poly_modulus_degree or n_moduli != level:
        raise SealFormatError("metadata does not match its parameters")
    level_bits = sum(m.bit_length() for m in layout.moduli[:level])
    if not (math.isfinite(scale) and scale > 0 and int(math.log2(scale)) < level_bits):
        raise SealFormatError("scale out of range")
    data = body[MEMBERS.size :]
    d_magic, d_header_size, d_major, d_minor, d_compr, d_reserved, d_size = HEADER.unpack_from(data)
    count = 2 * level * n
    if (
        d_magic != SEAL_MAGIC
        or d_header_size != HEADER_BYTES
        or (d_major, d_minor) != layout.version
        or d_compr != COMPR_NONE
        or d_reserved != 0
        or d_size != len(data)
        or struct.unpack_from("<Q", data, HEADER_BYTES)[0] != count
        or len(data) != HEADER_BYTES + 8 + 8 * count
    ):
        raise SealFormatError("its coefficient array is malformed")
    coeffs = np.frombuffer(data, dtype="<u8", offset=HEADER_BYTES + 8).reshape(2, level, n)
    moduli = np.array(layout.moduli[:level], dtype=np.uint64).reshape(1, level, 1)
    if not bool((coeffs < moduli).all()):
        raise SealFormatError("a coefficient is not reduced modulo its prime")
    return pack_header(layout.version, COMPR_NONE, len(body)) + body
