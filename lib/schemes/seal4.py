"""Microsoft SEAL 4 (``tenseal.sealapi``) plumbing for the ``ckks`` and ``bfv`` client halves.

sealapi serializes only through files, so objects pass through a private tmpfs directory. Result
ciphertexts from the service are loaded with SEAL's own validation (SEAL 4 raises Python
exceptions, it does not abort), after a header check, and must sit at the level and form the
scheme produces; anything else is an ``InvalidInput`` for the session to report.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import itertools
import os
import secrets
import shutil
import struct
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from tenseal import sealapi as sa

from lib.errors import InvalidInput

_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compression, reserved, size
_SEAL_MAGIC = 0xA15E
_SCHEME_TYPES = {"ckks": sa.SCHEME_TYPE.CKKS, "bfv": sa.SCHEME_TYPE.BFV}


class _Files:
    """Bytes <-> SEAL objects through uniquely named files in a private tmpfs directory."""

    def __init__(self) -> None:
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self._directory = tempfile.mkdtemp(prefix="seal4-client-", dir=base)
        os.chmod(self._directory, 0o700)
        atexit.register(shutil.rmtree, self._directory, True)
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def _path(self) -> str:
        with self._lock:
            return os.path.join(self._directory, str(next(self._counter)))

    def to_bytes(self, obj: Any) -> bytes:
        path = self._path()
        try:
            obj.save(path)
            with open(path, "rb") as handle:
                return handle.read()
        finally:
            os.unlink(path)

    def load(self, obj: Any, data: bytes, context: sa.SEALContext) -> None:
        path = self._path()
        try:
            with open(path, "wb") as handle:
                handle.write(data)
            obj.load(context, path)
        finally:
            os.unlink(path)


FILES = _Files()
SEAL_VERSION = _HEADER.unpack_from(FILES.to_bytes(sa.Plaintext("1")))[2:4]


def make_context(
    scheme: str, poly_modulus_degree: int, coeff_modulus_bits: Sequence[int], plain_modulus_bits: int | None = None
) -> sa.SEALContext:
    """A SEALContext at 128-bit security (SEAL refuses weaker parameters)."""
    parms = sa.EncryptionParameters(_SCHEME_TYPES[scheme])
    parms.set_poly_modulus_degree(poly_modulus_degree)
    parms.set_coeff_modulus(sa.CoeffModulus.Create(poly_modulus_degree, list(coeff_modulus_bits)))
    if plain_modulus_bits is not None:
        parms.set_plain_modulus(1 << plain_modulus_bits)
    context = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise RuntimeError(f"SEAL refused the {scheme} parameters: {context.parameters_error_message()}")
    return context


def plaintext_from_coefficients(coefficients: np.ndarray, context: sa.SEALContext) -> sa.Plaintext:
    """A coefficient plaintext (values below t), via SEAL's uncompressed Plaintext serialization."""
    values = np.ascontiguousarray(coefficients, dtype="<u8")
    array = struct.pack("<Q", values.size) + values.tobytes()
    array = _header(len(array)) + array
    body = bytes(32) + struct.pack("<Qd", values.size, 1.0) + array
    plaintext = sa.Plaintext()
    FILES.load(plaintext, _header(len(body)) + body, context)
    return plaintext


def _header(body_size: int) -> bytes:
    return _HEADER.pack(_SEAL_MAGIC, _HEADER.size, *SEAL_VERSION, 0, 0, _HEADER.size + body_size)


def load_result(text: str, context: sa.SEALContext, ntt_form: bool, max_bytes: int) -> sa.Ciphertext:
    """A result ciphertext from the service, checked: base64, header, SEAL validation, level, form."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("A result ciphertext is not valid base64.") from None
    if len(data) < _HEADER.size or len(data) > max_bytes:
        raise InvalidInput(f"A result ciphertext has {len(data)} bytes; this scheme's are at most {max_bytes}.")
    magic, header_size, major, _minor, compression, _reserved, size = _HEADER.unpack_from(data)
    if magic != _SEAL_MAGIC or header_size != _HEADER.size or major != SEAL_VERSION[0] or compression > 2:
        raise InvalidInput("A result ciphertext is not a SEAL 4 object.")
    if size != len(data):
        raise InvalidInput("A result ciphertext is truncated or padded.")
    ciphertext = sa.Ciphertext()
    try:
        FILES.load(ciphertext, data, context)
    except (RuntimeError, ValueError, TypeError, MemoryError) as error:
        raise InvalidInput(f"SEAL rejected a result ciphertext ({error}).") from None
    if list(ciphertext.parms_id()) != list(context.first_parms_id()) or ciphertext.size() != 2:
        raise InvalidInput("A result ciphertext is not at the level this scheme's service returns.")
    if ciphertext.is_ntt_form() != ntt_form:
        raise InvalidInput("A result ciphertext is in the wrong NTT form for this scheme.")
    return ciphertext


class Seal4Client:
    """What the SEAL 4 client halves share: the secret key's safekeeping and identity."""

    name: str
    version: str

    def __init__(self) -> None:
        self._key_id = secrets.token_hex(16)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self._key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds a secret key and cannot be pickled or copied")

    @property
    def key_id(self) -> str:
        """32 random hex characters naming this key pair (and its public-material blob)."""
        return self._key_id

    @property
    def scheme_id(self) -> str:
        return f"{self.name}-{self.version}"
