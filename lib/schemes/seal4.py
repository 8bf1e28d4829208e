"""The client side that ``ckks`` and ``bfv`` share: key generation, a random key id, result checks.

The SEAL 4 plumbing itself (serialization, context, plaintext crafting, header checks) is
service/shared/seal4.py, which the service runs too; this module turns its errors into
``InvalidInput`` for the session to report.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence

import numpy as np
from tenseal import sealapi as sa

from lib.errors import InvalidInput
from lib.schemes.base import N_CLASSES, KeyPair, checked_results
from service.shared.seal4 import FILES, SealFormatError, load_ciphertext, make_context


class Seal4Client(KeyPair):
    """A SEAL 4 key pair, named by 32 random hex characters (also its public-material blob's name).

    The constructor generates the keys; subclasses say which public material the service gets.
    """

    def __init__(self) -> None:
        super().__init__()
        self._key_id = secrets.token_hex(16)
        self._context = make_context(self.spec.params)
        keygen = sa.KeyGenerator(self._context)
        secret = keygen.secret_key()
        self._secret_key = secret  # stays in this object; only encryptor and decryptor use it
        self._encryptor = sa.Encryptor(self._context, secret)
        self._decryptor = sa.Decryptor(self._context, secret)
        self._public = self._make_public_material(keygen)

    def _make_public_material(self, keygen: sa.KeyGenerator) -> bytes:
        """The serialized public material the service needs (it can never decrypt with it)."""
        raise NotImplementedError

    @property
    def key_id(self) -> str:
        return self._key_id


class CkksSlotsClient(Seal4Client):
    """What the CKKS clients (``ckks``, ``network``) share: slots in, seeded; 10 slots out, checked.

    Subclasses say where the pixels go (``encrypt``) and which scale and level the result has.
    """

    _max_result_bytes = 256 * 1024  # a real result: ckks about 62 kB, network about 131 kB
    _result_at_last_level = False

    def __init__(self) -> None:
        super().__init__()
        self._encoder = sa.CKKSEncoder(self._context)

    def _result_scale(self) -> float:
        raise NotImplementedError

    def _encrypt_slots(self, slots: np.ndarray, scale: float) -> list[str]:
        """The slot vector encoded at ``scale`` and encrypted with the secret key (seeded), as base64."""
        with self._lock:
            plaintext = sa.Plaintext()
            self._encoder.encode(slots.tolist(), self._context.first_parms_id(), scale, plaintext)
            data = FILES.to_bytes(self._encryptor.encrypt_symmetric(plaintext))
        return [base64.b64encode(data).decode("ascii")]

    def decrypt(self, results: Sequence[str]) -> np.ndarray:
        """The one result ciphertext, checked (size, SEAL, level, scale), decrypted: the output slots."""
        limit = self._max_result_bytes
        (text,) = checked_results(results, self.result_count, 4 * limit // 3 + 4)
        ciphertext = load_result(text, self._context, True, limit, last_level=self._result_at_last_level)
        if ciphertext.scale != self._result_scale():
            raise InvalidInput("The result ciphertext has a scale this scheme's service does not produce.")
        with self._lock:
            plaintext = sa.Plaintext()
            self._decryptor.decrypt(ciphertext, plaintext)
            slots = np.asarray(self._encoder.decode_double(plaintext))
        scores = slots[list(self.spec.params.output_slots)]
        if scores.shape != (N_CLASSES,) or not np.isfinite(scores).all():
            raise InvalidInput("The decrypted scores are not finite numbers.")
        return scores.astype(np.float64)


def load_result(text: str, context: sa.SEALContext, ntt_form: bool, max_bytes: int, *,
                last_level: bool = False) -> sa.Ciphertext:
    """A result ciphertext from the service, checked: base64, size, header, SEAL validation, level
    (the first data level, or the last with ``last_level``), form."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("A result ciphertext is not valid base64.") from None
    if len(data) > max_bytes:
        raise InvalidInput(f"A result ciphertext has {len(data)} bytes; this scheme's are at most {max_bytes}.")
    try:
        return load_ciphertext(data, context, ntt_form, "the result ciphertext", last_level=last_level)
    except SealFormatError as error:
        raise InvalidInput(f"A result ciphertext from the service is not valid: {error}.") from None
