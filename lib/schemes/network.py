"""The ``network`` scheme, client half: a neural network under SEAL 4 CKKS, one ciphertext each way.

The 784 pixels go into the 4096 slots as service/shared/network_layout.py places them (each pixel 4
times), encoded at scale 2^24 and encrypted with the secret key in seeded form. The public material
is the 12 Galois keys the service's rotations use (steps 1, 2, 4, ..., 2048) and the relinearisation
keys for its one ciphertext square, saved back to back, about 5 MB. The result comes back rescaled
to the last data prime; class c's score is in slot 128 c. Parameters: ``NETWORK`` in
service/shared/specs.py; what the service does: service/schemes/network.py.
"""

from __future__ import annotations

import numpy as np
from tenseal import sealapi as sa

from lib.schemes.base import N_FEATURES, checked_pixels
from lib.schemes.seal4 import CkksSlotsClient
from service.shared.network_layout import slot_pixels
from service.shared.seal4 import FILES, galois_element, rescaled_prime
from service.shared.specs import NETWORK

P = NETWORK.params
_SLOT_PIXELS = slot_pixels(P)


class NetworkClient(CkksSlotsClient):
    """One CKKS key pair for the network: keygen in the constructor, then public_material, encrypt, decrypt."""

    spec = NETWORK
    _result_at_last_level = True

    def _make_public_material(self, keygen: sa.KeyGenerator) -> bytes:
        elements = [galois_element(step, P.poly_modulus_degree) for step in P.galois_steps]
        return FILES.to_bytes(keygen.create_galois_keys(elements)) + FILES.to_bytes(keygen.create_relin_keys())

    def public_material(self) -> bytes:
        """The Galois keys then the relinearisation keys, each seeded and compressed as SEAL saves them."""
        return self._public

    def _result_scale(self) -> float:
        """As SEAL tracks it: layer 1's scale squared, divided by the prime the rescale drops, times layer 2's."""
        layer1 = 2.0 ** (P.input_scale_bits + P.layer1_scale_bits)
        return layer1 * layer1 / rescaled_prime(self._context) * 2.0**P.layer2_scale_bits

    def encrypt(self, x: np.ndarray) -> list[str]:
        pixels = checked_pixels(x, N_FEATURES)
        slots = np.where(_SLOT_PIXELS >= 0, pixels[np.maximum(_SLOT_PIXELS, 0)], 0.0)
        return self._encrypt_slots(slots, 2.0**P.input_scale_bits)
