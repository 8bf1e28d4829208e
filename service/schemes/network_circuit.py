"""The network's encrypted circuit, written once for any SEAL 4 binding (see service/schemes/network.py).

The ``network`` scheme runs it on ``tenseal.sealapi`` (SEAL 4.3) and the ``browser`` scheme on
``seal-python`` (SEAL 4.4, which reads what node-seal writes in the tab). Each binding supplies a
``CkksOps`` with the request's keys bound in, and the plaintexts encoded once per worker; the steps
and their order, which decide the noise and the cost, are here only:

1. Layer 1, baby-step giant-step: x rotated by 1 .. B-1 (each in as few rotations deep as the
   power-of-two keys allow), T plaintext products with the pre-rotated diagonals, the G giant-step
   sums combined Horner-style with rotations by B; then a rotate-and-sum over the chunks, and the bias.
2. The activation: one ciphertext square, relinearised, then rescaled to the last data prime.
3. Layer 2: one plaintext product and a rotate-and-sum inside each chunk.
The caller then adds layer 2's bias and the mask (``NetworkValues.bias_and_mask``). ``NetworkValues``
holds the model as the slot vectors and scales each binding encodes, checked once against the moduli.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from service.schemes.seal4 import slot_mask_values
from service.shared.network_layout import hidden_bias, layer1_diagonals, layer2_row_weights
from service.shared.network_model import NetworkWeights
from service.shared.specs import NetworkParams

# A masked slot is uniform in +-MASK_BOUND: a hundred times a realistic partial sum (a score is below 20
# on real digits), and small enough that the model's worst case plus the mask fits the last prime
# (checked), since every bit of it is a bit less precision for the scores.
MASK_BOUND = 1024.0

CT = TypeVar("CT")
PT = TypeVar("PT")
PT_contra = TypeVar("PT_contra", contravariant=True)


class CkksOps(Protocol[CT, PT_contra]):
    """The SEAL evaluator calls the circuit makes, with the client's Galois and relinearisation keys bound."""

    def rotated(self, ciphertext: CT, step: int) -> CT:
        """A new ciphertext: ``ciphertext`` rotated left by ``step`` slots."""

    def rotate_inplace(self, ciphertext: CT, step: int) -> None:
        """Rotate left by ``step`` slots in place."""

    def product(self, ciphertext: CT, plaintext: PT_contra) -> CT:
        """A new ciphertext: ``ciphertext`` times ``plaintext``."""

    def add_product(self, accumulator: CT, ciphertext: CT, plaintext: PT_contra) -> None:
        """``accumulator += ciphertext * plaintext``."""

    def add_inplace(self, accumulator: CT, ciphertext: CT) -> None:
        """``accumulator += ciphertext``."""

    def add_plain_inplace(self, accumulator: CT, plaintext: PT_contra) -> None:
        """``accumulator += plaintext``."""

    def multiply_plain_inplace(self, ciphertext: CT, plaintext: PT_contra) -> None:
        """``ciphertext *= plaintext``."""

    def square_relinearise_rescale(self, ciphertext: CT) -> None:
        """Square in place, relinearise back to two parts, rescale to the next prime."""


@dataclass(frozen=True)
class NetworkPlaintexts(Generic[PT]):
    """The model as the circuit multiplies it in: encoded once per worker by each binding."""

    diagonals: Sequence[PT]
    """Layer 1's T diagonals, at the top level (service/shared/network_layout.py)."""
    hidden_bias: PT
    """Layer 1's bias at layer 1's scale, at the top level."""
    layer2: PT
    """Layer 2's row weights, at the last level."""


