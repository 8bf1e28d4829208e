"""The seed's scheme, `ei`: encrypted-inference 0.9 (SEAL 3.5 CKKS, N=8192), server half.

Its parameters are ``EI`` in service/shared/specs.py (read from the package's parameters.json);
the SEAL 3.5 format checks are service/shared/seal3.py; the native code runs in child processes:
the replica's shared pool under gunicorn (service/schemes/ei_pool.py), else a child of its own.
"""
from __future__ import annotations

import numpy as np

from service.errors import RequestRejected
from service.key_source import KeyReference
from service.schemes.base import Evaluation, SchemeBase
from service.schemes.ei_isolated import IsolatedEvaluator
from service.schemes.ei_pool import PoolClient
from service.shared.seal3 import SEAL_VERSION, check_objects
from service.shared.seal_header import COMPR_NONE, COMPR_ZLIB, SealFormatError
from service.shared.specs import EI

KEY_OBJECTS = 2  # Galois keys, then relinearization keys, as get_public_keys() writes them
_MODES = (COMPR_NONE, COMPR_ZLIB)


class EiScheme(SchemeBase):
    """Validates `ei` inputs and evaluates the linear model on them in an isolated child process."""

    spec = EI

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, threads: int, cache_bytes: int) -> None:
        pool = PoolClient.from_env()
        self._evaluator: IsolatedEvaluator | PoolClient = (
            pool if pool is not None else IsolatedEvaluator(coef, intercept, threads, cache_bytes)
        )

    @property
    def restarts(self) -> int:
        """How often this worker's own native child died on bad input and was replaced (0 with a pool)."""
        return self._evaluator.restarts if isinstance(self._evaluator, IsolatedEvaluator) else 0

    def wait_ready(self) -> None:
        self._evaluator.wait_ready()

    def decode_ciphertexts(self, ciphertexts: list[bytes]) -> bytes:
        """The request's ciphertexts, checked and concatenated as the native call wants them."""
        if len(ciphertexts) != self.spec.ciphertext_count:
            raise RequestRejected(
                422, "ciphertext_invalid",
                f"The ei scheme takes {self.spec.ciphertext_count} ciphertext(s) for 784 pixels, not {len(ciphertexts)}.",
            )
        checked = []
        for data in ciphertexts:
            try:
                checked.append(check_objects(data, 1, SEAL_VERSION, _MODES))
            except SealFormatError as error:
                raise RequestRejected(422, "ciphertext_invalid", f"Not an ei ciphertext: {error}.") from None
        return b"".join(checked)

    @staticmethod
    def check_key_blob(data: bytes) -> bytes:
        """The key blob must be the two SEAL 3.5 objects that get_public_keys() writes.

        Returns them uncompressed, the form the native code loads fastest (see service/shared/seal3.py).
        """
        try:
            return check_objects(data, KEY_OBJECTS, SEAL_VERSION, _MODES)
        except SealFormatError as error:
            raise RequestRejected(422, "key_invalid", f"Not an ei public-key blob: {error}.") from None

    def evaluate(self, keys: KeyReference, ciphertexts: bytes) -> Evaluation:
        """Scores of every class, as serialized result ciphertexts."""

        def fetch() -> tuple[bytes, int]:
            blob = keys.fetch()
            return self.check_key_blob(blob), len(blob)

        return self._evaluator.evaluate(keys.cache_key, ciphertexts, fetch)

    def close(self) -> None:
        self._evaluator.close()
