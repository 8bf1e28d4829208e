"""Unit tests: SEAL framing checks that run before any bytes reach native code."""
import struct
import zlib

import pytest

from service.shared.seal3 import check_objects
from service.shared.seal_header import COMPR_NONE, COMPR_ZLIB, SealFormatError, read_header


def sealed(payload: bytes, compressed: bool = True, version=(3, 5), magic=0xA15E) -> bytes:
    body = zlib.compress(payload) if compressed else payload
    mode = COMPR_ZLIB if compressed else COMPR_NONE
    return struct.pack("<HBBBBHQ", magic, 16, version[0], version[1], mode, 0, 16 + len(body)) + body


MODES = (COMPR_NONE, COMPR_ZLIB)


def test_valid_objects_pass():
    check_objects(sealed(b"a" * 100), 1, (3, 5), MODES)
    check_objects(sealed(b"a" * 100) + sealed(b"b" * 10, compressed=False), 2, (3, 5), MODES)
    assert read_header(sealed(b"xyz", compressed=False)).size == 19


@pytest.mark.parametrize(
    ("data", "count", "message"),
    [
        (b"", 1, "too short"),
        (b"\x00" * 40, 1, "bad header"),
        (sealed(b"a" * 50, magic=0xBEEF), 1, "bad header"),
        (sealed(b"a" * 50, version=(4, 0)), 1, "version 4.0"),
        (sealed(b"a" * 50)[:-3], 1, "size does not match"),
        (sealed(b"a" * 50) + b"extra", 1, "nothing after"),
        (sealed(b"a" * 50), 2, "too short"),
        (sealed(b"a" * 50)[:16] + b"\xff" * (len(sealed(b"a" * 50)) - 16), 1, "corrupt"),
    ],
)
def test_malformed_objects_are_refused(data, count, message):
    with pytest.raises(SealFormatError, match=message):
        check_objects(data, count, (3, 5), MODES)


def test_truncated_zlib_stream_is_refused():
    body = zlib.compress(b"q" * 5000)[:-6]
    data = struct.pack("<HBBBBHQ", 0xA15E, 16, 3, 5, COMPR_ZLIB, 0, 16 + len(body)) + body
    with pytest.raises(SealFormatError, match="truncated"):
        check_objects(data, 1, (3, 5), MODES)


def test_compression_mode_must_be_allowed():
    with pytest.raises(SealFormatError, match="compression mode"):
        check_objects(sealed(b"abc", compressed=False), 1, (3, 5), (COMPR_ZLIB,))
