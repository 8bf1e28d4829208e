"""Microsoft SEAL 4 plumbing (via ``tenseal.sealapi``) shared by the ``ckks`` and ``bfv`` schemes.

sealapi serializes only through files, so objects go through a private directory on tmpfs. Every
object from a request is loaded with SEAL's own validation (header, sizes, every coefficient
below its modulus, parameters of this context); SEAL 4 reports failures as Python exceptions, so
unlike the seed's SEAL 3.5 nothing here can abort the process. The header is checked first so a
forged size never makes SEAL allocate or inflate more than the bytes we received.
"""
from __future__ import annotations

import atexit
import base64
import contextlib
import itertools
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Sequence

import numpy as np
from tenseal import sealapi as sa

from service.errors import RequestRejected
from service.key_source import KeyReference
from service.schemes.base import Evaluation, KeyCache

SEAL_MAGIC = 0xA15E
HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compression, reserved, total size
SUPPORTED_COMPRESSION = (0, 1, 2)  # none, zlib, zstd
_SCHEME_TYPES = {"ckks": sa.SCHEME_TYPE.CKKS, "bfv": sa.SCHEME_TYPE.BFV}


class SealObjectError(ValueError):
    """Bytes that are not a valid SEAL 4 object for this context."""


def _tmpfs_directory() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="seal4-", dir=base)
    atexit.register(shutil.rmtree, path, True)
    return path


class SealFiles:
    """Moves SEAL objects to and from bytes through uniquely named files on tmpfs (thread-safe)."""

    def __init__(self) -> None:
        self._directory = _tmpfs_directory()
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def _path(self) -> str:
        with self._lock:
            number = next(self._counter)
        return os.path.join(self._directory, f"{os.getpid()}-{number}")

    def to_bytes(self, obj: object) -> bytes:
        """``obj.save`` into bytes (SEAL's default compression)."""
        path = self._path()
        try:
            obj.save(path)
            with open(path, "rb") as handle:
                return handle.read()
        finally:
            _unlink(path)

    def load(self, obj: object, data: bytes, context: sa.SEALContext) -> None:
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
    header = HEADER.unpack_from(FILES.to_bytes(sa.Plaintext("1")))
    return header[2], header[3]


SEAL_VERSION = _seal_version()


def make_context(scheme: str, poly_modulus_degree: int, coeff_modulus_bits: Sequence[int],
                 plain_modulus_bits: int | None = None) -> sa.SEALContext:
    """A SEALContext at 128-bit security; SEAL refuses parameters weaker than that."""
    parms = sa.EncryptionParameters(_SCHEME_TYPES[scheme])
    parms.set_poly_modulus_degree(poly_modulus_degree)
    parms.set_coeff_modulus(sa.CoeffModulus.Create(poly_modulus_degree, list(coeff_modulus_bits)))
    if plain_modulus_bits is not None:
        parms.set_plain_modulus(1 << plain_modulus_bits)
    context = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise ValueError(f"SEAL refused the {scheme} parameters: {context.parameters_error_message()}")
    return context


def check_header(data: bytes, what: str) -> None:
    """The SEAL 4 header must be intact and describe exactly these bytes."""
    if len(data) < HEADER.size:
        raise SealObjectError(f"{what}: {len(data)} bytes is too short for a SEAL object")
    magic, header_size, major, _minor, compression, reserved, size = HEADER.unpack_from(data)
    if magic != SEAL_MAGIC or header_size != HEADER.size or reserved != 0:
        raise SealObjectError(f"{what}: not a SEAL object (bad header)")
    if major != SEAL_VERSION[0]:
        raise SealObjectError(f"{what}: written by SEAL {major}.x, this service runs SEAL {SEAL_VERSION[0]}")
    if compression not in SUPPORTED_COMPRESSION:
        raise SealObjectError(f"{what}: unknown compression mode {compression}")
    if size != len(data):
        raise SealObjectError(f"{what}: the header says {size} bytes, {len(data)} arrived")


def load_object(obj: object, data: bytes, context: sa.SEALContext, what: str) -> None:
    """Load a SEAL object from request bytes, or raise SealObjectError saying what is wrong."""
    check_header(data, what)
    try:
        FILES.load(obj, data, context)
    except (RuntimeError, ValueError, TypeError, MemoryError) as error:
        raise SealObjectError(f"{what}: SEAL rejected it ({error})") from None


def load_ciphertext(data: bytes, context: sa.SEALContext, ntt_form: bool, what: str) -> sa.Ciphertext:
    """A fresh two-part ciphertext at the context's first data level, in the expected NTT form."""
    ciphertext = sa.Ciphertext()
    load_object(ciphertext, data, context, what)
    if list(ciphertext.parms_id()) != list(context.first_parms_id()):
        raise SealObjectError(f"{what}: encrypted under other parameters or at another level")
    if ciphertext.size() != 2:
        raise SealObjectError(f"{what}: has {ciphertext.size()} parts; a fresh ciphertext has 2")
    if ciphertext.is_ntt_form() != ntt_form:
        raise SealObjectError(f"{what}: wrong NTT form for this scheme")
    return ciphertext


