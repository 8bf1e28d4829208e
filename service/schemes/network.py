"""The ``network`` scheme, server half: a 784 -> 128 -> 10 network under SEAL 4 CKKS.

Parameters: ``NETWORK`` in service/shared/specs.py; slot layout: service/shared/network_layout.py
(both shared with the client half in lib/schemes/network.py). One request ciphertext at the top
level (two 60-bit data primes), one result ciphertext at the last. The circuit (layer 1 in baby and
giant steps, the square, layer 2: 22 rotations, 33 products) is service/schemes/network_circuit.py,
which the ``browser`` scheme runs too; this module binds it to tenseal.sealapi and then:
The other 4,086 slots would hold partial sums of layer 2 (the hidden values times weights), so the
bias and a fresh mask go in with one plaintext: uniform noise in +-MASK_BOUND from the OS on every
non-output slot, the bias on the outputs.
The scales keep any input in [0, 1] within the moduli; the constructor checks that against the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tenseal import sealapi as sa

from service.schemes.network_circuit import MASK_BOUND, NetworkPlaintexts, evaluate_network, network_values
from service.schemes.seal4 import Seal4Scheme, check_input_scale, galois_keys_bytes, require_rotations
from service.shared.network_model import NetworkWeights
from service.shared.seal4 import (
    FILES,
    SealFormatError,
    load_object,
    make_context,
    rescaled_prime,
    split_objects,
)
from service.shared.specs import NETWORK

__all__ = ["MASK_BOUND", "NetworkKeys", "NetworkScheme"]

P = NETWORK.params


@dataclass(frozen=True)
class NetworkKeys:
    """The client's public material, loaded: Galois keys for the rotations, relinearisation keys."""

    galois: sa.GaloisKeys
    relin: sa.RelinKeys


class NetworkScheme(Seal4Scheme[NetworkKeys]):
    """Evaluates the network on one CKKS ciphertext: 33 products, 22 rotations, one square."""

    spec = NETWORK
    ntt_form = True

    def __init__(self, network: NetworkWeights, cache_bytes: int, *, mask_result: bool = True) -> None:
        """``mask_result=False`` exists only so the test can show what the mask protects."""
        super().__init__(cache_bytes)
        self.mask_result = mask_result
        self.context = make_context(P)
        values = self._values = network_values(network, P, rescaled_prime(self.context))
        self.result_scale = values.result_scale
        self._evaluator = sa.Evaluator(self.context)
        encoder = self._encoder = sa.CKKSEncoder(self.context)
        top, last = self.context.first_parms_id(), self.context.last_parms_id()

        def encoded(values: np.ndarray, parms_id: object, scale: float) -> sa.Plaintext:
            plaintext = sa.Plaintext()
            encoder.encode(values.tolist(), parms_id, scale, plaintext)
            return plaintext

        self._model = NetworkPlaintexts(
            diagonals=[encoded(d, top, 2.0**P.layer1_scale_bits) for d in values.diagonals],
            hidden_bias=encoded(values.hidden_bias, top, values.layer1_scale),
            layer2=encoded(values.layer2, last, 2.0**P.layer2_scale_bits),
        )

    def check_ciphertext(self, ciphertext: sa.Ciphertext, what: str) -> None:
        check_input_scale(ciphertext.scale, P.input_scale_bits, what)

    def load_keys(self, blob: bytes) -> NetworkKeys:
        """Galois keys then relinearisation keys, as the client concatenated them; each checked by SEAL."""
        galois_bytes, relin_bytes = split_objects(blob, 2, "the public material")
        galois, relin = sa.GaloisKeys(), sa.RelinKeys()
        load_object(galois, galois_bytes, self.context, "Galois keys")
        load_object(relin, relin_bytes, self.context, "relinearisation keys")
        require_rotations(galois, P.galois_steps, P.poly_modulus_degree)
        if relin.size() != 1:
            raise SealFormatError(f"expected one relinearisation key, got {relin.size()}")
        return NetworkKeys(galois, relin)

    def cached_bytes(self, keys: NetworkKeys) -> int:
        """Every loaded key-switching key (``galois_keys_bytes``): 10.2 MB for a network key set."""
        count = keys.galois.size() + keys.relin.size()
        return galois_keys_bytes(count, P.poly_modulus_degree, len(P.coeff_modulus_bits))

    def compute(self, ciphertexts: list[sa.Ciphertext], keys: NetworkKeys) -> list[bytes]:
        (x,) = ciphertexts
        result = evaluate_network(_TensealOps(self._evaluator, keys), x, self._model, P)
        self._evaluator.add_plain_inplace(result, self._bias_and_mask(result))
        return [FILES.to_bytes(result)]

    def _bias_and_mask(self, result: sa.Ciphertext) -> sa.Plaintext:
        """Layer 2's bias on the output slots and, unless disabled, fresh noise on every other slot."""
        plaintext = sa.Plaintext()
        values = self._values.bias_and_mask(self.mask_result)
        self._encoder.encode(values.tolist(), result.parms_id(), result.scale, plaintext)
        return plaintext


class _TensealOps:
    """``CkksOps`` on tenseal.sealapi: its evaluator writes into destinations, so products share a buffer."""

    def __init__(self, evaluator: sa.Evaluator, keys: NetworkKeys) -> None:
        self._evaluator, self._keys = evaluator, keys
        self._term = sa.Ciphertext()  # one buffer for every product added into an accumulator

    def rotated(self, ciphertext: sa.Ciphertext, step: int) -> sa.Ciphertext:
        out = sa.Ciphertext()
        self._evaluator.rotate_vector(ciphertext, step, self._keys.galois, out)
        return out

    def rotate_inplace(self, ciphertext: sa.Ciphertext, step: int) -> None:
        self._evaluator.rotate_vector_inplace(ciphertext, step, self._keys.galois)

    def product(self, ciphertext: sa.Ciphertext, plaintext: sa.Plaintext) -> sa.Ciphertext:
        out = sa.Ciphertext()
        self._evaluator.multiply_plain(ciphertext, plaintext, out)
        return out

    def add_product(self, accumulator: sa.Ciphertext, ciphertext: sa.Ciphertext, plaintext: sa.Plaintext) -> None:
        self._evaluator.multiply_plain(ciphertext, plaintext, self._term)
        self._evaluator.add_inplace(accumulator, self._term)

    def add_inplace(self, accumulator: sa.Ciphertext, ciphertext: sa.Ciphertext) -> None:
        self._evaluator.add_inplace(accumulator, ciphertext)

    def add_plain_inplace(self, accumulator: sa.Ciphertext, plaintext: sa.Plaintext) -> None:
        self._evaluator.add_plain_inplace(accumulator, plaintext)

    def multiply_plain_inplace(self, ciphertext: sa.Ciphertext, plaintext: sa.Plaintext) -> None:
        self._evaluator.multiply_plain_inplace(ciphertext, plaintext)

    def square_relinearise_rescale(self, ciphertext: sa.Ciphertext) -> None:
        self._evaluator.square_inplace(ciphertext)
        self._evaluator.relinearize_inplace(ciphertext, self._keys.relin)
        self._evaluator.rescale_to_next_inplace(ciphertext)
