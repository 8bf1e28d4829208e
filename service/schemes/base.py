"""The server half of the scheme interface, shared by every scheme (docs/contract.md, "Schemes").

A scheme is defined once, by its ``SchemeSpec`` (service/shared/specs.py: versioned name,
parameters, layout; a request's descriptor must equal the spec's exactly). Its server half checks
the request's ciphertexts, loads the public material from the key blob, and evaluates the linear
model into result ciphertexts. The client half lives in lib/schemes/ and holds the same spec.
"""
from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

from service.key_source import KeyReference
from service.shared.specs import SchemeSpec

C = TypeVar("C")
V = TypeVar("V")


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation did: results, and whether the keys came from the cache."""

    results: list[bytes]
    cache_hit: bool
    key_bytes: int
    """Size of the key blob in storage."""
    key_fetch_s: float
    compute_s: float


class ServerScheme(Protocol[C]):
    """What the scoring service needs of a scheme; ``C`` is its checked form of the request's ciphertexts."""

    @property
    def spec(self) -> SchemeSpec:
        """The scheme's one definition, shared with the client half."""

    def wait_ready(self) -> None:
        """Block until the scheme can evaluate."""

    def decode_ciphertexts(self, ciphertexts: list[bytes]) -> C:
        """Check the request's (base64-decoded) ciphertexts; raise RequestRejected if they are not this scheme's."""

    def evaluate(self, keys: KeyReference, ciphertexts: C) -> Evaluation:
        """Scores of every class as serialized result ciphertexts (keys fetched on a cache miss only)."""

    def encode_results(self, results: list[bytes]) -> list[str]:
        """Result ciphertexts as the response's base64 strings."""

    def close(self) -> None:
        """Free what the scheme holds (child processes, caches)."""


class SchemeBase:
    """What every server half has: its ``spec`` (name, version, label, descriptor) and base64 results."""

    spec: ClassVar[SchemeSpec]

    @staticmethod
    def encode_results(results: list[bytes]) -> list[str]:
        """Result ciphertexts as the response's base64 strings."""
        return [base64.b64encode(item).decode("ascii") for item in results]


class KeyCache(Generic[V]):
    """Byte-bounded LRU map from cache key to (value, size in memory)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self.total_bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[V, int] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Hashable, value: V, size: int) -> None:
        with self._lock:
            if key in self._entries:
                self.total_bytes -= self._entries.pop(key)[1]
            self._entries[key] = (value, size)
            self.total_bytes += size
            while self.total_bytes > self.max_bytes and len(self._entries) > 1:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.total_bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)
