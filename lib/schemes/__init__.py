"""The three encryption schemes the app offers, each a client half of the scheme interface.

- ``ei``: the seed's encrypted-inference 0.9 (Microsoft SEAL 3.5 CKKS), as in the Azure ML how-to.
- ``ckks``: Microsoft SEAL 4 CKKS, one ciphertext each way, 8 Galois keys.
- ``bfv``: Microsoft SEAL 4 BFV coefficient packing, no evaluation keys at all.

The interface is lib/schemes/base.py; the service's halves are in service/schemes/; the wire
format and each scheme's parameters are in docs/contract.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib.errors import InvalidInput
from lib.schemes.base import ClientScheme
from lib.schemes.bfv import BfvClient, bfv_descriptor
from lib.schemes.ckks import CkksClient, ckks_descriptor
from lib.schemes.ei import EiClient, ei_descriptor

__all__ = [
    "DEFAULT_SCHEME",
    "SCHEME_INFO",
    "SCHEME_NAMES",
    "ClientScheme",
    "SchemeInfo",
    "descriptor",
    "new_client",
]

SCHEME_NAMES = ("ei", "ckks", "bfv")
DEFAULT_SCHEME = "ckks"


@dataclass(frozen=True)
class SchemeInfo:
    """What the UI says about a scheme."""

    name: str
    title: str
    library: str
    summary: str
    public_material: str
    security: str
    error_source: str
    """Why decrypted scores differ from the plaintext model's."""


_SECURITY = "128-bit: SEAL refuses weaker parameters when it creates the context (TC128)."
_APPROXIMATE = "CKKS computes on approximate numbers: tiny noise"

SCHEME_INFO: dict[str, SchemeInfo] = {
    "ei": SchemeInfo(
        "ei",
        "ei: encrypted-inference 0.9 (the seed's)",
        "encrypted-inference 0.9 (Microsoft SEAL 3.5)",
        "CKKS, N=8192. One result ciphertext per class; the service reloads the Galois keys for each.",
        "12 Galois keys + relinearisation keys, about 9 MB",
        _SECURITY,
        _APPROXIMATE,
    ),
    "ckks": SchemeInfo(
        "ckks",
        "ckks: SEAL 4 CKKS",
        "Microsoft SEAL 4 (tenseal.sealapi)",
        "CKKS, N=4096, approximate (errors about 1e-4). All 784 pixels in one ciphertext, 8 plaintext "
        "products and a rotate-and-sum; all 10 scores in one result ciphertext. Its other slots hold partial "
        "sums of the model, unmasked (bfv masks them).",
        "8 Galois keys (rotations by 1, 8, 16, ..., 512), about 0.5 MB",
        _SECURITY,
        _APPROXIMATE,
    ),
    "bfv": SchemeInfo(
        "bfv",
        "bfv: SEAL 4 BFV, coefficient packing",
        "Microsoft SEAL 4 (tenseal.sealapi)",
        "BFV, N=4096, exact integer arithmetic on pixels 0..255 and weights x 2^15. Two polynomial "
        "products give all 10 scores in one result; every other coefficient is masked with fresh randomness.",
        "the public encryption key only (about 0.13 MB): the service uses it to re-randomise the "
        "masked result; no evaluation keys at all",
        _SECURITY,
        "BFV computes on integers: the pixels and weights are rounded to fixed point",
    ),
}

_CLIENTS: dict[str, Callable[[], ClientScheme]] = {"ei": EiClient, "ckks": CkksClient, "bfv": BfvClient}
_DESCRIPTORS: dict[str, Callable[[], dict[str, Any]]] = {
    "ei": ei_descriptor,
    "ckks": ckks_descriptor,
    "bfv": bfv_descriptor,
}


def _known(name: str) -> str:
    if name not in _CLIENTS:
        raise InvalidInput(f"Unknown scheme {name!r}; choose one of {', '.join(SCHEME_NAMES)}.")
    return name


def new_client(name: str) -> ClientScheme:
    """A fresh key pair for scheme ``name`` (key generation happens here)."""
    return _CLIENTS[_known(name)]()


def descriptor(name: str) -> dict[str, Any]:
    """Scheme ``name``'s {name, version, params} as its client sends them, without making a key."""
    return _DESCRIPTORS[_known(name)]()