@dataclass(frozen=True, eq=False)
class NetworkValues:
    """The model as slot vectors, with the scales they are encoded at (``network_values``)."""

    layer1_scale: float
    """The scale of layer 1's result: the input's times the diagonals'."""
    result_scale: float
    """The result's scale as SEAL tracks it: layer 1's squared, over the rescaled prime, times layer 2's."""
    diagonals: np.ndarray
    """(T, S), encoded at 2^layer1_scale_bits."""
    hidden_bias: np.ndarray
    """(S,), encoded at ``layer1_scale``."""
    layer2: np.ndarray
    """(S,), encoded at 2^layer2_scale_bits, at the last level."""
    output_bias: np.ndarray
    masked_slots: np.ndarray

    def bias_and_mask(self, masked: bool = True) -> np.ndarray:
        """Layer 2's bias on the output slots and (unless ``masked`` is false, for a test) fresh noise in
        +-MASK_BOUND from the OS on every other slot: one plaintext's values, at ``result_scale``."""
        slots = self.masked_slots if masked else np.zeros_like(self.masked_slots)
        return slot_mask_values(slots, MASK_BOUND, self.output_bias)


def network_values(network: NetworkWeights, p: NetworkParams, rescaled_prime: int) -> NetworkValues:
    """The network laid out for the circuit (service/shared/network_layout.py), refused if it does not
    have ``p``'s hidden units or its worst case over [0, 1]^784, plus the mask, would wrap a modulus."""
    if network.hidden_units != p.hidden_units:
        raise ValueError(f"the network has {network.hidden_units} hidden units; the scheme runs {p.hidden_units}")
    layer1_scale = 2.0 ** (p.input_scale_bits + p.layer1_scale_bits)
    result_scale = layer1_scale**2 / rescaled_prime * 2.0**p.layer2_scale_bits
    data_bits = sum(p.coeff_modulus_bits[:-1])
    squared = 2 * (math.log2(network.hidden_bound()) + math.log2(layer1_scale))
    result = math.log2(network.logit_bound() + MASK_BOUND) + math.log2(result_scale)
    if squared >= data_bits - 2 or result >= p.coeff_modulus_bits[0] - 2:
        raise ValueError(
            f"the network's worst case needs 2^{squared:.1f} before the rescale and 2^{result:.1f} in the "
            f"result; the moduli hold 2^{data_bits - 2} and 2^{p.coeff_modulus_bits[0] - 2}"
        )
    output_bias = np.zeros(p.slot_count)
    output_bias[list(p.output_slots)] = network.b2
    masked_slots = np.ones(p.slot_count, dtype=bool)
    masked_slots[list(p.output_slots)] = False
    return NetworkValues(layer1_scale, result_scale, layer1_diagonals(network.w1, p), hidden_bias(network.b1, p),
                         layer2_row_weights(network.w2, p), output_bias, masked_slots)  # fmt: skip


def evaluate_network(ops: CkksOps[CT, PT], x: CT, model: NetworkPlaintexts[PT], p: NetworkParams) -> CT:
    """Layer 1, the square and layer 2 on the request ciphertext ``x``; class c's score ends at slot H*c."""
    baby = [x]  # baby[i] = x rotated by i, in as few rotations deep as power-of-two keys allow
    for i in range(1, p.baby_steps):
        power = 1 << (i.bit_length() - 1)
        baby.append(ops.rotated(baby[i - power], power))
    acc: CT | None = None
    for giant in range(p.giant_steps - 1, -1, -1):
        first = giant * p.baby_steps
        inner = ops.product(baby[0], model.diagonals[first])
        for i in range(1, p.baby_steps):
            ops.add_product(inner, baby[i], model.diagonals[first + i])
        if acc is not None:
            ops.rotate_inplace(acc, p.baby_steps)
            ops.add_inplace(inner, acc)
        acc = inner
    assert acc is not None
    _rotate_and_sum(ops, acc, p.hidden_units, p.slot_count)
    ops.add_plain_inplace(acc, model.hidden_bias)
    ops.square_relinearise_rescale(acc)
    ops.multiply_plain_inplace(acc, model.layer2)
    _rotate_and_sum(ops, acc, 1, p.hidden_units)
    return acc


def _rotate_and_sum(ops: CkksOps[CT, PT], acc: CT, first: int, end: int) -> None:
    """acc += acc rotated by first, 2*first, ... below end: every slot gets the sum over its orbit."""
    step = first
    while step < end:
        ops.add_inplace(acc, ops.rotated(acc, step))
        step *= 2
