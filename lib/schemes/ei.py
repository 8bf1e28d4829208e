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
Streamlit server). ``check_ciphertext`` (service/shared/seal3.py, the SEAL 3.5 layer both halves
share) therefore re-does in Python every check SEAL makes when it loads a ciphertext (header,
zlib stream, parameter id, metadata, sizes, every coefficient below its prime), and the native
code gets only the uncompressed bytes it has checked. The primes and parameter ids are derived
from the ``EI`` spec (the package's ``parameters.json``) exactly as SEAL derives them, and
checked once against a real ciphertext, so they cannot drift from the installed library.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import threading
from collections.abc import Sequence

import numpy as np
from encrypted.inference.eiclient import EILinearRegressionClient
from encrypted.inference.internal import einative

from lib.errors import InvalidInput
from lib.schemes.base import N_FEATURES, KeyPair, checked_pixels
from service.shared.seal3 import CiphertextLayout, check_ciphertext
from service.shared.seal_header import SealFormatError, read_header
from service.shared.specs import EI

__all__ = ["MAX_RESULTS", "EiClient"]

MAX_RESULTS = 64  # a result per class; MNIST has 10
_MAX_RESULT_B64_CHARS = 4 * 1024 * 1024  # a real result is about 0.3 MB of base64
_NOT_VALID = "A result ciphertext from the service is not valid"
_layout_lock = threading.Lock()
_layout: CiphertextLayout | None = None


class EiClient(KeyPair):
    """Key owner for one app session: keygen, public_material, encrypt, decrypt."""

    spec = EI

    def __init__(self, n_features: int = N_FEATURES) -> None:
        super().__init__()
        # verbose stays False: the package prints the secret key when verbose.
        self._client = EILinearRegressionClient(verbose=False)
        self._n_features = n_features
        self._public: bytes | None = None

    @property
    def key_id(self) -> str:
        """32-character id of this key pair (a hash of the secret key, as the package defines it)."""
        return str(self._client.key_id)

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
        values = checked_pixels(x, self._n_features)
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
            try:
                checked.append(check_ciphertext(raw, layout))
            except SealFormatError as error:
                raise InvalidInput(f"{_NOT_VALID}: {error}.") from None
        scores = np.empty(len(checked), dtype=np.float64)
        with self._lock:
            ptr = self._client.seal_instance.native_ptr
            out = ctypes.c_double()
            for index, raw in enumerate(checked):
                buf = (ctypes.c_byte * len(raw)).from_buffer_copy(raw)
                status = einative._einative.DecryptResult(
                    ptr, ctypes.c_uint64(len(raw)), buf, ctypes.byref(out)
                )
                if status != 0:
                    raise InvalidInput(
                        f"Result ciphertext {index} could not be decrypted (SEAL error {status:#x})."
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


def _native_layout(client: EiClient) -> CiphertextLayout:
    """Derive the valid-ciphertext layout once per process and confirm it on a real ciphertext."""
    global _layout
    with _layout_lock:
        if _layout is None:
            probe = client._probe_ciphertext()
            layout = CiphertextLayout.of(EI.params, read_header(probe).version)
            if not layout.is_fresh(probe):
                raise RuntimeError(
                    "encrypted-inference's ciphertexts do not match the parameters service/shared/seal3.py derives; "
                    "the installed package is not the one this code was written for"
                )
            _layout = layout
        return _layout
