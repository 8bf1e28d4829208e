"""The ``bfv`` scheme, client half: Microsoft SEAL 4 BFV with coefficient packing, no evaluation keys.

Pixels are quantised to 0..255 and packed as polynomial coefficients: pixels 0-391 plus a
constant 1 (for the bias) in ciphertext 0, pixels 392-783 in ciphertext 1, both encrypted with
the secret key in seeded form. The public material is the *public encryption key*: the service
uses it only to re-randomise the masked result (service/schemes/bfv.py says why). Class c's score,
times 255 * 2^15, is coefficient 392 + 393 c of the single result; all others are random.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
from tenseal import sealapi as sa

from lib.schemes.base import N_FEATURES, checked_pixels, checked_results
from lib.schemes.seal4 import FILES, Seal4Client, load_result, make_context, plaintext_from_coefficients

POLY_MODULUS_DEGREE = 4096
COEFF_MODULUS_BITS = [36, 36, 37]
PLAIN_MODULUS_BITS = 32
PIXEL_LEVELS = 255
WEIGHT_SCALE_BITS = 15
PIXELS_PER_CIPHERTEXT = 392
OUTPUT_COEFFICIENTS = [PIXELS_PER_CIPHERTEXT + (PIXELS_PER_CIPHERTEXT + 1) * c for c in range(10)]
_MAX_RESULT_BYTES = 512 * 1024  # a real result is about 90 KB


def bfv_descriptor() -> dict[str, Any]:
    """The descriptor this client sends; the service must run exactly these parameters."""
    return {
        "name": "bfv",
        "version": "1",
        "params": {
            "library": "SEAL 4 (tenseal.sealapi)",
            "security_bits": 128,
            "poly_modulus_degree": POLY_MODULUS_DEGREE,
            "coeff_modulus_bits": list(COEFF_MODULUS_BITS),
            "plain_modulus_bits": PLAIN_MODULUS_BITS,
            "pixel_levels": PIXEL_LEVELS,
            "weight_scale_bits": WEIGHT_SCALE_BITS,
            "pixels_per_ciphertext": PIXELS_PER_CIPHERTEXT,
            "output_coefficients": list(OUTPUT_COEFFICIENTS),
        },
    }


def quantise_pixels(pixels: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1] as integers 0..255 (what the scheme computes on)."""
    return np.rint(pixels * PIXEL_LEVELS).astype(np.uint64)


class BfvClient(Seal4Client):
    """One BFV key pair: keygen in the constructor, then public_material, encrypt, decrypt."""

    name = "bfv"
    version = "1"
    result_count = 1

    def __init__(self) -> None:
        super().__init__()
        self._context = make_context("bfv", POLY_MODULUS_DEGREE, COEFF_MODULUS_BITS, PLAIN_MODULUS_BITS)
        keygen = sa.KeyGenerator(self._context)
        secret = keygen.secret_key()
        self._secret_key = secret  # stays in this object; only encryptor and decryptor use it
        public_key = sa.PublicKey()
        keygen.create_public_key(public_key)
        self._public = FILES.to_bytes(public_key)
        self._encryptor = sa.Encryptor(self._context, secret)
        self._decryptor = sa.Decryptor(self._context, secret)

    @property
    def descriptor(self) -> dict[str, Any]:
        return bfv_descriptor()

    def public_material(self) -> bytes:
        """The public encryption key (for the service's re-randomisation; it cannot decrypt)."""
        return self._public

    def encrypt(self, x: np.ndarray) -> list[str]:
        levels = quantise_pixels(checked_pixels(x, N_FEATURES))
        texts = []
        for half in range(2):
            coefficients = np.zeros(PIXELS_PER_CIPHERTEXT + 1, dtype=np.uint64)
            coefficients[:PIXELS_PER_CIPHERTEXT] = levels[half * PIXELS_PER_CIPHERTEXT : (half + 1) * PIXELS_PER_CIPHERTEXT]
            if half == 0:
                coefficients[PIXELS_PER_CIPHERTEXT] = 1  # multiplies the bias
            with self._lock:
                plaintext = plaintext_from_coefficients(coefficients, self._context)
                data = FILES.to_bytes(self._encryptor.encrypt_symmetric(plaintext))
            texts.append(base64.b64encode(data).decode("ascii"))
        return texts

    def decrypt(self, results: Sequence[str]) -> np.ndarray:
        (text,) = checked_results(results, self.result_count, 4 * _MAX_RESULT_BYTES // 3 + 4)
        ciphertext = load_result(text, self._context, False, _MAX_RESULT_BYTES)
        with self._lock:  # (the noise margin of the service's result is proven in tests/test_schemes.py)
            plaintext = sa.Plaintext()
            self._decryptor.decrypt(ciphertext, plaintext)
            raw = np.array([plaintext.data(i) if i < plaintext.coeff_count() else 0 for i in OUTPUT_COEFFICIENTS],
                           dtype=np.int64)
        modulus = 1 << PLAIN_MODULUS_BITS
        signed = np.where(raw >= modulus // 2, raw - modulus, raw)
        return signed.astype(np.float64) / (PIXEL_LEVELS * 2.0**WEIGHT_SCALE_BITS)
