"""The ``network`` scheme, client half: a neural network under SEAL 4 CKKS, one ciphertext each way.

The 784 pixels go into the 4096 slots as service/shared/network_layout.py places them (each pixel 4
times), encoded at scale 2^24 and encrypted with the secret key in seeded form. The public material
is the 12 Galois keys the service's rotations use (steps 1, 2, 4, ..., 2048) and the relinearisation
keys for its one ciphertext square, saved back to back, about 5 MB. The result comes back rescaled
to the last data prime; class c's score is in slot 128 c. Parameters: ``NETWORK`` in
service/shared/specs.py; what the service does: service/schemes/network.py.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
from tenseal import sealapi as sa

from lib.errors import InvalidInput
from lib.schemes.base import N_CLASSES, N_FEATURES, checked_pixels, checked_results
from lib.schemes.seal4 import Seal4Client, load_result
from service.shared.network_layout import slot_pixels
from service.shared.seal4 import FILES, galois_element, rescaled_prime
from service.shared.specs import NETWORK

P = NETWORK.params
_MAX_RESULT_BYTES = 256 * 1024  # a real result is about 131 KB
_SLOT_PIXELS = slot_pixels(P)


class NetworkClient(Seal4Client):
    """One CKKS key pair for the network: keygen in the constructor, then public_material, encrypt, decrypt."""

    spec = NETWORK

    def __init__(self) -> None:
        super().__init__()
        self._encoder = sa.CKKSEncoder(self._context)
        layer1 = 2.0 ** (P.input_scale_bits + P.layer1_scale_bits)
        # As SEAL tracks it: squared, divided by the prime the rescale drops, times layer 2's scale.
        self._result_scale = layer1 * layer1 / rescaled_prime(self._context) * 2.0**P.layer2_scale_bits

    def _make_public_material(self, keygen: sa.KeyGenerator) -> bytes:
        elements = [galois_element(step, P.poly_modulus_degree) for step in P.galois_steps]
        return FILES.to_bytes(keygen.create_galois_keys(elements)) + FILES.to_bytes(keygen.create_relin_keys())

    def public_material(self) -> bytes:
        """The Galois keys then the relinearisation keys, each seeded and compressed as SEAL saves them."""
        return self._public

    def encrypt(self, x: np.ndarray) -> list[str]:
        pixels = checked_pixels(x, N_FEATURES)
        slots = np.where(_SLOT_PIXELS >= 0, pixels[np.maximum(_SLOT_PIXELS, 0)], 0.0)
        with self._lock:
            plaintext = sa.Plaintext()
            self._encoder.encode(slots.tolist(), self._context.first_parms_id(), 2.0**P.input_scale_bits, plaintext)
            data = FILES.to_bytes(self._encryptor.encrypt_symmetric(plaintext))
        return [base64.b64encode(data).decode("ascii")]

    def decrypt(self, results: Sequence[str]) -> np.ndarray:
        (text,) = checked_results(results, self.result_count, 4 * _MAX_RESULT_BYTES // 3 + 4)
        ciphertext = load_result(text, self._context, True, _MAX_RESULT_BYTES, last_level=True)
        if ciphertext.scale != self._result_scale:
            raise InvalidInput("The result ciphertext has a scale this scheme's service does not produce.")
        with self._lock:
            plaintext = sa.Plaintext()
            self._decryptor.decrypt(ciphertext, plaintext)
            slots = np.asarray(self._encoder.decode_double(plaintext))
        scores = slots[list(P.output_slots)]
        if scores.shape != (N_CLASSES,) or not np.isfinite(scores).all():
            raise InvalidInput("The decrypted scores are not finite numbers.")
        return scores.astype(np.float64)
