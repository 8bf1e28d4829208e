"""The ``ckks`` scheme, client half: Microsoft SEAL 4 CKKS, one ciphertext each way.

The 784 pixels, zero-padded to 1024, fill both halves of the 2048 slots (so the service's
rotations act on each copy), encoded at scale 2^24 and encrypted with the secret key in seeded
form, which halves the request. The public material is only the 8 Galois keys the service's
rotations use (steps 1, 8, 16, ..., 512), about 0.5 MB. Class c's score comes back in slot c
(c < 8) or 1024 + c - 8. Layout and reasoning: service/schemes/ckks.py and docs/contract.md.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
from tenseal import sealapi as sa

from lib.errors import InvalidInput
from lib.schemes.base import N_CLASSES, N_FEATURES, checked_pixels, checked_results
from lib.schemes.seal4 import FILES, Seal4Client, load_result, make_context

POLY_MODULUS_DEGREE = 4096
COEFF_MODULUS_BITS = [54, 55]
INPUT_SCALE_BITS = 24
WEIGHT_SCALE_BITS = 21
BLOCK = 1024
GALOIS_STEPS = [1, 8, 16, 32, 64, 128, 256, 512]
OUTPUT_SLOTS = [0, 1, 2, 3, 4, 5, 6, 7, 1024, 1025]
_MAX_RESULT_BYTES = 256 * 1024  # a real result is about 62 KB


def ckks_descriptor() -> dict[str, Any]:
    """The descriptor this client sends; the service must run exactly these parameters."""
    return {
        "name": "ckks",
        "version": "1",
        "params": {
            "library": "SEAL 4 (tenseal.sealapi)",
            "security_bits": 128,
            "poly_modulus_degree": POLY_MODULUS_DEGREE,
            "coeff_modulus_bits": list(COEFF_MODULUS_BITS),
            "input_scale_bits": INPUT_SCALE_BITS,
            "weight_scale_bits": WEIGHT_SCALE_BITS,
            "galois_steps": list(GALOIS_STEPS),
            "output_slots": list(OUTPUT_SLOTS),
        },
    }


def _galois_element(step: int) -> int:
    return pow(3, step, 2 * POLY_MODULUS_DEGREE)


class CkksClient(Seal4Client):
    """One CKKS key pair: keygen in the constructor, then public_material, encrypt, decrypt."""

    name = "ckks"
    version = "1"
    result_count = 1

    def __init__(self) -> None:
        super().__init__()
        self._context = make_context("ckks", POLY_MODULUS_DEGREE, COEFF_MODULUS_BITS)
        keygen = sa.KeyGenerator(self._context)
        secret = keygen.secret_key()
        self._secret_key = secret  # stays in this object; only encryptor and decryptor use it
        self._public = FILES.to_bytes(keygen.create_galois_keys([_galois_element(s) for s in GALOIS_STEPS]))
        self._encoder = sa.CKKSEncoder(self._context)
        self._encryptor = sa.Encryptor(self._context, secret)
        self._decryptor = sa.Decryptor(self._context, secret)

    @property
    def descriptor(self) -> dict[str, Any]:
        return ckks_descriptor()

    def public_material(self) -> bytes:
        """The 8 Galois keys, seeded and compressed as SEAL saves them."""
        return self._public

    def encrypt(self, x: np.ndarray) -> list[str]:
        pixels = checked_pixels(x, N_FEATURES)
        slots = np.zeros(2 * BLOCK)
        slots[:N_FEATURES] = pixels
        slots[BLOCK : BLOCK + N_FEATURES] = pixels
        with self._lock:
            plaintext = sa.Plaintext()
            self._encoder.encode(slots.tolist(), self._context.first_parms_id(), 2.0**INPUT_SCALE_BITS, plaintext)
            data = FILES.to_bytes(self._encryptor.encrypt_symmetric(plaintext))
        return [base64.b64encode(data).decode("ascii")]

    def decrypt(self, results: Sequence[str]) -> np.ndarray:
        (text,) = checked_results(results, self.result_count, 4 * _MAX_RESULT_BYTES // 3 + 4)
        ciphertext = load_result(text, self._context, True, _MAX_RESULT_BYTES)
        if ciphertext.scale != 2.0 ** (INPUT_SCALE_BITS + WEIGHT_SCALE_BITS):
            raise InvalidInput("The result ciphertext has a scale this scheme's service does not produce.")
        with self._lock:
            plaintext = sa.Plaintext()
            self._decryptor.decrypt(ciphertext, plaintext)
            slots = np.asarray(self._encoder.decode_double(plaintext))
        scores = slots[OUTPUT_SLOTS]
        if scores.shape != (N_CLASSES,) or not np.isfinite(scores).all():
            raise InvalidInput("The decrypted scores are not finite numbers.")
        return scores.astype(np.float64)
