"""The one place where a result changes its SEAL version: SEAL 4.4 writes it, node-seal (SEAL 4.1) reads it.

The ``browser`` scheme's client is node-seal 6.0.3, Microsoft SEAL 4.1.2 compiled to WebAssembly.
Before SEAL 4.4, ``load`` refuses any object whose header names another minor version, and no
build here writes 4.1 but node-seal itself: tenseal.sealapi writes 4.3 and seal-python 4.4 (which
is why the service reads the tab's 4.1 objects with seal-python: SEAL 4.4 loads them as they are).

A ``Ciphertext`` is serialized the same way in SEAL 4.1 and 4.4: the 16-byte header, then parms_id
(4 x u64), is_ntt_form (u8), size, poly_modulus_degree and coeff_modulus_size (u64 each), scale
(f64) and correction_factor (u64), then its coefficients as a ``DynArray``, which has a header of its
own followed by a u64 count and the count u64 coefficients. So ``for_node_seal`` checks that the
bytes are exactly that, uncompressed, with every size consistent, and rewrites the minor version
in the two headers from 4 to 1. Anything else is refused (``SealFormatError``): another version, a
compressed or seeded object, trailing bytes, sizes that disagree. Node-run round trips on real
digits (tests/test_browser_scheme.py) prove that node-seal decrypts the rewritten results right.
"""
from __future__ import annotations

import math
import struct

from service.shared.seal_header import COMPR_NONE, HEADER_BYTES, SealFormatError, SealHeader, read_header

__all__ = ["NODE_SEAL_VERSION", "WRITER_VERSION", "for_node_seal"]

WRITER_VERSION = (4, 4)
"""What seal-python 4.4.0 writes."""
NODE_SEAL_VERSION = (4, 1)
"""What node-seal 6.0.3 (SEAL 4.1.2) writes and reads."""

_MEMBERS = struct.Struct("<32sBQQQdQ")  # parms_id, is_ntt_form, size, N, coeff_modulus_size, scale, correction
_COUNT = struct.Struct("<Q")
_MINOR_OFFSET = 4  # in a header: magic (2 bytes), header size (1 byte), major (1 byte), then minor


def for_node_seal(data: bytes) -> bytes:
    """A SEAL 4.4 ciphertext, checked field by field, as the SEAL 4.1 bytes node-seal loads."""
    outer = _checked_header(data, 0, "the result")
    if outer.size != len(data):
        raise SealFormatError(f"the result: the header says {outer.size} bytes, {len(data)} were given")
    if len(data) < HEADER_BYTES + _MEMBERS.size:
        raise SealFormatError("the result: too short for a ciphertext")
    _, ntt_form, size, degree, moduli, scale, _ = _MEMBERS.unpack_from(data, HEADER_BYTES)
    if ntt_form not in (0, 1) or not (2 <= size <= 16) or not (1 <= moduli <= 64):
        raise SealFormatError("the result: not a ciphertext's fields")
    if degree not in {1 << k for k in range(10, 16)} or not (math.isfinite(scale) and scale > 0):
        raise SealFormatError("the result: not a CKKS ciphertext's degree and scale")
    array_at = HEADER_BYTES + _MEMBERS.size
    inner = _checked_header(data, array_at, "the result's coefficients")
    if array_at + inner.size != len(data):
        raise SealFormatError("the result: its coefficients do not end where the ciphertext does")
    (count,) = _COUNT.unpack_from(data, array_at + HEADER_BYTES)
    if count != size * degree * moduli or inner.size != HEADER_BYTES + _COUNT.size + 8 * count:
        raise SealFormatError("the result: the coefficient count does not match the ciphertext's shape")
    rewritten = bytearray(data)
    for at in (0, array_at):
        rewritten[at + _MINOR_OFFSET] = NODE_SEAL_VERSION[1]
    return bytes(rewritten)


def _checked_header(data: bytes, offset: int, what: str) -> SealHeader:
    try:
        header = read_header(data, offset)
    except SealFormatError as error:
        raise SealFormatError(f"{what}: {error}") from None
    if header.version != WRITER_VERSION:
        raise SealFormatError(f"{what}: written by SEAL {header.version[0]}.{header.version[1]}, not "
                              f"{WRITER_VERSION[0]}.{WRITER_VERSION[1]}")
    if header.compr_mode != COMPR_NONE:
        raise SealFormatError(f"{what}: compressed; node-seal's results travel uncompressed")
    return header
