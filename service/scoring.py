"""The scoring service's request handling, as pure-ish functions that score.py delegates to.

`ScoringService.handle(raw_data)` returns (HTTP status, JSON-able body) for any input and never
raises: input the contract refuses is a 4xx (service/contract.py checks every field first), and an
unexpected exception, which is a bug of the service, is logged at ERROR with its traceback (secrets
cut out) and answered 500 ``internal_error`` in the contract's shape.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import CONTRACT, ScoreRequest, SeedRequest, parse_request
from service.errors import SERVER_ERRORS, RequestRejected, redacted_traceback
from service.key_source import SasVerifier, from_connection_string, from_sas_url
from service.schemes import ServerScheme, build_schemes
from service.schemes.base import Evaluation
from service.settings import ServiceSettings
from service.shared.model_files import MODEL_FILE
from service.shared.network_model import NetworkWeights

log = logging.getLogger("encrypted_mnist.service")

MAX_CIPHERTEXTS = 8
INTERNAL_ERROR = RequestRejected(500, *SERVER_ERRORS[500])


def load_model(model_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The linear model: coef (10, 784) and intercept (10,), checked."""
    path = Path(model_dir) / MODEL_FILE
    with np.load(path, allow_pickle=False) as archive:
        coef = np.asarray(archive["coef"], dtype=np.float64)
        intercept = np.asarray(archive["intercept"], dtype=np.float64)
    if coef.shape != (10, 784) or intercept.shape != (10,):
        raise ValueError(f"{path}: expected coef (10, 784) and intercept (10,), got {coef.shape}, {intercept.shape}")
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError(f"{path}: the model holds non-finite values")
    return coef, intercept


class ScoringService:
    """Holds the model's schemes and answers scoring requests."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, settings: ServiceSettings, *,
                 network: NetworkWeights) -> None:
        self.settings = settings
        self.schemes: dict[str, ServerScheme[Any]] = build_schemes(coef, intercept, settings, network=network)
        self.ei = self.schemes["ei"]  # the seed's request shape always means the seed's scheme
        self.sas_verifier = SasVerifier()

    def wait_ready(self) -> None:
        """Block until every scheme can evaluate (the native child process is up)."""
        for scheme in self.schemes.values():
            scheme.wait_ready()

    def close(self) -> None:
        """Stop the schemes' child processes."""
        for scheme in self.schemes.values():
            scheme.close()

    def _scheme_for(self, requested: dict[str, Any]) -> ServerScheme[Any]:
        """The scheme the request's descriptor names, if it is exactly that scheme's spec."""
        name = requested.get("name")
        scheme = self.schemes.get(name) if isinstance(name, str) else None
        if scheme is None:
            raise RequestRejected(
                400, "unknown_scheme",
                f"Unknown scheme {str(name)[:40]!r}; this service runs {sorted(self.schemes)}.",
            )
        spec = scheme.spec
        differing = spec.mismatch(requested)
        if differing is not None:
            raise RequestRejected(
                400, "scheme_mismatch",
                f"The service runs {spec.label} with other parameters ({', '.join(differing)[:200]} "
                f"differ); it expects {spec.descriptor()}.",
            )
        return scheme

    def handle(self, raw_data: str | bytes | None) -> tuple[int, object]:
        """Answer one request: (status, body). Logs one line, without secrets."""
        started = time.perf_counter()
        shape, key_cache, blob_url = "?", "-", "-"
        try:
            request = parse_request(
                raw_data, self.settings.max_request_bytes, MAX_CIPHERTEXTS, self.settings.max_ciphertext_bytes
            )
            if isinstance(request, SeedRequest):
                shape = "seed"
                scheme = self.ei
                ciphertexts = scheme.decode_ciphertexts(request.ciphertexts)
                keys = from_connection_string(request.conn_str, request.container, request.key_id, self.settings)
            else:
                shape = "sas"
                scheme = self._scheme_for(request.scheme)
                ciphertexts = scheme.decode_ciphertexts(request.ciphertexts)
                keys = from_sas_url(request.key_url, request.key_sha256, self.settings, self.sas_verifier)
            blob_url = keys.blob_url
            parsed = time.perf_counter()  # parse and checks, including a new SAS's check with storage
            evaluation = scheme.evaluate(keys, ciphertexts)
            key_cache = "hit" if evaluation.cache_hit else "miss"
            results = scheme.encode_results(evaluation.results)
            total = time.perf_counter() - started
            label = scheme.spec.label
            body: object = results
            if isinstance(request, ScoreRequest):
                body = self._response(request, label, results, evaluation, raw_data, parsed - started, total)
            log.info("score shape=%s status=200 scheme=%s key_cache=%s key_fetch_ms=%.1f compute_ms=%.1f "
                     "total_ms=%.1f keys=%s", shape, label, key_cache, evaluation.key_fetch_s * 1e3,
                     evaluation.compute_s * 1e3, total * 1e3, blob_url)
            return 200, body
        except RequestRejected as rejected:
            log.info("score shape=%s status=%d error=%s key_cache=%s total_ms=%.1f keys=%s", shape, rejected.status,
                     rejected.code, key_cache, (time.perf_counter() - started) * 1e3, blob_url)
            return rejected.status, rejected.as_body()
        except Exception as error:  # noqa: BLE001 (logged below, traceback redacted)
            # A bug of the service: input that the contract refuses is a RequestRejected (above).
            log.error("score shape=%s status=500 error=internal_error total_ms=%.1f keys=%s: %s\n%s", shape,
                      (time.perf_counter() - started) * 1e3, blob_url, type(error).__name__, redacted_traceback(error))
            return 500, INTERNAL_ERROR.as_body()

    @staticmethod
    def _response(request: ScoreRequest, label: str, results: list[str], evaluation: Evaluation,
                  raw_data: str | bytes | None, parse_s: float, total_s: float) -> dict[str, Any]:
        return {
            "contract": CONTRACT,
            "scheme": label,
            "result": results,
            "server": {
                "key_cache": "hit" if evaluation.cache_hit else "miss",
                "timings_ms": {
                    "parse": round(parse_s * 1e3, 3),
                    "key_fetch": round(evaluation.key_fetch_s * 1e3, 3),
                    "compute": round(evaluation.compute_s * 1e3, 3),
                    "total": round(total_s * 1e3, 3),
                },
                "sizes": {
                    "request_bytes": len(raw_data or b""),
                    "ciphertext_bytes": sum(len(data) for data in request.ciphertexts),
                    "key_bytes": evaluation.key_bytes,
                    "result_bytes": sum(len(item) for item in evaluation.results),
                },
            },
        }
