"""The ``bfv`` scheme, server half: Microsoft SEAL 4 BFV with coefficient packing, no evaluation keys.

Parameters and layout: ``BFV`` in service/shared/specs.py, which the client half in
lib/schemes/bfv.py holds too (docs/contract.md):
- Pixels are quantised to 0..255. The first 392 go into ciphertext 0 as the polynomial
  sum_i x_i X^i, with a constant 1 at X^392 for the bias; the other 392 go into ciphertext 1.
- For half h the service builds the plaintext P_h = sum_c X^(o_c) sum_j w_(c, 392h+j) X^(-j),
  weights as round(w * 2^15) (and the bias as round(b * 255 * 2^15)), o_c = 392 + 393 c.
  In ct_0 * P_0 + ct_1 * P_1 coefficient o_c is exactly class c's score times 255 * 2^15: the
  cross terms of class c stay within o_c +- 392 and the negacyclic wrap lands below X^392.
- Two ciphertext-by-plaintext products (one per half-image, each covering all 10 classes), in the
  NTT domain, summed into ONE result ciphertext. No Galois or relinearisation keys are needed.

Why the result must be masked and re-randomised: every other coefficient of the product is a
combination of weights, so a crafted query (a unit vector) would read the model straight out of
them; and its second polynomial is c1 * P, which a client who knows c1 could divide out. So every
non-output coefficient gets fresh uniform randomness mod t, added as a fresh encryption under the
client's *public key* (the only public material this scheme uploads), which also replaces c1 by
c1 * P + u * pk1 for a fresh secret u.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from tenseal import sealapi as sa

from service.schemes.seal4 import Seal4Scheme, polynomial_bytes
from service.shared.seal4 import FILES, load_object, make_context, plaintext_from_coefficients
from service.shared.specs import BFV

P = BFV.params


def quantised_model(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer weights round(w * 2^15) and biases round(b * 255 * 2^15)."""
    scale = 2.0**P.weight_scale_bits
    return np.rint(coef * scale).astype(np.int64), np.rint(intercept * P.pixel_levels * scale).astype(np.int64)


def score_bound(weights: np.ndarray, biases: np.ndarray) -> int:
    """The largest |score| in fixed point any 0..255 image can produce."""
    positive = P.pixel_levels * np.clip(weights, 0, None).sum(axis=1) + np.clip(biases, 0, None)
    negative = P.pixel_levels * np.clip(-weights, 0, None).sum(axis=1) + np.clip(-biases, 0, None)
    return int(max(positive.max(), negative.max()))


def weight_polynomials(weights: np.ndarray, biases: np.ndarray) -> list[np.ndarray]:
    """P_0 and P_1 as signed integer coefficient vectors of length N."""
    polynomials = []
    width = P.pixels_per_ciphertext
    reversed_index = np.arange(width)
    for half in range(2):
        poly = np.zeros(P.poly_modulus_degree, dtype=np.int64)
        for c, offset in enumerate(P.output_coefficients):
            poly[offset - reversed_index] = weights[c, half * width + reversed_index]
            if half == 0:
                poly[offset - width] = biases[c]
        polynomials.append(poly)
    return polynomials


class Rerandomiser:
    """Fresh encryptions of fresh masks under one client's public key, each used for exactly one result.

    Public-key encryption is the costliest step of a bfv request (about 1.5 ms on 2 cores) and it
    does not depend on the request, so while the worker is idle a few are made ahead of time (see
    ``MaskRefiller``); a request that finds none ready makes its own.
    """

    def __init__(self, context: sa.SEALContext, public_key: sa.PublicKey,
                 fresh_mask: Callable[[], sa.Plaintext], depth: int = 2) -> None:
        self._encryptor = sa.Encryptor(context, public_key)
        self._fresh_mask = fresh_mask
        self._ready: deque[sa.Ciphertext] = deque()
        self._lock = threading.Lock()
        self.depth = depth

    def _fresh(self) -> sa.Ciphertext:
        mask = self._fresh_mask()
        encrypted = sa.Ciphertext()
        with self._lock:  # one Encryptor, one caller at a time
            self._encryptor.encrypt(mask, encrypted)
        return encrypted

    def take(self) -> sa.Ciphertext:
        """A fresh encrypted mask nobody has seen (popped, so never handed out twice)."""
        try:
            return self._ready.popleft()
        except IndexError:
            return self._fresh()

    @property
    def full(self) -> bool:
        return len(self._ready) >= self.depth

    def add_one(self) -> None:
        """Make one encrypted mask ahead of time."""
        self._ready.append(self._fresh())


