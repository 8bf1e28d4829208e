"""Benchmark: the seed's `EIServer.predict` against our service path, measured in one run.

    .venv/bin/python scripts/benchmark.py [--warm 5] [--reference-runs 1]

It starts its own Azurite and scoring service (2 workers) on free ports, uploads one session's
public keys, and times:
- the reference: `EIServer.predict` in process (what the seed's score.py calls), and the seed's
  client around it (encrypt, predict, the package's decrypt);
- our server path in process (`ScoringService.handle` with a SAS request), key cache cold and warm;
- our whole path over HTTP with keys in Azurite (`lib.session.EncryptedSession`), cold and warm.
It prints server time, end-to-end time, the ratios to the reference, and the bytes per stage.
Timing targets are printed, never asserted: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from encrypted.inference.eiclient import EILinearRegressionClient
from encrypted.inference.eiserver import EIServer

from lib.blob_store import PublicKeyStore
from lib.contract import build_score_request
from lib.ei_scheme import EiClient
from lib.session import EncryptedSession
from lib.settings import AppSettings
from scripts.local_stack import LocalStack, free_port
from service.scoring import ScoringService, load_model
from service.settings import ServiceSettings

TARGET_SERVER_S = 1.3
TARGET_SPEEDUP = 15.0
TARGET_WARM_E2E_S = 1.6


def sample_digit() -> tuple[np.ndarray, int | None]:
    """A real MNIST test digit when ../shared has the test set, else a fixed pseudo-digit."""
    try:
        from lib.mnist_data import load_test_set

        images, labels = load_test_set()
        return np.asarray(images[0], dtype=np.float64), int(labels[0])
    except (OSError, ValueError):
        rng = np.random.default_rng(0)
        return rng.random(784) * (rng.random(784) > 0.8), None


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", type=int, default=5, help="warm repetitions per path (default 5)")
    parser.add_argument("--reference-runs", type=int, default=1, help="EIServer.predict runs (~25 s each)")
    args = parser.parse_args()

    coef, intercept = load_model(ROOT / "service" / "model")
    digit, label = sample_digit()
    plain = coef @ digit + intercept
    rows: list[tuple[str, float, float]] = []  # (path, server s, end-to-end s)

    with tempfile.TemporaryDirectory() as stack_dir:
        azurite_port = free_port()
        env = dict(os.environ, ALLOWED_BLOB_HOSTS=f"127.0.0.1:{azurite_port}")
        print("starting Azurite and the scoring service (2 workers) on free ports ...", flush=True)
        with LocalStack(azurite_port=azurite_port, scoring_port=free_port(), workers=2, stack_dir=Path(stack_dir),
                        env=env) as stack:
            settings = AppSettings(blob_connection_string=stack.connection_string, scoring_url=stack.scoring_url)

            # --- one session's keys, in Azurite -----------------------------------------------------
            client = EiClient()
            started = time.perf_counter()
            public_keys = client.public_material()
            keygen_s = time.perf_counter() - started
            store = PublicKeyStore(settings.blob_connection_string, settings.blob_container)
            store.ensure_container()
            started = time.perf_counter()
            store.upload(client.key_id, public_keys)
            upload_s = time.perf_counter() - started
            sas_url = store.read_only_sas_url(client.key_id, 30)
            key_sha256 = hashlib.sha256(public_keys).hexdigest()

            # --- reference: the seed's server call and client -------------------------------------
            reference = EIServer(coef, intercept)
            seed_client = EILinearRegressionClient()  # the package's own client, as the seed uses it
            seed_keys = seed_client.get_public_keys()[1]
            ref_server, ref_e2e = [], []
            for _ in range(args.reference_runs):
                print("reference EIServer.predict (about 25 s) ...", flush=True)
                started = time.perf_counter()
                ciphertexts = seed_client.encrypt(digit)
                predict_started = time.perf_counter()
                reference_result = reference.predict(ciphertexts, seed_keys)
                ref_server.append(time.perf_counter() - predict_started)
                reference_scores = seed_client.decrypt(reference_result)
                ref_e2e.append(time.perf_counter() - started)
            rows.append(("reference: EIServer.predict, in process", median(ref_server), median(ref_e2e)))

            # --- ours, in process ------------------------------------------------------------------
            os.environ["ALLOWED_BLOB_HOSTS"] = env["ALLOWED_BLOB_HOSTS"]
            service = ScoringService(coef, intercept, ServiceSettings.from_env())
            service.wait_ready()
            in_process: list[tuple[str, float, float]] = []
            for _ in range(1 + args.warm):
                started = time.perf_counter()
                ciphertexts = client.encrypt(digit)
                request = build_score_request(client.descriptor, ciphertexts, sas_url, key_sha256)
                status, body = service.handle(json.dumps(request))
                if status != 200:
                    raise SystemExit(f"in-process request failed: {status} {body}")
                scores = client.decrypt(body["result"])
                in_process.append((body["server"]["key_cache"], body["server"]["timings_ms"]["total"] / 1e3,
                                   time.perf_counter() - started))
            service.close()
            reference_error = float(np.max(np.abs(reference_scores - plain)))
            rows.append(("ours: in process, cold (key cache miss)", in_process[0][1], in_process[0][2]))
            warm = [item for item in in_process if item[0] == "hit"]
            rows.append(("ours: in process, warm (key cache hit)", median([w[1] for w in warm]),
                         median([w[2] for w in warm])))

            # --- ours, over HTTP with keys in Azurite ------------------------------------------
            session = EncryptedSession.start(settings)
            http: list[tuple[str, float, float]] = []
            for _ in range(2 + args.warm):  # two workers: each has one cold request
                prediction = session.predict(digit)
                server_s = sum(stage.seconds for stage in prediction.stages if stage.source == "server")
                http.append((prediction.key_cache, server_s, prediction.total_s))
            sizes = prediction.sizes
            session_setup = session.setup_timings_s
            session.close()
            cold = [item for item in http if item[0] == "miss"]
            warm = [item for item in http if item[0] == "hit"]
            rows.append(("ours: HTTP + Azurite, cold (key cache miss)", cold[0][1], cold[0][2]))
            rows.append(("ours: HTTP + Azurite, warm (key cache hit)", median([w[1] for w in warm]),
                         median([w[2] for w in warm])))

    reference_server, reference_e2e = rows[0][1], rows[0][2]
    print()
    print(f"{'path':46s} {'server s':>9s} {'e2e s':>8s} {'server x':>9s} {'e2e x':>7s}")
    for name, server_s, e2e_s in rows:
        print(f"{name:46s} {server_s:9.3f} {e2e_s:8.3f} {reference_server / server_s:8.1f}x "
              f"{reference_e2e / e2e_s:6.1f}x")
    print("(x = reference time / this path's time, measured in this run; warm rows are medians of "
          f"{args.warm})")
    print()
    print("bytes per stage (HTTP path; the session's keys are uploaded once, before its first prediction)")
    print(f"  session setup: keygen {session_setup['keygen']:.2f} s, key upload {session_setup['upload']:.2f} s "
          f"(in-process client: keygen {keygen_s:.2f} s, upload {upload_s:.2f} s, {len(public_keys):,d} bytes)")
    for name, value in sizes.items():
        print(f"  {name:38s} {value:>10,d}")
    print()
    print(f"max |decrypted - plaintext model|: ours {float(np.max(np.abs(scores - plain))):.2e}, reference "
          f"{reference_error:.2e}; prediction {int(np.argmax(scores))}"
          + (f", true label {label}" if label is not None else ""))
    http_warm = rows[-1]
    verdicts = [
        (f"server time <= {TARGET_SERVER_S} s (HTTP, warm)", http_warm[1] <= TARGET_SERVER_S),
        (f">= {TARGET_SPEEDUP:.0f}x faster than the reference (server)",
         reference_server / http_warm[1] >= TARGET_SPEEDUP),
        (f"warm end to end <= {TARGET_WARM_E2E_S} s (HTTP)", http_warm[2] <= TARGET_WARM_E2E_S),
    ]
    for name, met in verdicts:
        print(f"target {name}: {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
