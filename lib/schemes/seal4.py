"""The client side that ``ckks`` and ``bfv`` share: key generation, a random key id, result checks.

The SEAL 4 plumbing itself (serialization, context, plaintext crafting, header checks) is
service/shared/seal4.py, which the service runs too; this module turns its errors into
``InvalidInput`` for the session to report.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from tenseal import sealapi as sa

from lib.errors import InvalidInput
from lib.schemes.base import KeyPair
from service.shared.seal4 import SealFormatError, load_ciphertext, make_context


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
