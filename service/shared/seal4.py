"""Microsoft SEAL 4 (``tenseal.sealapi``) for the ``ckks`` and ``bfv`` schemes, both halves.

sealapi serializes only through files, so objects pass through uniquely named files in a private
directory on tmpfs. Every object that crosses the seam is loaded with SEAL's own validation
(header, sizes, every coefficient below its modulus, parameters of this context); SEAL 4 reports
failures as Python exceptions, so unlike the seed's SEAL 3.5 nothing here can abort the process.
The header is checked first, so a forged size never makes SEAL allocate or inflate more than the
bytes that arrived. Failures raise ``SealFormatError``; each half turns it into its own error.
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import struct
import tempfile
import threading
from typing import Any

import numpy as np
from tenseal import sealapi as sa

from service.shared.seal_header import COMPR_NONE, SealFormatError, pack_header, read_header
from service.shared.specs import BfvParams, Seal4Params

__all__ = [
    "FILES",
    "SEAL_VERSION",
    "SealFormatError",
    "check_header",
    "galois_element",
    "load_ciphertext",
    "load_object",
    "make_context",
    "plaintext_from_coefficients",
    "rescaled_prime",
    "split_objects",
]


class SealFiles:
    """Moves SEAL objects to and from bytes through uniquely named files on tmpfs (thread-safe)."""

    def __init__(self) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self._directory = tempfile.mkdtemp(prefix="seal4-", dir=base)  # mode 0700: only this user
        atexit.register(shutil.rmtree, self._directory, True)
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def _path(self) -> str:
        with self._lock:
            number = next(self._counter)
        return os.path.join(self._directory, f"{os.getpid()}-{number}")

    def to_bytes(self, obj: Any) -> bytes:
        """``obj.save`` into bytes (SEAL's default compression)."""
        path = self._path()
        try:
            obj.save(path)
            with open(path, "rb") as handle:
                return handle.read()
        finally:
            _unlink(path)

    def load(self, obj: Any, data: bytes, context: sa.SEALContext) -> None:
        """``obj.load(context, ...)`` from bytes; SEAL validates the object against the context."""
        path = self._path()
        try:
            with open(path, "wb") as handle:
                handle.write(data)
            obj.load(context, path)
        finally:
            _unlink(path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


FILES = SealFiles()


def _seal_version() -> tuple[int, int]:
    """The (major, minor) this SEAL build writes, read from an object it serializes."""
    return read_header(FILES.to_bytes(sa.Plaintext("1"))).version


SEAL_VERSION = _seal_version()


def make_context(params: Seal4Params) -> sa.SEALContext:
    """A SEALContext for a scheme's parameters at 128-bit security; SEAL refuses weaker ones."""
    parms = sa.EncryptionParameters(sa.SCHEME_TYPE.BFV if isinstance(params, BfvParams) else sa.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(sa.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_modulus_bits)))
    if isinstance(params, BfvParams):
        parms.set_plain_modulus(1 << params.plain_modulus_bits)
    context = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise ValueError(f"SEAL refused the parameters {params}: {context.parameters_error_message()}")
    return context


def check_header(data: bytes, what: str) -> None:
    """The SEAL 4 header must be intact and describe exactly these bytes."""
    try:
        header = read_header(data)
    except SealFormatError as error:
        raise SealFormatError(f"{what}: {error}") from None
    major = header.version[0]
    if major != SEAL_VERSION[0]:
        raise SealFormatError(f"{what}: written by SEAL {major}.x, this code runs SEAL {SEAL_VERSION[0]}")
    if header.size != len(data):
        raise SealFormatError(f"{what}: the header says {header.size} bytes, {len(data)} arrived")


def load_object(obj: Any, data: bytes, context: sa.SEALContext, what: str) -> None:
    """Load a SEAL object from bytes that crossed the seam, or raise SealFormatError saying what is wrong."""
    check_header(data, what)
    try:
        FILES.load(obj, data, context)
    except (RuntimeError, ValueError, TypeError, MemoryError) as error:
        raise SealFormatError(f"{what}: SEAL rejected it ({error})") from None


def load_ciphertext(data: bytes, context: sa.SEALContext, ntt_form: bool, what: str, *,
                    last_level: bool = False) -> sa.Ciphertext:
    """A two-part ciphertext in the expected NTT form, at the context's first data level (or, with
    ``last_level``, at its last: a result that has been rescaled all the way down)."""
    ciphertext = sa.Ciphertext()
    load_object(ciphertext, data, context, what)
    level = context.last_parms_id() if last_level else context.first_parms_id()
    if list(ciphertext.parms_id()) != list(level):
        raise SealFormatError(f"{what}: encrypted under other parameters or at another level")
    if ciphertext.size() != 2:
        raise SealFormatError(f"{what}: has {ciphertext.size()} parts; a fresh ciphertext has 2")
    if ciphertext.is_ntt_form() != ntt_form:
        raise SealFormatError(f"{what}: wrong NTT form for this scheme")
    return ciphertext


def plaintext_from_coefficients(coefficients: np.ndarray, context: sa.SEALContext) -> sa.Plaintext:
    """A coefficient-domain plaintext holding these values (each below the plain modulus).

    sealapi cannot set coefficients from Python in bulk, so this writes SEAL's uncompressed
    serialization of a Plaintext (zero parms_id, coefficient count, scale, DynArray) and loads it,
    which also makes SEAL check every coefficient.
    """
    values = np.ascontiguousarray(coefficients, dtype="<u8")
    array = struct.pack("<Q", values.size) + values.tobytes()
    array = pack_header(SEAL_VERSION, COMPR_NONE, len(array)) + array
    body = bytes(32) + struct.pack("<Qd", values.size, 1.0) + array
    plaintext = sa.Plaintext()
    FILES.load(plaintext, pack_header(SEAL_VERSION, COMPR_NONE, len(body)) + body, context)
    return plaintext


def galois_element(step: int, poly_modulus_degree: int) -> int:
    """SEAL's Galois element for a left rotation by ``step`` slots (CKKS)."""
    if step >= 0:
        return pow(3, step, 2 * poly_modulus_degree)
    return pow(3, poly_modulus_degree // 2 + step, 2 * poly_modulus_degree)



def rescaled_prime(context: sa.SEALContext) -> int:
    """The data prime that one rescale from the top level divides by (the top level's last one)."""
    return int(context.first_context_data().parms().coeff_modulus()[-1].value())


def split_objects(blob: bytes, count: int, what: str) -> list[bytes]:
    """``count`` SEAL objects saved back to back: each header says where the next begins."""
    parts, offset = [], 0
    for index in range(count):
        try:
            size = read_header(blob, offset).size
        except SealFormatError as error:
            raise SealFormatError(f"{what}, SEAL object {index + 1} of {count}: {error}") from None
        parts.append(blob[offset : offset + size])
        offset += size
    if offset != len(blob):
        raise SealFormatError(f"{what}: {len(blob) - offset} bytes follow the {count} SEAL objects")
    return parts
