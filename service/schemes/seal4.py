"""The server half that ``ckks`` and ``bfv`` share: request checks, the key cache, timing.

The SEAL 4 plumbing itself (serialization, context, checked loading) is service/shared/seal4.py,
which the client halves import too; this module only turns its errors into contract errors.
"""
from __future__ import annotations

import os
import time
from typing import Any, Generic, TypeVar

import numpy as np
from tenseal import sealapi as sa

from service.errors import RequestRejected
from service.key_source import KeyReference
from service.schemes.base import Evaluation, KeyCache, SchemeBase
from service.shared.seal4 import SealFormatError, galois_element, load_ciphertext

K = TypeVar("K")


def slot_mask_values(masked: np.ndarray, bound: float, offset: np.ndarray | None = None) -> np.ndarray:
    """Fresh uniform noise in +-bound (from the OS) on every slot where ``masked`` is true, zero
    elsewhere, plus ``offset`` if given (e.g. a bias): the values of a result's mask plaintext."""
    uniform = np.frombuffer(os.urandom(8 * masked.size), dtype="<u8") / 2.0**64
    values = np.where(masked, (2.0 * uniform - 1.0) * bound, 0.0)
    return values if offset is None else values + offset


def fresh_slot_mask(encoder: sa.CKKSEncoder, result: sa.Ciphertext, masked: np.ndarray, bound: float, *,
                    offset: np.ndarray | None = None) -> sa.Plaintext:
    """``slot_mask_values`` as a CKKS plaintext at the result's level and scale."""
    plaintext = sa.Plaintext()
    encoder.encode(slot_mask_values(masked, bound, offset).tolist(), result.parms_id(), result.scale, plaintext)
    return plaintext


def check_input_scale(scale: float, scale_bits: int, what: str) -> None:
    """A CKKS request ciphertext's ``scale`` must be the one the scheme encodes its input at."""
    if scale != 2.0**scale_bits:
        raise SealFormatError(f"{what} has scale {scale:g}; this scheme encodes at 2^{scale_bits}")


def require_rotations(keys: sa.GaloisKeys, steps: tuple[int, ...], poly_modulus_degree: int) -> None:
    """The client's Galois keys must hold a key for every rotation step the scheme uses."""
    missing = [step for step in steps if not keys.has_key(galois_element(step, poly_modulus_degree))]
    if missing:
        raise SealFormatError(f"Galois keys lack the rotation(s) {missing}")


def galois_keys_bytes(keys: int, poly_modulus_degree: int, moduli: int) -> int:
    """Memory of ``keys`` loaded key-switching keys (Galois or relinearisation): per data modulus, 2
    polynomials over all moduli; plus the Galois keys' index, which SEAL sizes by N (one vector
    header per slot). Measured here, this books within a few percent of the real growth per key set."""
    per_key = (moduli - 1) * 2 * polynomial_bytes(poly_modulus_degree, moduli)
    return keys * per_key + poly_modulus_degree * _VECTOR_BYTES


_VECTOR_BYTES = 24  # a std::vector header


def polynomial_bytes(poly_modulus_degree: int, moduli: int) -> int:
    """Memory of one RNS polynomial: N coefficients per modulus, 8 bytes each."""
    return poly_modulus_degree * moduli * 8


class Seal4Scheme(SchemeBase, Generic[K]):
    """What the SEAL 4 schemes share (``ckks``, ``bfv``, ``network``, ``browser``); ``K`` is the loaded
    public material.

    Subclasses set ``spec``, ``context`` and ``ntt_form`` and implement ``load_keys`` (blob bytes
    -> loaded public material), ``compute`` (ciphertexts, public material -> result bytes) and
    ``cached_bytes`` (what the loaded material costs in memory, which the key cache books).
    """

    context: Any  # the binding's SEALContext
    ntt_form: bool

    def __init__(self, cache_bytes: int) -> None:
        self._cache: KeyCache[tuple[K, int]] = KeyCache(cache_bytes)

    def wait_ready(self) -> None:
        """Ready as soon as constructed (everything runs in this process)."""

    def close(self) -> None:
        """Nothing to stop; the cache goes with the object."""

    def decode_ciphertexts(self, ciphertexts: list[bytes]) -> list[Any]:
        """The request's ciphertexts, loaded and checked by SEAL against this scheme's context."""
        count = self.spec.ciphertext_count
        if len(ciphertexts) != count:
            raise RequestRejected(
                422, "ciphertext_invalid",
                f"The {self.spec.name} scheme takes {count} ciphertext(s), not {len(ciphertexts)}.",
            )
        loaded = []
        for index, data in enumerate(ciphertexts):
            try:
                ciphertext = self.load_request_ciphertext(data, f"ciphertext {index}")
                self.check_ciphertext(ciphertext, f"ciphertext {index}")
                loaded.append(ciphertext)
            except SealFormatError as error:
                raise RequestRejected(422, "ciphertext_invalid", f"Not a {self.spec.name} ciphertext: {error}.") from None
        return loaded

    def load_request_ciphertext(self, data: bytes, what: str) -> Any:
        """One request ciphertext loaded by SEAL (tenseal.sealapi; a scheme on another binding overrides
        this): a fresh two-part ciphertext at the first data level, in this scheme's NTT form."""
        return load_ciphertext(data, self.context, self.ntt_form, what)

    def check_ciphertext(self, ciphertext: Any, what: str) -> None:
        """Scheme-specific checks of a loaded request ciphertext; raise SealFormatError."""

    def load_keys(self, blob: bytes) -> K:
        raise NotImplementedError

    def compute(self, ciphertexts: list[Any], keys: K) -> list[bytes]:
        raise NotImplementedError

    def cached_bytes(self, keys: K) -> int:
        """What keeping ``keys`` in the cache costs in memory (SEAL's buffers, not the blob's size)."""
        raise NotImplementedError

    def evaluate(self, keys: KeyReference, ciphertexts: list[Any]) -> Evaluation:
        """Scores as result ciphertexts; the key blob is fetched and loaded on a cache miss only."""
        entry = self._cache.get(keys.cache_key)
        key_fetch_s = 0.0
        cache_hit = entry is not None
        if entry is None:
            started = time.perf_counter()
            blob = keys.fetch()
            try:
                loaded = self.load_keys(blob)
            except SealFormatError as error:
                raise RequestRejected(422, "key_invalid", f"Not {self.spec.name} public material: {error}.") from None
            entry = ((loaded, len(blob)), self.cached_bytes(loaded))
            self._cache.put(keys.cache_key, *entry)
            key_fetch_s = time.perf_counter() - started
        (loaded, blob_bytes), _ = entry
        started = time.perf_counter()
        try:
            results = self.compute(ciphertexts, loaded)
        except (RuntimeError, ValueError) as error:
            raise RequestRejected(422, "seal_rejected", f"SEAL could not evaluate: {error}.") from None
        return Evaluation(results, cache_hit, blob_bytes, key_fetch_s, time.perf_counter() - started)
