"""Runs the seed scheme's native code in a child process, with the public-key cache.

SEAL 3.5 inside encrypted-inference aborts the process (std::terminate) on many malformed
ciphertexts and key blobs, and no check in Python can rule that out completely. So the scoring
worker never calls it directly: a child process does, and if the child dies the worker answers
422, starts a new child, and goes on serving.

The child also owns the public-key cache: native key buffers keyed by the caller's cache key
(blob identity plus ETag or verified SHA-256), bounded in bytes, least recently used first out.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from service.errors import RequestRejected
from service.schemes.base import Evaluation, KeyCache

log = logging.getLogger("encrypted_mnist.service")

_READY_TIMEOUT_S = 120.0
# The child's CPU priority below the worker's: an ei evaluation (~0.8 s of a core) yields to the
# few milliseconds a ckks or bfv request needs, so a fast scheme never waits behind ei's work.
CHILD_NICENESS = 19
_EVALUATE_TIMEOUT_S = 300.0


def _child_loop(conn_in: Connection, conn_out: Connection) -> None:
    """The child's loop: ("eval", cache_key, ciphertexts, keys or None) → reply tuple."""
    from service.schemes.ei_key_expansion import expand_seeded_keys
    from service.schemes.ei_native import CtypesBuffer, EiNativeEvaluator, to_native_buffer
    from service.shared.seal_header import SealFormatError

    coef, intercept, threads, cache_bytes = conn_in.recv()
    evaluator = EiNativeEvaluator(coef, intercept, threads)
    cache: KeyCache[tuple[CtypesBuffer, int]] = KeyCache(cache_bytes)
    conn_out.send(("ready",))
    while True:
        try:
            message = conn_in.recv()
        except EOFError:
            return
        _, cache_key, ciphertexts, keys = message
        entry = cache.get(cache_key)
        if entry is None and keys is None:
            conn_out.send(("need_keys",))
            continue
        if entry is None:
            native_keys, blob_bytes = keys
            # Once per key set, so that no native call regenerates the keys' random halves; a blob
            # not laid out as expected stays as it came, for SEAL to judge.
            with contextlib.suppress(SealFormatError):
                native_keys = expand_seeded_keys(native_keys)
            entry = ((to_native_buffer(native_keys), blob_bytes), len(native_keys))
            cache.put(cache_key, *entry)
        (key_buffer, blob_bytes), _ = entry
        started = time.perf_counter()
        try:
            results = evaluator.evaluate(ciphertexts, key_buffer)
        except RuntimeError as error:
            conn_out.send(("error", str(error)))
            continue
        conn_out.send(("ok", results, blob_bytes, time.perf_counter() - started))


def child_entry(read_fd: int, write_fd: int) -> None:
    """Entry point of the child process (started by IsolatedEvaluator with two pipe ends).

    Ctrl-C in a terminal reaches the whole process group; the parent decides when the child stops
    (it closes the pipe), so the child ignores SIGINT instead of printing a traceback. It runs at a
    lower CPU priority than the worker (``CHILD_NICENESS``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(CHILD_NICENESS)
    try:
        _child_loop(Connection(read_fd, writable=False), Connection(write_fd, readable=False))
    except (BrokenPipeError, EOFError):
        return  # the parent closed the pipe (e.g. closed before the child was ready): nobody to tell


class IsolatedEvaluator:
    """The scoring worker's handle on the child process that runs the native computation."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, threads: int, cache_bytes: int) -> None:
        self._args = (np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64), threads,
                      cache_bytes)
        self._lock = threading.Lock()
        self._ready = False
        self.restarts = 0
        self._process, self._tx, self._rx = self._start()

    def _start(self) -> tuple[subprocess.Popen[bytes], Connection, Connection]:
        """Start the child as a fresh interpreter (no fork of a threaded server, no __main__ re-import)."""
        to_child_read, to_child_write = os.pipe()
        from_child_read, from_child_write = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds service/
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        code = f"from service.schemes.ei_isolated import child_entry; child_entry({to_child_read}, {from_child_write})"
        process = subprocess.Popen(
            [sys.executable, "-c", code], pass_fds=(to_child_read, from_child_write), env=env, cwd=root,
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_read)
        os.close(from_child_write)
        tx = Connection(to_child_write, readable=False)
        rx = Connection(from_child_read, writable=False)
        tx.send(self._args)
        self._ready = False
        return process, tx, rx

    def wait_ready(self) -> None:
        """Block until the child has built its native instances."""
        if self._ready:
            return
        reply = self._receive(_READY_TIMEOUT_S)
        if reply[0] != "ready":
            raise RuntimeError(f"native evaluator failed to start: {reply!r}")
        self._ready = True

    def _receive(self, timeout_s: float) -> tuple:
        if not self._rx.poll(timeout_s):
            raise TimeoutError("the native evaluator did not answer in time")
        return self._rx.recv()

    def _restart(self) -> None:
        self.restarts += 1
        self._stop_child()
        log.warning("native evaluator died (exit code %s); restarted", self._process.returncode)
        self._process, self._tx, self._rx = self._start()

    def _stop_child(self) -> None:
        for conn in (self._tx, self._rx):
            conn.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def evaluate(
        self, cache_key: Hashable, ciphertexts: bytes, fetch_keys: Callable[[], tuple[bytes, int]]
    ) -> Evaluation:
        """Evaluate, asking `fetch_keys` only on a cache miss.

        `fetch_keys` returns (keys in the form the native code loads, size of the key blob). It may
        raise RequestRejected; the child is then left waiting, unharmed.
        """
        with self._lock:
            self.wait_ready()
            key_fetch_s = 0.0
            cache_hit = True
            try:
                self._tx.send(("eval", cache_key, ciphertexts, None))
                reply = self._receive(_EVALUATE_TIMEOUT_S)
                if reply[0] == "need_keys":
                    cache_hit = False
                    started = time.perf_counter()
                    keys = fetch_keys()
                    key_fetch_s = time.perf_counter() - started
                    self._tx.send(("eval", cache_key, ciphertexts, keys))
                    reply = self._receive(_EVALUATE_TIMEOUT_S)
            except (EOFError, BrokenPipeError, ConnectionResetError, TimeoutError):
                self._restart()
                if cache_hit:
                    raise RequestRejected(
                        422, "ciphertext_invalid",
                        "SEAL rejected the ciphertext: it is not a valid ciphertext for this scheme's keys.",
                    ) from None
                raise RequestRejected(
                    422, "seal_rejected",
                    "SEAL rejected the ciphertext or the public keys: they are not valid for this scheme.",
                ) from None
            if reply[0] == "error":
                raise RequestRejected(422, "seal_rejected", f"SEAL could not evaluate: {reply[1]}")
            _, results, key_bytes, compute_s = reply
            return Evaluation(results, cache_hit, key_bytes, key_fetch_s, compute_s)

    def close(self) -> None:
        """Stop the child process."""
        with self._lock:
            self._stop_child()