class MaskRefiller:
    """Refills the masks of recently used keys, but only while no request is running.

    SEAL holds the GIL, so refilling during a request would only slow it down; under a steady
    stream of requests the worker never idles for ``IDLE_S`` and every request makes its own mask.
    """

    IDLE_S = 0.003

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._last_finished = 0.0
        self._wanted: deque[Rerandomiser] = deque(maxlen=8)
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="bfv-mask-refiller", daemon=True)
        self._thread.start()

    def touch(self) -> None:
        """A request arrived (its ciphertexts are being decoded)."""
        with self._lock:
            self._last_finished = time.monotonic()

    def request_started(self) -> None:
        with self._lock:
            self._running += 1

    def request_finished(self, used: Rerandomiser) -> None:
        with self._lock:
            self._running -= 1
            self._last_finished = time.monotonic()
            if used not in self._wanted:
                self._wanted.append(used)
        self._wake.set()

    def _idle(self) -> bool:
        with self._lock:
            return self._running == 0 and time.monotonic() - self._last_finished >= self.IDLE_S

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            time.sleep(self.IDLE_S)
            if self._closed or not self._idle():
                continue
            with self._lock:
                target = next((item for item in self._wanted if not item.full), None)
                if target is None:
                    self._wake.clear()
                    continue
            target.add_one()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)


class BfvScheme(Seal4Scheme[Rerandomiser]):
    """Two ct x pt products, summed, masked and re-randomised into one result ciphertext."""

    spec = BFV
    ntt_form = False

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, cache_bytes: int, *,
                 mask_result: bool = True) -> None:
        """``mask_result=False`` exists only so the test can show what the mask protects."""
        super().__init__(cache_bytes)
        self.mask_result = mask_result
        self.context = make_context(P)
        weights, biases = quantised_model(coef, intercept)
        bound = score_bound(weights, biases)
        if 2 * bound >= 1 << P.plain_modulus_bits:
            raise ValueError(f"the model's fixed-point scores reach {bound}; t = 2^{P.plain_modulus_bits} is too small")
        self._evaluator = sa.Evaluator(self.context)
        plain_modulus = 1 << P.plain_modulus_bits
        self._products = []
        for poly in weight_polynomials(weights, biases):
            plaintext = plaintext_from_coefficients(np.mod(poly, plain_modulus).astype(np.uint64), self.context)
            in_ntt = sa.Plaintext()
            self._evaluator.transform_to_ntt(plaintext, self.context.first_parms_id(), in_ntt)
            self._products.append(in_ntt)
        self._keep = np.ones(P.poly_modulus_degree, dtype=bool)
        self._keep[list(P.output_coefficients)] = False
        self._mask_bits = np.uint64((1 << P.plain_modulus_bits) - 1)
        self._refiller = MaskRefiller()

    def close(self) -> None:
        self._refiller.close()

    def decode_ciphertexts(self, ciphertexts: list[bytes]) -> list[sa.Ciphertext]:
        self._refiller.touch()
        return super().decode_ciphertexts(ciphertexts)

    def cached_bytes(self, keys: Rerandomiser) -> int:
        """Twice the public key's 2 polynomials over all moduli (what the Encryptor holds: measured
        here, 0.386 MB per cached key without masks), plus the masks made ahead (each a ciphertext
        of 2 polynomials over the data moduli). The blob is 0.13 MB; a cached key costs 0.66 MB.
        """
        moduli = len(P.coeff_modulus_bits)
        key = 2 * polynomial_bytes(P.poly_modulus_degree, moduli)
        mask = 2 * polynomial_bytes(P.poly_modulus_degree, moduli - 1)
        return 2 * key + keys.depth * mask

    def load_keys(self, blob: bytes) -> Rerandomiser:
        """The client's public key, as the source of fresh encryptions of zero for re-randomising."""
        public_key = sa.PublicKey()
        load_object(public_key, blob, self.context, "public key")
        return Rerandomiser(self.context, public_key, self.fresh_mask)

    def fresh_mask(self) -> sa.Plaintext:
        """Uniform random coefficients mod t (from the OS), zero at the output coefficients."""
        mask = np.frombuffer(os.urandom(8 * P.poly_modulus_degree), dtype="<u8") & self._mask_bits
        return plaintext_from_coefficients(np.where(self._keep, mask, np.uint64(0)), self.context)

    def compute(self, ciphertexts: list[sa.Ciphertext], keys: Rerandomiser) -> list[bytes]:
        self._refiller.request_started()
        try:
            return self._masked_product(ciphertexts, keys)
        finally:
            self._refiller.request_finished(keys)

    def _masked_product(self, ciphertexts: list[sa.Ciphertext], keys: Rerandomiser) -> list[bytes]:
        evaluator = self._evaluator
        result = None
        for ciphertext, weights in zip(ciphertexts, self._products, strict=True):
            in_ntt = sa.Ciphertext()
            evaluator.transform_to_ntt(ciphertext, in_ntt)
            evaluator.multiply_plain_inplace(in_ntt, weights)
            if result is None:
                result = in_ntt
            else:
                evaluator.add_inplace(result, in_ntt)
        evaluator.transform_from_ntt_inplace(result)
        if self.mask_result:
            evaluator.add_inplace(result, keys.take())
        return [FILES.to_bytes(result)]
