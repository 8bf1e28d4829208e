"""The key cache books what a cached key really costs, so KEY_CACHE_MB bounds a worker's memory.

Two checks, both on real SEAL objects:
- per scheme, in a fresh interpreter: the resident memory that holding K loaded keys adds, per key,
  is what the scheme books for one (``cached_bytes``), within a few percent;
- through the real service: 1,000 requests with 1,000 distinct bfv keys grow the worker's RSS by at
  most KEY_CACHE_MB + 64 MB (the issue's bound; without eviction it would grow by ~650 MB).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest

from lib.session import EncryptedSession
from lib.settings import AppSettings
from scripts.local_stack import (
    DEFAULT_ENTRY_SCRIPT,
    DEFAULT_MODEL_DIR,
    HOST,
    free_port,
    running,
    scoring_url,
    services,
)
from service.scoring import load_model

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024

# Loads `count` distinct keys of one scheme into its server half and prints the RSS growth per key
# next to what the scheme books for one. A fresh interpreter, so nothing else moves the RSS.
_PROBE = """
import gc, json, sys
import psutil
from lib.schemes import new_client
from service.scoring import load_model
from service.schemes.bfv import BfvScheme
from service.schemes.ckks import CkksScheme
from service.schemes.network import NetworkScheme
from service.shared.network_model import load_network

name, count, model_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
coef, intercept = load_model(model_dir)
if name == "network":
    scheme = NetworkScheme(load_network(model_dir), 1 << 40)
elif name == "browser":  # its client is the tab's node-seal; seal-python makes the same objects here
    import seal
    from service.schemes.browser import BrowserScheme, make_context
    from service.shared.specs import BROWSER
    scheme, context = BrowserScheme(load_network(model_dir), 1 << 40), make_context()
    def browser_keys():
        keygen, galois = seal.KeyGenerator(context), seal.GaloisKeys()
        keygen.create_galois_keys(list(BROWSER.params.galois_steps), galois)
        return galois.to_string() + keygen.create_relin_keys().to_string()
else:
    scheme = {"bfv": BfvScheme, "ckks": CkksScheme}[name](coef, intercept, 1 << 40)
blobs = [browser_keys() if name == "browser" else new_client(name).public_material() for _ in range(count)]
# First-use allocations are not a key's cost: seal-python's loads grow the heap by about 24 MB once,
# over the first few keys, so ``browser`` keeps 10 before measuring.
warm = [scheme.load_keys(blobs.pop()) for _ in range(10 if name == "browser" else 1)]
gc.collect()
before = psutil.Process().memory_info().rss
kept = []
for blob in blobs:
    keys = scheme.load_keys(blob)
    if name == "bfv":
        while not keys.full:  # the masks a cached bfv key holds once the worker has idled
            keys.add_one()
    kept.append(keys)
gc.collect()
grown = psutil.Process().memory_info().rss - before
print(json.dumps({"per_key": grown / len(kept), "booked": scheme.cached_bytes(kept[0]),
                  "blob": len(blobs[0])}))
"""


def measure(scheme: str, count: int) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, scheme, str(count), str(DEFAULT_MODEL_DIR)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(("scheme", "count"), [("bfv", 150), ("ckks", 150), ("network", 20), ("browser", 30)])
def test_booked_size_is_what_a_cached_key_costs(scheme: str, count: int) -> None:
    measured = measure(scheme, count)
    # Booking twice the blob's size, as the cache did, is 0.27 MB for bfv (0.64 MB held) and 0.99 MB
    # for ckks (1.13 MB held): both fail this.
    assert 0.85 * measured["booked"] <= measured["per_key"] <= 1.05 * measured["booked"], measured


@pytest.fixture(scope="module")
def small_cache_service(azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """One gunicorn worker with KEY_CACHE_MB=64 (bfv's share, an eighth: 8 MB, about 12 keys)."""
    port = free_port()
    env = dict(os.environ, ALLOWED_BLOB_HOSTS=f"{HOST}:{azurite.port}", KEY_CACHE_MB="64")
    service = services.scoring_service(
        port, 1, entry_script=DEFAULT_ENTRY_SCRIPT, model_dir=DEFAULT_MODEL_DIR,
        log_path=tmp_path_factory.mktemp("memory") / "scoring.log", env=env,
    )  # fmt: skip
    with running(service) as proc:
        yield scoring_url(port), proc.pid


def worker_rss(master_pid: int) -> int:
    # The master's children: the one worker, and the replica's ei pool (service/schemes/ei_pool.py).
    (worker,) = [child for child in psutil.Process(master_pid).children() if "gunicorn" in " ".join(child.cmdline())]
    return worker.memory_info().rss


@pytest.mark.slow
def test_a_thousand_bfv_keys_stay_within_the_cache_budget(azurite, small_cache_service: tuple[str, int]) -> None:
    url, master_pid = small_cache_service
    settings = AppSettings(blob_connection_string=azurite.connection_string, blob_container="memory-tests",
                           scoring_url=url)  # fmt: skip
    pixels = np.random.default_rng(3).random(784)

    def one_key(_index: int) -> int:
        with EncryptedSession.start(settings, scheme="bfv") as session:
            prediction = session.predict(pixels)
            assert prediction.key_cache == "miss"
            return prediction.label

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one_key, range(20)))  # code paths and allocator warm
        before = worker_rss(master_pid)
        labels = list(pool.map(one_key, range(1000)))
    grown = worker_rss(master_pid) - before
    coef, intercept = load_model(DEFAULT_MODEL_DIR)
    assert set(labels) == {int(np.argmax(coef @ pixels + intercept))}  # every key gives the plaintext answer
    assert grown <= (64 + 64) * MB, f"the worker grew by {grown / MB:.0f} MB over 1,000 keys"
