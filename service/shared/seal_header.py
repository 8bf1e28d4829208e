"""The header of every serialized Microsoft SEAL object (SEAL 3.5 and SEAL 4 alike).

16 bytes: magic 0xA15E, header size 16, version major and minor, compression mode (0 none,
1 zlib, 2 zstd), two reserved bytes, and the total size of the object including the header.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compression, reserved, total size
HEADER_BYTES = HEADER.size
SEAL_MAGIC = 0xA15E
COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD = 0, 1, 2


class SealFormatError(ValueError):
    """The bytes are not the SEAL objects they claim to be (each half turns this into its own error)."""


@dataclass(frozen=True)
class SealHeader:
    """A header that passed ``read_header``."""

    version: tuple[int, int]
    compr_mode: int
    size: int


def read_header(data: bytes, offset: int = 0) -> SealHeader:
    """Parse and check the SEAL header at ``offset``: magic, size fields, a known compression mode."""
    if len(data) - offset < HEADER_BYTES:
        raise SealFormatError("too short for a SEAL object")
    magic, header_size, major, minor, compr_mode, reserved, size = HEADER.unpack_from(data, offset)
    if magic != SEAL_MAGIC or header_size != HEADER_BYTES or reserved != 0:
        raise SealFormatError("not a serialized SEAL object (bad header)")
    if compr_mode not in (COMPR_NONE, COMPR_ZLIB, COMPR_ZSTD):
        raise SealFormatError("unknown SEAL compression mode")
    if size < HEADER_BYTES or offset + size > len(data):
        raise SealFormatError("SEAL object size does not match the bytes given")
    return SealHeader((major, minor), compr_mode, size)


def pack_header(version: tuple[int, int], compr_mode: int, body_bytes: int) -> bytes:
    """The header of an object of ``body_bytes`` bytes after the header."""
    return HEADER.pack(SEAL_MAGIC, HEADER_BYTES, version[0], version[1], compr_mode, 0, HEADER_BYTES + body_bytes)
