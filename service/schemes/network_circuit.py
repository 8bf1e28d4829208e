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
The caller then adds layer 2's bias and the mask.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from service.shared.specs import NetworkParams

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
