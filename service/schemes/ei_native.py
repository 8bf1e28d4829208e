"""The seed scheme's homomorphic dot products, computed fast.

`EIServer.predict` (encrypted-inference 0.9) calls the native `ComputeDotProduct` once per class
and, each time, copies the 8.5 MB key blob into a ctypes array one Python int at a time: 20 of
its 24 seconds. Here the same native function gets buffers made once per request (once per key
set, even), and the classes run on several threads, each with its own native server instance
(ctypes releases the GIL during the call). Results decrypt to the same values as
`EIServer.predict`; `tests/test_ei_native.py` checks that.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from encrypted.inference.internal import einative

_native = einative._einative

CtypesBuffer = ctypes.Array


def to_native_buffer(data: bytes) -> CtypesBuffer:
    """One copy of `data` into a ctypes byte array (memcpy speed, not a per-byte loop)."""
    return (ctypes.c_byte * len(data)).from_buffer_copy(data)


class EiNativeEvaluator:
    """Scores one encrypted 784-vector against a linear model, one native call per class."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, threads: int) -> None:
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        intercept = np.asarray(intercept, dtype=np.float64)
        if coef.ndim != 2 or intercept.shape != (coef.shape[0],):
            raise ValueError(f"model shapes do not fit: coef {coef.shape}, intercept {intercept.shape}")
        self.classes, self.features = coef.shape
        self._weights = [(ctypes.c_double * self.features)(*row) for row in coef]
        self._intercepts = [float(value) for value in intercept]
        self._local = threading.local()
        probe = einative.SEALServerInstance()
        slots = ctypes.c_uint64()
        _native.GetServerSlotCount(probe.native_ptr, ctypes.byref(slots))
        self.ciphertext_count = -(-self.features // slots.value)
        self._result_capacity = probe.get_ciphertext_buffer_size() * self.ciphertext_count
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ei-native")

    def _instance(self) -> einative.SEALServerInstance:
        """A native server instance per thread: they are not shared across threads."""
        instance = getattr(self._local, "instance", None)
        if instance is None:
            instance = self._local.instance = einative.SEALServerInstance()
        return instance

    def _one_class(self, index: int, ciphertexts: CtypesBuffer, keys: CtypesBuffer) -> bytes:
        result = (ctypes.c_byte * self._result_capacity)()
        result_size = ctypes.c_uint64(self._result_capacity)
        error = _native.ComputeDotProduct(
            self._instance().native_ptr,
            ctypes.c_uint64(self.features),
            self._weights[index],
            ctypes.c_double(self._intercepts[index]),
            ctypes.c_uint64(len(ciphertexts)),
            ciphertexts,
            ctypes.c_uint64(len(keys)),
            keys,
            ctypes.byref(result_size),
            result,
        )
        if error != 0:
            raise RuntimeError(f"native ComputeDotProduct failed with {error & 0xFFFFFFFF:#x}")
        return ctypes.string_at(result, result_size.value)

    def evaluate(self, ciphertexts: bytes, keys: CtypesBuffer) -> list[bytes]:
        """The serialized result ciphertext of every class, in class order."""
        ciphertext_buffer = to_native_buffer(ciphertexts)
        futures = [
            self._pool.submit(self._one_class, index, ciphertext_buffer, keys) for index in range(self.classes)
        ]
        return [future.result() for future in futures]
