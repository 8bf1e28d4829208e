"""The ``ckks`` scheme, client half: Microsoft SEAL 4 CKKS, one ciphertext each way.

The 784 pixels, zero-padded to 1024, fill both halves of the 2048 slots (so the service's
rotations act on each copy), encoded at scale 2^24 and encrypted with the secret key in seeded
form, which halves the request. The public material is only the 8 Galois keys the service's
rotations use (steps 1, 8, 16, ..., 512), about 0.5 MB. Class c's score comes back in slot c
(c < 8) or 1024 + c - 8. Parameters: ``CKKS`` in service/shared/specs.py, the one definition
both halves hold; layout and reasoning: service/schemes/ckks.py and docs/contract.md.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
from tenseal import sealapi as sa

from lib.errors import InvalidInput
from lib.schemes.base import N_CLASSES, N_FEATURES, checked_pixels, checked_results
from lib.schemes.seal4 import Seal4Client, load_result
from service.shared.seal4 import FILES, galois_element
from service.shared.specs import CKKS

P = CKKS.params
_MAX_RESULT_BYTES = 256 * 1024  # a real result is about 62 KB


class CkksClient(Seal4Client):
    """One CKKS key pair: keygen in the constructor, then public_material, encrypt, decrypt."""

    spec = CKKS

    def __init__(self) -> None:
        super().__init__()
        self._encoder = sa.CKKSEncoder(self._context)

    def _make_public_material(self, keygen: sa.KeyGenerator) -> bytes:
        elements = [galois_element(step, P.poly_modulus_degree) for step in P.galois_steps]
        return FILES.to_bytes(keygen.create_galois_keys(elements))

    def public_material(self) -> bytes:
        """The 8 Galois keys, seeded and compressed as SEAL saves them."""
        return self._public

    def encrypt(self, x: np.ndarray) -> list[str]:
        pixels = checked_pixels(x, N_FEATURES)
        block = P.block
        slots = np.zeros(2 * block)
        slots[:N_FEATURES] = pixels
        slots[block : block + N_FEATURES] = pixels
        with self._lock:
            plaintext = sa.Plaintext()
            self._encoder.encode(slots.tolist(), self._context.first_parms_id(), 2.0**P.input_scale_bits, plaintext)
            data = FILES.to_bytes(self._encryptor.encrypt_symmetric(plaintext))
        return [base64.b64encode(data).decode("ascii")]

    def decrypt(self, results: Sequence[str]) -> np.ndarray:
        (text,) = checked_results(results, self.result_count, 4 * _MAX_RESULT_BYTES // 3 + 4)
        ciphertext = load_result(text, self._context, True, _MAX_RESULT_BYTES)
        if ciphertext.scale != 2.0 ** (P.input_scale_bits + P.weight_scale_bits):
            raise InvalidInput("The result ciphertext has a scale this scheme's service does not produce.")
        with self._lock:
            plaintext = sa.Plaintext()
            self._decryptor.decrypt(ciphertext, plaintext)
            slots = np.asarray(self._encoder.decode_double(plaintext))
        scores = slots[list(P.output_slots)]
        if scores.shape != (N_CLASSES,) or not np.isfinite(scores).all():
            raise InvalidInput("The decrypted scores are not finite numbers.")
        return scores.astype(np.float64)