def plaintext_from_coefficients(coefficients: np.ndarray, context: sa.SEALContext) -> sa.Plaintext:
    """A coefficient-domain plaintext holding these values (each below the plain modulus).

    sealapi cannot set coefficients from Python in bulk, so this writes SEAL's uncompressed
    serialization of a Plaintext (zero parms_id, coefficient count, scale, DynArray) and loads it,
    which also makes SEAL check every coefficient.
    """
    values = np.ascontiguousarray(coefficients, dtype="<u8")
    array = struct.pack("<Q", values.size) + values.tobytes()
    array = _header(len(array)) + array
    body = bytes(32) + struct.pack("<Qd", values.size, 1.0) + array
    plaintext = sa.Plaintext()
    FILES.load(plaintext, _header(len(body)) + body, context)
    return plaintext


def _header(body_size: int) -> bytes:
    return HEADER.pack(SEAL_MAGIC, HEADER.size, SEAL_VERSION[0], SEAL_VERSION[1], 0, 0, HEADER.size + body_size)


def galois_element(step: int, poly_modulus_degree: int) -> int:
    """SEAL's Galois element for a left rotation by ``step`` slots (CKKS)."""
    if step >= 0:
        return pow(3, step, 2 * poly_modulus_degree)
    return pow(3, poly_modulus_degree // 2 + step, 2 * poly_modulus_degree)


class Seal4Scheme:
    """What ``ckks`` and ``bfv`` share: ciphertext checks, the key cache, timing, base64.

    Subclasses set ``name``, ``version``, ``descriptor``, ``context``, ``ciphertext_count``,
    ``ntt_form`` and implement ``load_keys`` (blob bytes -> loaded public material) and
    ``compute`` (ciphertexts, public material -> result bytes).
    """

    name: str
    version: str
    descriptor: dict
    context: sa.SEALContext
    ciphertext_count: int
    ntt_form: bool

    def __init__(self, cache_bytes: int) -> None:
        self._cache = KeyCache(cache_bytes)

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"

    def wait_ready(self) -> None:
        """Ready as soon as constructed (everything runs in this process)."""

    def close(self) -> None:
        """Nothing to stop; the cache goes with the object."""

    def decode_ciphertexts(self, ciphertexts: list[bytes]) -> list[sa.Ciphertext]:
        """The request's ciphertexts, loaded and checked by SEAL against this scheme's context."""
        if len(ciphertexts) != self.ciphertext_count:
            raise RequestRejected(
                400, "bad_request",
                f"The {self.name} scheme takes {self.ciphertext_count} ciphertext(s), not {len(ciphertexts)}.",
            )
        loaded = []
        for index, data in enumerate(ciphertexts):
            try:
                ciphertext = load_ciphertext(data, self.context, self.ntt_form,
                                             f"ciphertext {index}")
                self.check_ciphertext(ciphertext, f"ciphertext {index}")
                loaded.append(ciphertext)
            except SealObjectError as error:
                raise RequestRejected(422, "ciphertext_invalid", f"Not a {self.name} ciphertext: {error}.") from None
        return loaded

    def check_ciphertext(self, ciphertext: sa.Ciphertext, what: str) -> None:
        """Scheme-specific checks of a loaded request ciphertext; raise SealObjectError."""

    def load_keys(self, blob: bytes) -> object:
        raise NotImplementedError

    def compute(self, ciphertexts: list[sa.Ciphertext], keys: object) -> list[bytes]:
        raise NotImplementedError

    def evaluate(self, keys: KeyReference, ciphertexts: list[sa.Ciphertext]) -> Evaluation:
        """Scores as result ciphertexts; the key blob is fetched and loaded on a cache miss only."""
        entry = self._cache.get(keys.cache_key)
        key_fetch_s = 0.0
        if entry is None:
            started = time.perf_counter()
            blob = keys.fetch()
            try:
                loaded = self.load_keys(blob)
            except SealObjectError as error:
                raise RequestRejected(422, "key_invalid", f"Not {self.name} public material: {error}.") from None
            entry = ((loaded, len(blob)), 2 * len(blob))
            self._cache.put(keys.cache_key, *entry)
            key_fetch_s = time.perf_counter() - started
            cache_hit = False
        else:
            cache_hit = True
        (loaded, blob_bytes), _ = entry
        started = time.perf_counter()
        try:
            results = self.compute(ciphertexts, loaded)
        except (RuntimeError, ValueError) as error:
            raise RequestRejected(422, "seal_rejected", f"SEAL could not evaluate: {error}.") from None
        return Evaluation(results, cache_hit, blob_bytes, key_fetch_s, time.perf_counter() - started)

    @staticmethod
    def encode_results(results: list[bytes]) -> list[str]:
        return [base64.b64encode(item).decode("ascii") for item in results]
