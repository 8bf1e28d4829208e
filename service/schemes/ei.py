"""The seed's scheme, `ei`: encrypted-inference 0.9 (SEAL 3.5 CKKS, N=8192), server half."""
from __future__ import annotations

import base64
import json
from importlib import resources

import numpy as np

from service.errors import RequestRejected
from service.key_source import KeyReference
from service.schemes.base import Evaluation
from service.schemes.ei_isolated import IsolatedEvaluator
from service.schemes.seal3_format import COMPR_NONE, COMPR_ZLIB, SealFormatError, check_objects

SEAL_VERSION = (3, 5)
KEY_OBJECTS = 2  # Galois keys, then relinearization keys, as get_public_keys() writes them


def scheme_parameters() -> dict:
    """encrypted-inference's own parameters.json, so the descriptor cannot drift from the library."""
    raw = json.loads(resources.files("encrypted.inference.internal").joinpath("parameters.json").read_text())
    return {
        "poly_modulus_degree": int(raw["PolyModulusDegree"]),
        "coeff_modulus_bits": [int(bits) for bits in raw["CoeffModulus"]],
        "scale_bits": int(raw["InitialScale"]).bit_length() - 1,
    }


class EiScheme:
    """Validates `ei` inputs and evaluates the linear model on them in an isolated child process."""

    name = "ei"
    version = "0.9"

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, threads: int, cache_bytes: int) -> None:
        self.descriptor = {"name": self.name, "version": self.version, "params": scheme_parameters()}
        self.ciphertext_count = -(-coef.shape[1] // (self.descriptor["params"]["poly_modulus_degree"] // 2))
        self._evaluator = IsolatedEvaluator(coef, intercept, threads, cache_bytes)

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def restarts(self) -> int:
        """How often the native child died on bad input and was replaced."""
        return self._evaluator.restarts

    def wait_ready(self) -> None:
        self._evaluator.wait_ready()

    def decode_ciphertexts(self, ciphertexts: list[bytes]) -> bytes:
        """The request's ciphertexts, checked and concatenated as the native call wants them."""
        if len(ciphertexts) != self.ciphertext_count:
            raise RequestRejected(
                400, "bad_request", f"The ei scheme takes {self.ciphertext_count} ciphertext(s) for 784 pixels."
            )
        checked = []
        for data in ciphertexts:
            try:
                checked.append(check_objects(data, 1, SEAL_VERSION, (COMPR_NONE, COMPR_ZLIB)))
            except SealFormatError as error:
                raise RequestRejected(422, "ciphertext_invalid", f"Not an ei ciphertext: {error}.") from None
        return b"".join(checked)

    @staticmethod
    def check_key_blob(data: bytes) -> bytes:
        """The key blob must be the two SEAL 3.5 objects that get_public_keys() writes.

        Returns them uncompressed, the form the native code loads fastest (see seal3_format).
        """
        try:
            return check_objects(data, KEY_OBJECTS, SEAL_VERSION, (COMPR_NONE, COMPR_ZLIB))
        except SealFormatError as error:
            raise RequestRejected(422, "key_invalid", f"Not an ei public-key blob: {error}.") from None

    def evaluate(self, keys: KeyReference, ciphertexts: bytes) -> Evaluation:
        """Scores of every class, as serialized result ciphertexts."""

        def fetch() -> tuple[bytes, int]:
            blob = keys.fetch()
            return self.check_key_blob(blob), len(blob)

        return self._evaluator.evaluate(keys.cache_key, ciphertexts, fetch)

    @staticmethod
    def encode_results(results: list[bytes]) -> list[str]:
        return [base64.b64encode(item).decode("ascii") for item in results]

    def close(self) -> None:
        self._evaluator.close()
