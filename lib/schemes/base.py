"""The client half of the scheme interface (the server half is service/schemes/base.py).

A client scheme object *is* one key pair: it is made by key generation, hands out the public
material that goes to blob storage, encrypts a 784-pixel image into base64 ciphertexts and
decrypts the service's result ciphertexts into 10 scores. The secret key never leaves it: no
method returns it, ``repr`` shows only the key id, and it refuses to be pickled. What the scheme
*is* (name, version, parameters, layout) is its ``SchemeSpec``, shared with the service.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from lib.errors import InvalidInput
from service.shared.specs import N_CLASSES, N_FEATURES, SchemeSpec

__all__ = ["N_CLASSES", "N_FEATURES", "ClientScheme", "KeyPair", "checked_pixels", "checked_results"]


class ClientScheme(Protocol):
    """What a session needs of a scheme's client half."""

    @property
    def key_id(self) -> str:
        """Id of this key pair; also the public-material blob's name."""

    @property
    def descriptor(self) -> dict[str, Any]:
        """{"name", "version", "params"}, sent with every request; the service must run the same."""

    @property
    def scheme_id(self) -> str:
        """``name-version``, as the service echoes it in responses."""

    @property
    def result_count(self) -> int:
        """How many result ciphertexts a response carries."""

    def public_material(self) -> bytes:
        """The public keys the service needs, serialized (uploaded to blob storage once)."""

    def encrypt(self, x: np.ndarray) -> list[str]:
        """Encrypt 784 pixels in [0, 1] into base64 ciphertexts."""

    def decrypt(self, results: Sequence[str]) -> np.ndarray:
        """Check and decrypt the service's result ciphertexts into 10 float64 scores."""


class KeyPair:
    """What every client half shares: its spec, a lock for its native objects, and safekeeping.

    Subclasses set ``spec`` and provide ``key_id``; ``repr`` shows only the key id, and pickling
    or copying is refused, so the secret key cannot leave the object by accident.
    """

    spec: ClassVar[SchemeSpec[Any]]

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one native call at a time on this key
        self.scheme_id = self.spec.label  # ``name-version``, as the service echoes it in responses
        self.result_count = self.spec.result_count  # result ciphertexts per response

    @property
    def key_id(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds a secret key and cannot be pickled or copied")

    @property
    def descriptor(self) -> dict[str, Any]:
        """The spec's descriptor, sent with every request (a fresh copy)."""
        return self.spec.descriptor()


def checked_pixels(x: object, n_features: int = N_FEATURES) -> np.ndarray:
    """``x`` as float64 of shape (n_features,) in [0, 1], or InvalidInput saying what is wrong."""
    try:
        values = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("The input must be an array of numbers.") from None
    if values.shape != (n_features,):
        raise InvalidInput(f"The input must have shape ({n_features},), got {values.shape}.")
    if not np.isfinite(values).all():
        raise InvalidInput("The input holds NaN or infinite values.")
    if values.min() < 0.0 or values.max() > 1.0:
        raise InvalidInput("The input values must lie in [0, 1].")
    return values


def checked_results(results: object, count: int, max_chars: int) -> list[str]:
    """The response's result list: exactly ``count`` non-empty strings of bounded size."""
    if isinstance(results, (str, bytes)) or not isinstance(results, Sequence):
        raise InvalidInput("The service's result must be a list of base64 ciphertexts.")
    if len(results) != count:
        raise InvalidInput(f"The service returned {len(results)} result ciphertexts; this scheme expects {count}.")
    for item in results:
        if not isinstance(item, str) or not item:
            raise InvalidInput("Every result ciphertext must be a non-empty base64 string.")
        if len(item) > max_chars:
            raise InvalidInput("A result ciphertext is larger than this scheme can produce.")
    return list(results)
