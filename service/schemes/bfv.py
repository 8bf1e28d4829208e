"""The ``bfv`` scheme, server half: Microsoft SEAL 4 BFV with coefficient packing, no evaluation keys.

Layout (the client half in lib/schemes/bfv.py writes the same one; docs/contract.md):
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

from service.schemes.seal4 import FILES, Seal4Scheme, load_object, make_context, plaintext_from_coefficients

POLY_MODULUS_DEGREE = 4096
COEFF_MODULUS_BITS = [36, 36, 37]  # SEAL's BFVDefault for N=4096 at 128 bits
PLAIN_MODULUS_BITS = 32
PIXEL_LEVELS = 255
WEIGHT_SCALE_BITS = 15
PIXELS_PER_CIPHERTEXT = 392
N_CLASSES = 10
N_FEATURES = 784
CLASS_SPACING = PIXELS_PER_CIPHERTEXT + 1


def output_coefficients() -> list[int]:
    """Where class c's score is in the result polynomial."""
    return [PIXELS_PER_CIPHERTEXT + CLASS_SPACING * c for c in range(N_CLASSES)]


def descriptor() -> dict:
    """The scheme descriptor requests must repeat."""
    return {
        "name": "bfv",
        "version": "1",
        "params": {
            "library": "SEAL 4 (tenseal.sealapi)",
            "security_bits": 128,
            "poly_modulus_degree": POLY_MODULUS_DEGREE,
            "coeff_modulus_bits": COEFF_MODULUS_BITS,
            "plain_modulus_bits": PLAIN_MODULUS_BITS,
            "pixel_levels": PIXEL_LEVELS,
            "weight_scale_bits": WEIGHT_SCALE_BITS,
            "pixels_per_ciphertext": PIXELS_PER_CIPHERTEXT,
            "output_coefficients": output_coefficients(),
        },
    }


def quantised_model(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer weights round(w * 2^15) and biases round(b * 255 * 2^15)."""
    scale = 2.0**WEIGHT_SCALE_BITS
    return np.rint(coef * scale).astype(np.int64), np.rint(intercept * PIXEL_LEVELS * scale).astype(np.int64)


def score_bound(weights: np.ndarray, biases: np.ndarray) -> int:
    """The largest |score| in fixed point any 0..255 image can produce."""
    positive = PIXEL_LEVELS * np.clip(weights, 0, None).sum(axis=1) + np.clip(biases, 0, None)
    negative = PIXEL_LEVELS * np.clip(-weights, 0, None).sum(axis=1) + np.clip(-biases, 0, None)
    return int(max(positive.max(), negative.max()))


def weight_polynomials(weights: np.ndarray, biases: np.ndarray) -> list[np.ndarray]:
    """P_0 and P_1 as signed integer coefficient vectors of length N."""
    polynomials = []
    offsets = np.array(output_coefficients())
    reversed_index = np.arange(PIXELS_PER_CIPHERTEXT)
    for half in range(2):
        poly = np.zeros(POLY_MODULUS_DEGREE, dtype=np.int64)
        for c, offset in enumerate(offsets):
            poly[offset - reversed_index] = weights[c, half * PIXELS_PER_CIPHERTEXT + reversed_index]
            if half == 0:
                poly[offset - PIXELS_PER_CIPHERTEXT] = biases[c]
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


class BfvScheme(Seal4Scheme):
    """Two ct x pt products, summed, masked and re-randomised into one result ciphertext."""

    name = "bfv"
    version = "1"
    ciphertext_count = 2
    ntt_form = False

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, cache_bytes: int, *,
                 mask_result: bool = True) -> None:
        """``mask_result=False`` exists only so the test can show what the mask protects."""
        super().__init__(cache_bytes)
        self.descriptor = descriptor()
        self.mask_result = mask_result
        self.context = make_context("bfv", POLY_MODULUS_DEGREE, COEFF_MODULUS_BITS, PLAIN_MODULUS_BITS)
        weights, biases = quantised_model(coef, intercept)
        bound = score_bound(weights, biases)
        if 2 * bound >= 1 << PLAIN_MODULUS_BITS:
            raise ValueError(f"the model's fixed-point scores reach {bound}; t = 2^{PLAIN_MODULUS_BITS} is too small")
        self._evaluator = sa.Evaluator(self.context)
        plain_modulus = 1 << PLAIN_MODULUS_BITS
        self._products = []
        for poly in weight_polynomials(weights, biases):
            plaintext = plaintext_from_coefficients(np.mod(poly, plain_modulus).astype(np.uint64), self.context)
            in_ntt = sa.Plaintext()
            self._evaluator.transform_to_ntt(plaintext, self.context.first_parms_id(), in_ntt)
            self._products.append(in_ntt)
        self._keep = np.ones(POLY_MODULUS_DEGREE, dtype=bool)
        self._keep[output_coefficients()] = False
        self._refiller = MaskRefiller()

    def close(self) -> None:
        self._refiller.close()

    def decode_ciphertexts(self, ciphertexts: list[bytes]) -> list[sa.Ciphertext]:
        self._refiller.touch()
        return super().decode_ciphertexts(ciphertexts)

    def load_keys(self, blob: bytes) -> Rerandomiser:
        """The client's public key, as the source of fresh encryptions of zero for re-randomising."""
        public_key = sa.PublicKey()
        load_object(public_key, blob, self.context, "public key")
        return Rerandomiser(self.context, public_key, self.fresh_mask)

    def fresh_mask(self) -> sa.Plaintext:
        """Uniform random coefficients mod t (from the OS), zero at the output coefficients."""
        mask = np.frombuffer(os.urandom(8 * POLY_MODULUS_DEGREE), dtype="<u8") & np.uint64((1 << PLAIN_MODULUS_BITS) - 1)
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
