"""Checks on serialized Microsoft SEAL objects, made before any bytes reach native code.

encrypted-inference 0.9 bundles SEAL 3.5. Its native library aborts the whole process on
malformed input, so the service checks the framing here (clear 4xx messages for the common
cases) and still runs the native code in a child process (see `isolated_evaluator`).

A serialized SEAL object starts with a 16-byte header: magic 0xA15E, header size 16, version
major and minor, compression mode (0 none, 1 zlib, 2 zstd), two reserved bytes, and the total
size of the object including the header.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SEAL_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")
HEADER_BYTES = _HEADER.size
COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD = 0, 1, 2
_MAX_INFLATED_BYTES = 64 << 20


class SealFormatError(ValueError):
    """The bytes are not the SEAL objects they claim to be."""


@dataclass(frozen=True)
class SealHeader:
    version: tuple[int, int]
    compr_mode: int
    size: int


def read_header(data: bytes, offset: int = 0) -> SealHeader:
    """Parse and check the SEAL header at `offset`."""
    if len(data) - offset < HEADER_BYTES:
        raise SealFormatError("too short for a SEAL object")
    magic, header_size, major, minor, compr_mode, reserved, size = _HEADER.unpack_from(data, offset)
    if magic != SEAL_MAGIC or header_size != HEADER_BYTES or reserved != 0:
        raise SealFormatError("not a serialized SEAL object (bad header)")
    if compr_mode not in (COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD):
        raise SealFormatError("unknown SEAL compression mode")
    if size < HEADER_BYTES or offset + size > len(data):
        raise SealFormatError("SEAL object size does not match the bytes given")
    return SealHeader((major, minor), compr_mode, size)


def _inflate_payload(data: memoryview, header: SealHeader) -> bytes:
    """The object's members, uncompressed; a truncated or flipped zlib stream aborts SEAL."""
    if header.compr_mode == COMPR_NONE:
        return bytes(data)
    if header.compr_mode != COMPR_ZLIB:
        raise SealFormatError("zstd-compressed SEAL objects are not supported")
    inflater = zlib.decompressobj()
    try:
        members = inflater.decompress(data, _MAX_INFLATED_BYTES)
    except zlib.error:
        raise SealFormatError("SEAL object's compressed data is corrupt") from None
    if inflater.unconsumed_tail:
        raise SealFormatError("SEAL object inflates to more than 64 MB")
    if not inflater.eof or inflater.unused_data:
        raise SealFormatError("SEAL object's compressed data is truncated or has trailing bytes")
    return members


def check_objects(data: bytes, count: int, version: tuple[int, int], compr_modes: tuple[int, ...]) -> bytes:
    """Check that `data` is exactly `count` SEAL objects of `version`, back to back.

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
        members = _inflate_payload(view[offset + HEADER_BYTES: offset + header.size], header)
        inflated.append(_HEADER.pack(SEAL_MAGIC, HEADER_BYTES, *version, COMPR_NONE, 0, HEADER_BYTES + len(members)))
        inflated.append(members)
        offset += header.size
    if offset != len(data):
        raise SealFormatError(f"expected {count} SEAL object(s) and nothing after them")
    return b"".join(inflated)
