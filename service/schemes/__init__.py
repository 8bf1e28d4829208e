"""The schemes this service runs, by name: ``ei`` (the seed's), ``ckks``, ``bfv``, ``network`` (SEAL 4) and
``browser`` (the network for a client in the browser tab, on SEAL 4.4).

Every scheme implements the server half of the scheme interface (service/schemes/base.py) for
the one ``SchemeSpec`` that defines it (service/shared/specs.py, shared with the client);
docs/contract.md describes each one's parameters, layout and public material.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from service.schemes.base import ServerScheme
from service.schemes.bfv import BfvScheme
from service.schemes.browser import BrowserScheme
from service.schemes.ckks import CkksScheme
from service.schemes.ei import EiScheme
from service.schemes.network import NetworkScheme
from service.settings import ServiceSettings
from service.shared.network_model import NetworkWeights

__all__ = ["ServerScheme", "build_schemes"]


def build_schemes(
    coef: np.ndarray, intercept: np.ndarray, settings: ServiceSettings, *, network: NetworkWeights
) -> dict[str, ServerScheme[Any]]:
    """One instance of every scheme for this worker: the linear model's three and the network's two.

    In the worker, network keys and browser keys (10.2 MB each, loaded) get a quarter of the key-cache
    budget each, and ckks and bfv an eighth each; an ei child (the worker's own, or each child of the replica's ei pool) has the
    whole budget for ei keys, which cost 20 MB each once expanded (service/schemes/ei_key_expansion.py).
    """
    budget = settings.key_cache_bytes
    schemes: list[ServerScheme[Any]] = [
        EiScheme(coef, intercept, settings.compute_threads, budget),
        CkksScheme(coef, intercept, budget // 8),
        BfvScheme(coef, intercept, budget // 8),
        NetworkScheme(network, budget // 4),
        BrowserScheme(network, budget // 4),
    ]
    return {scheme.spec.name: scheme for scheme in schemes}
