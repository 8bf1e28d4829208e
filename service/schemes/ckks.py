"""The ``ckks`` scheme, server half: Microsoft SEAL 4 CKKS, one ciphertext in, one out.

Parameters and layout: ``CKKS`` in service/shared/specs.py, which the client half in
lib/schemes/ckks.py holds too (docs/contract.md):
- N = 4096 gives 2048 slots. The request holds the 784 pixels, zero-padded to 1024, twice
  (slots 0-1023 and 1024-2047), so a rotation of the whole vector rotates each copy.
- The 10 class rows are split over the two halves, 8 row positions per half (rows 8-15 unused
  except 8 and 9). Diagonal k (k = 0..7) holds, at slot j, the weight of row r(j) = j mod 8
  (+8 in the second half) for pixel (j + k) mod 1024.
- y = sum_k rot(P_k * x, k) with P_k the diagonal pre-rotated by k, computed Horner-style with
  one rotation key: 8 plaintext products and 7 rotations by 1. Products come first, so rotation
  noise lands on the large product scale, not the input's.
- A rotate-and-sum over steps 8, 16, ..., 512 adds the 128 blocks of each half: slot r (r < 8)
  and slot 1024 + r - 8 (r = 8, 9) end up with row r's dot product. The bias is added last.
- The other 2,038 slots then hold partial sums of the model: for a crafted query (one pixel at 1)
  about 1,270 of them are single weights. So each result gets a fresh mask: uniform noise in
  +-MASK_BOUND (from the OS) on every non-output slot, zero on the outputs.
Galois keys: steps 1, 8, 16, ..., 512 only (8 keys, about 0.5 MB), made by the client.
"""
from __future__ import annotations

import numpy as np
from tenseal import sealapi as sa

from service.schemes.seal4 import (
    Seal4Scheme,
    check_input_scale,
    fresh_slot_mask,
    galois_keys_bytes,
    require_rotations,
)
from service.shared.seal4 import FILES, load_object, make_context
from service.shared.specs import CKKS, N_CLASSES, N_FEATURES

P = CKKS.params
# Each masked slot is uniform in +-MASK_BOUND: thousands of times any partial sum of the model (a
# weight is below 1, a score below 100), and 3 bits below the size SEAL refuses to encode (4096 at
# the result's scale 2^45 with the 54-bit data prime; measured). The outputs stay exact (tested).
MASK_BOUND = 512.0


def diagonals(coef: np.ndarray) -> np.ndarray:
    """The 8 pre-rotated diagonals P_k, shape (8, 2048)."""
    rows, block = P.rows_per_half, P.block
    padded = np.zeros((2 * rows, block))
    padded[:N_CLASSES, :N_FEATURES] = coef
    slot = np.arange(2 * block)
    row = slot % rows + rows * (slot // block)
    column = slot % block
    return np.stack([np.roll(padded[row, (column + k) % block], k) for k in range(rows)])


class CkksScheme(Seal4Scheme[sa.GaloisKeys]):
    """Evaluates the linear model on one CKKS ciphertext with 8 products and 14 rotations."""

    spec = CKKS
    ntt_form = True

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, cache_bytes: int, *,
                 mask_result: bool = True) -> None:
        """``mask_result=False`` exists only so the test can show what the mask protects."""
        super().__init__(cache_bytes)
        self.mask_result = mask_result
        self.context = make_context(P)
        bound = np.abs(coef).sum(axis=1).max() + np.abs(intercept).max()
        headroom = P.coeff_modulus_bits[0] - P.input_scale_bits - P.weight_scale_bits - 1
        if bound >= 2.0**headroom:
            raise ValueError(f"the model's scores can reach {bound:.0f}; ckks has room for {2**headroom}")
        self._evaluator = sa.Evaluator(self.context)
        encoder = self._encoder = sa.CKKSEncoder(self.context)
        parms_id = self.context.first_parms_id()
        self._masked_slots = np.ones(2 * P.block, dtype=bool)
        self._masked_slots[list(P.output_slots)] = False
        self._diagonals = []
        for values in diagonals(coef):
            plaintext = sa.Plaintext()
            encoder.encode(values.tolist(), parms_id, 2.0**P.weight_scale_bits, plaintext)
            self._diagonals.append(plaintext)
        bias = np.zeros(2 * P.block)
        bias[list(P.output_slots)] = intercept
        self._bias = sa.Plaintext()
        encoder.encode(bias.tolist(), parms_id, 2.0 ** (P.input_scale_bits + P.weight_scale_bits), self._bias)

    def check_ciphertext(self, ciphertext: sa.Ciphertext, what: str) -> None:
        check_input_scale(ciphertext.scale, P.input_scale_bits, what)

    def load_keys(self, blob: bytes) -> sa.GaloisKeys:
        """The client's Galois keys: valid for this context and holding every rotation needed."""
        keys = sa.GaloisKeys()
        load_object(keys, blob, self.context, "Galois keys")
        require_rotations(keys, P.galois_steps, P.poly_modulus_degree)
        return keys

    def cached_bytes(self, keys: sa.GaloisKeys) -> int:
        """The loaded Galois keys (``galois_keys_bytes``), 1.15 MB for the 8 of a ckks key set."""
        return galois_keys_bytes(keys.size(), P.poly_modulus_degree, len(P.coeff_modulus_bits))

    def compute(self, ciphertexts: list[sa.Ciphertext], keys: sa.GaloisKeys) -> list[bytes]:
        (x,) = ciphertexts
        evaluator = self._evaluator
        acc = None
        for k in range(P.rows_per_half - 1, -1, -1):
            term = sa.Ciphertext()
            evaluator.multiply_plain(x, self._diagonals[k], term)
            if acc is not None:
                evaluator.add_inplace(term, acc)
            if k > 0:
                evaluator.rotate_vector_inplace(term, 1, keys)
            acc = term
        for step in P.sum_steps:
            rotated = sa.Ciphertext()
            evaluator.rotate_vector(acc, step, keys, rotated)
            evaluator.add_inplace(acc, rotated)
        evaluator.add_plain_inplace(acc, self._bias)
        if self.mask_result:
            evaluator.add_plain_inplace(acc, self.fresh_mask(acc))
        return [FILES.to_bytes(acc)]

    def fresh_mask(self, result: sa.Ciphertext) -> sa.Plaintext:
        """Uniform noise in +-MASK_BOUND (from the OS) on every non-output slot, at the result's level and scale."""
        return fresh_slot_mask(self._encoder, result, self._masked_slots, MASK_BOUND)
