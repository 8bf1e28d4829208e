"""The ``bfv`` scheme, client half: Microsoft SEAL 4 BFV with coefficient packing, no evaluation keys.

Pixels are quantised to 0..255 and packed as polynomial coefficients: pixels 0-391 plus a
constant 1 (for the bias) in ciphertext 0, pixels 392-783 in ciphertext 1, both encrypted with
the secret key in seeded form. The public material is the *public encryption key*: the service
uses it only to re-randomise the masked result (service/schemes/bfv.py says why). Class c's score,
times 255 * 2^15, is coefficient 392 + 393 c of the single result; all others are random.
Parameters: ``BFV`` in service/shared/specs.py, the one definition both halves hold.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
from tenseal import sealapi as sa

from lib.schemes.base import N_FEATURES, checked_pixels, checked_results
from lib.schemes.seal4 import Seal4Client, load_result
from service.shared.seal4 import FILES, plaintext_from_coefficients
from service.shared.specs import BFV

P = BFV.params
_MAX_RESULT_BYTES = 512 * 1024  # a real result is about 90 KB
_OUTPUTS = list(P.output_coefficients)
_SCALE = P.pixel_levels * 2.0**P.weight_scale_bits


def quantise_pixels(pixels: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1] as integers 0..255 (what the scheme computes on)."""
    return np.rint(pixels * P.pixel_levels).astype(np.uint64)


class BfvClient(Seal4Client):
    """One BFV key pair: keygen in the constructor, then public_material, encrypt, decrypt."""

    spec = BFV

    def _make_public_material(self, keygen: sa.KeyGenerator) -> bytes:
        public_key = sa.PublicKey()
        keygen.create_public_key(public_key)
        return FILES.to_bytes(public_key)

    def public_material(self) -> bytes:
        """The public encryption key (for the service's re-randomisation; it cannot decrypt)."""
        return self._public

    def encrypt(self, x: np.ndarray) -> list[str]:
        levels = quantise_pixels(checked_pixels(x, N_FEATURES))
        width = P.pixels_per_ciphertext
        texts = []
        for half in range(2):
            coefficients = np.zeros(width + 1, dtype=np.uint64)
            coefficients[:width] = levels[half * width : (half + 1) * width]
            if half == 0:
                coefficients[width] = 1  # multiplies the bias
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
            raw = np.array([plaintext.data(i) if i < plaintext.coeff_count() else 0 for i in _OUTPUTS],
                           dtype=np.int64)
        modulus = 1 << P.plain_modulus_bits
        signed = np.where(raw >= modulus // 2, raw - modulus, raw)
        return signed.astype(np.float64) / _SCALE
