"""The ``ckks`` scheme, client half: Microsoft SEAL 4 CKKS, one ciphertext each way.

The 784 pixels, zero-padded to 1024, fill both halves of the 2048 slots (so the service's
rotations act on each copy), encoded at scale 2^24 and encrypted with the secret key in seeded
form, which halves the request. The public material is only the 8 Galois keys the service's
rotations use (steps 1, 8, 16, ..., 512), about 0.5 MB. Class c's score comes back in slot c
(c < 8) or 1024 + c - 8. Parameters: ``CKKS`` in service/shared/specs.py, the one definition
both halves hold; layout and reasoning: service/schemes/ckks.py and docs/contract.md.
"""

from __future__ import annotations

import numpy as np
from tenseal import sealapi as sa

from lib.schemes.base import N_FEATURES, checked_pixels
from lib.schemes.seal4 import CkksSlotsClient
from service.shared.seal4 import FILES, galois_element
from service.shared.specs import CKKS

P = CKKS.params


class CkksClient(CkksSlotsClient):
    """One CKKS key pair: keygen in the constructor, then public_material, encrypt, decrypt."""

    spec = CKKS

    def _make_public_material(self, keygen: sa.KeyGenerator) -> bytes:
        elements = [galois_element(step, P.poly_modulus_degree) for step in P.galois_steps]
        return FILES.to_bytes(keygen.create_galois_keys(elements))

    def public_material(self) -> bytes:
        """The 8 Galois keys, seeded and compressed as SEAL saves them."""
        return self._public

    def _result_scale(self) -> float:
        return 2.0 ** (P.input_scale_bits + P.weight_scale_bits)

    def encrypt(self, x: np.ndarray) -> list[str]:
        pixels = checked_pixels(x, N_FEATURES)
        block = P.block
        slots = np.zeros(2 * block)
        slots[:N_FEATURES] = pixels
        slots[block : block + N_FEATURES] = pixels
        return self._encrypt_slots(slots, 2.0**P.input_scale_bits)
