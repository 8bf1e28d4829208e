"""The ``browser`` scheme, server half: the network's circuit on what a browser tab encrypted.

The tab runs node-seal 6.0.3 (Microsoft SEAL 4.1.2 in WebAssembly): it makes the key pair, saves the
Galois and relinearisation keys (seeded, uncompressed) and encrypts the digit with the secret key.
tenseal's SEAL 4.3 refuses SEAL 4.1 files; seal-python (SEAL 4.4) loads them as they are, with SEAL's
full validation, so this half runs the ``network`` scheme's circuit (service/schemes/network_circuit.py)
on seal-python, with the same parameters, layout, model and mask. Its result goes back through
service/schemes/node_seal_result.py, the one place that turns SEAL 4.4's bytes into SEAL 4.1's.
seal-python is built without zlib and zstd, so every object crosses uncompressed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import seal

from service.schemes.network_circuit import NetworkPlaintexts, evaluate_network, network_values
from service.schemes.node_seal_result import for_node_seal
from service.schemes.seal4 import Seal4Scheme, check_input_scale, galois_keys_bytes
from service.shared.network_model import NetworkWeights
from service.shared.seal4 import check_header, galois_element, split_objects
from service.shared.seal_header import COMPR_NONE, SealFormatError, read_header
from service.shared.specs import BROWSER

P = BROWSER.params


@dataclass(frozen=True)
class BrowserKeys:
    """The tab's public material, loaded by seal-python: Galois keys and relinearisation keys."""

    galois: Any  # seal.GaloisKeys
    relin: Any  # seal.RelinKeys


def make_context() -> Any:
    """seal-python's SEALContext for the network's parameters at 128-bit security."""
    parms = seal.EncryptionParameters(seal.scheme_type.ckks)
    parms.set_poly_modulus_degree(P.poly_modulus_degree)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(P.poly_modulus_degree, list(P.coeff_modulus_bits)))
    context = seal.SEALContext(parms, True, seal.sec_level_type.tc128)
    if not context.parameters_set():
        raise ValueError(f"SEAL refused the parameters {P}: {context.parameter_error_message()}")
    return context


def check_object(data: bytes, what: str) -> None:
    """Before SEAL sees it: an intact SEAL 4 header that describes exactly these bytes, uncompressed."""
    check_header(data, what)
    if read_header(data).compr_mode != COMPR_NONE:
        raise SealFormatError(f"{what}: compressed; this scheme takes SEAL objects uncompressed")


def _loaded(load: Any, data: bytes, what: str) -> Any:
    """``load(data)`` with SEAL's validation, its refusal as SealFormatError."""
    check_object(data, what)
    try:
        return load(data)
    except (RuntimeError, ValueError, TypeError, MemoryError) as error:
        raise SealFormatError(f"{what}: SEAL rejected it ({error})") from None


