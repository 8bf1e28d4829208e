"""The four encryption schemes the app offers, each a client half of the scheme interface.

- ``ei``: the seed's encrypted-inference 0.9 (Microsoft SEAL 3.5 CKKS), as in the Azure ML how-to.
- ``ckks``: Microsoft SEAL 4 CKKS, one ciphertext each way, 8 Galois keys.
- ``bfv``: Microsoft SEAL 4 BFV coefficient packing, no evaluation keys at all.
- ``network``: a 784 -> 256 -> 10 neural network with a square activation, on SEAL 4 CKKS.

Each scheme is defined once, by its ``SchemeSpec`` in service/shared/specs.py, which the service
holds too: ``SPECS`` is that one registry (name, title, library, summary, public material,
security, error source, parameters), and ``descriptor(name)`` is the spec's. The interface is
lib/schemes/base.py; the service's halves are in service/schemes/; the wire format and each
scheme's parameters are in docs/contract.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lib.errors import InvalidInput
from lib.schemes.base import ClientScheme
from lib.schemes.bfv import BfvClient
from lib.schemes.ckks import CkksClient
from lib.schemes.ei import EiClient
from lib.schemes.network import NetworkClient
from service.shared.specs import SPECS, SchemeSpec

__all__ = [
    "DEFAULT_SCHEME",
    "SCHEME_NAMES",
    "SPECS",
    "ClientScheme",
    "SchemeSpec",
    "descriptor",
    "new_client",
]

SCHEME_NAMES: tuple[str, ...] = tuple(SPECS)
DEFAULT_SCHEME = "network"  # the most accurate of the fast schemes (issue 11)

_CLIENTS: Mapping[str, Callable[[], ClientScheme]] = {
    EiClient.spec.name: EiClient,
    CkksClient.spec.name: CkksClient,
    BfvClient.spec.name: BfvClient,
    NetworkClient.spec.name: NetworkClient,
}
if set(_CLIENTS) != set(SPECS):  # a spec without a client half, or the other way round
    raise RuntimeError(f"client halves {sorted(_CLIENTS)} do not match the specs {sorted(SPECS)}")


def _known(name: str) -> str:
    if name not in SPECS:
        raise InvalidInput(f"Unknown scheme {name!r}; choose one of {', '.join(SCHEME_NAMES)}.")
    return name


def new_client(name: str) -> ClientScheme:
    """A fresh key pair for scheme ``name`` (key generation happens here)."""
    return _CLIENTS[_known(name)]()


def descriptor(name: str) -> dict[str, Any]:
    """Scheme ``name``'s {name, version, params} as its client sends them, without making a key."""
    return SPECS[_known(name)].descriptor()