class BrowserScheme(Seal4Scheme[BrowserKeys]):
    """The network on one CKKS ciphertext from a browser tab: 33 products, 22 rotations, one square."""

    spec = BROWSER
    ntt_form = True

    def __init__(self, network: NetworkWeights, cache_bytes: int, *, mask_result: bool = True) -> None:
        """``mask_result=False`` exists only so a test can show what the mask protects."""
        super().__init__(cache_bytes)
        self.mask_result = mask_result
        self.context = make_context()
        self._evaluator = seal.Evaluator(self.context)
        self._encoder = seal.CKKSEncoder(self.context)
        rescaled = int(self.context.first_context_data().parms().coeff_modulus()[-1].value())
        values = self._values = network_values(network, P, rescaled)
        self.result_scale = values.result_scale
        self._model = NetworkPlaintexts(
            diagonals=[self._encoded(d, 2.0**P.layer1_scale_bits) for d in values.diagonals],
            hidden_bias=self._encoded(values.hidden_bias, values.layer1_scale),
            layer2=self._encoded(values.layer2, 2.0**P.layer2_scale_bits, self.context.last_parms_id()),
        )

    def _encoded(self, values: np.ndarray, scale: float, parms_id: Any = None) -> Any:
        """A CKKS plaintext at ``scale``: seal-python encodes at the top level; it is then switched down
        to ``parms_id`` (dropping primes keeps the same integer coefficients)."""
        plaintext = self._encoder.encode(np.ascontiguousarray(values, dtype=np.float64), scale)
        if parms_id is not None:
            self._evaluator.mod_switch_to_inplace(plaintext, parms_id)
        return plaintext

    def load_request_ciphertext(self, data: bytes, what: str) -> Any:
        """A fresh two-part ciphertext at the first data level in NTT form, loaded by SEAL 4.4."""

        def load(raw: bytes) -> Any:
            ciphertext = seal.Ciphertext()
            ciphertext.load_bytes(self.context, raw)
            return ciphertext

        ciphertext = _loaded(load, data, what)
        if list(ciphertext.parms_id()) != list(self.context.first_parms_id()):
            raise SealFormatError(f"{what}: encrypted under other parameters or at another level")
        if ciphertext.size() != 2:
            raise SealFormatError(f"{what}: has {ciphertext.size()} parts; a fresh ciphertext has 2")
        if not ciphertext.is_ntt_form():
            raise SealFormatError(f"{what}: wrong NTT form for this scheme")
        return ciphertext

    def check_ciphertext(self, ciphertext: Any, what: str) -> None:
        check_input_scale(ciphertext.scale(), P.input_scale_bits, what)

    def load_keys(self, blob: bytes) -> BrowserKeys:
        """Galois keys then relinearisation keys, as the tab concatenated them; each checked by SEAL."""
        galois_bytes, relin_bytes = split_objects(blob, 2, "the public material")
        galois = _loaded(self.context.from_galois_str, galois_bytes, "Galois keys")
        relin = _loaded(self.context.from_relin_str, relin_bytes, "relinearisation keys")
        missing = [step for step in P.galois_steps
                   if not galois.has_key(galois_element(step, P.poly_modulus_degree))]
        if missing:
            raise SealFormatError(f"Galois keys lack the rotation(s) {missing}")
        if relin.size() != 1:
            raise SealFormatError(f"expected one relinearisation key, got {relin.size()}")
        return BrowserKeys(galois, relin)

    def cached_bytes(self, keys: BrowserKeys) -> int:
        """Every loaded key-switching key (``galois_keys_bytes``), as for ``network``: 10.2 MB a key set."""
        count = keys.galois.size() + keys.relin.size()
        return galois_keys_bytes(count, P.poly_modulus_degree, len(P.coeff_modulus_bits))

    def compute(self, ciphertexts: list[Any], keys: BrowserKeys) -> list[bytes]:
        (x,) = ciphertexts
        result = evaluate_network(_SealPythonOps(self._evaluator, keys), x, self._model, P)
        values = self._values.bias_and_mask(self.mask_result)
        self._evaluator.add_plain_inplace(result, self._encoded(values, result.scale(), result.parms_id()))
        try:
            return [for_node_seal(result.to_string())]
        except SealFormatError as error:  # seal-python wrote something else: a bug here, not the client's
            raise RuntimeError(f"the result could not be written for node-seal: {error}") from None


class _SealPythonOps:
    """``CkksOps`` on seal-python, whose evaluator returns new ciphertexts."""

    def __init__(self, evaluator: Any, keys: BrowserKeys) -> None:
        self._evaluator, self._keys = evaluator, keys

    def rotated(self, ciphertext: Any, step: int) -> Any:
        return self._evaluator.rotate_vector(ciphertext, step, self._keys.galois)

    def rotate_inplace(self, ciphertext: Any, step: int) -> None:
        self._evaluator.rotate_vector_inplace(ciphertext, step, self._keys.galois)

    def product(self, ciphertext: Any, plaintext: Any) -> Any:
        return self._evaluator.multiply_plain(ciphertext, plaintext)

    def add_product(self, accumulator: Any, ciphertext: Any, plaintext: Any) -> None:
        self._evaluator.add_inplace(accumulator, self._evaluator.multiply_plain(ciphertext, plaintext))

    def add_inplace(self, accumulator: Any, ciphertext: Any) -> None:
        self._evaluator.add_inplace(accumulator, ciphertext)

    def add_plain_inplace(self, accumulator: Any, plaintext: Any) -> None:
        self._evaluator.add_plain_inplace(accumulator, plaintext)

    def multiply_plain_inplace(self, ciphertext: Any, plaintext: Any) -> None:
        self._evaluator.multiply_plain_inplace(ciphertext, plaintext)

    def square_relinearise_rescale(self, ciphertext: Any) -> None:
        self._evaluator.square_inplace(ciphertext)
        self._evaluator.relinearize_inplace(ciphertext, self._keys.relin)
        self._evaluator.rescale_to_next_inplace(ciphertext)
