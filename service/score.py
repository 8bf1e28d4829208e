"""AzureML entry script: `init()` loads the model, `run(raw_data)` answers one scoring request.

Served by azureml-inference-server-http (the runtime inside AzureML containers) at POST /score.
Request and response shapes: docs/contract.md. All logic lives in service/scoring.py.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# The server loads this file by path; make `import service.*` work from its parent folder.
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

from azureml_inference_server_http.api.aml_response import AMLResponse

from service.scoring import ScoringService, load_model
from service.settings import ServiceSettings
from service.shared.model_files import MODEL_DIR
from service.shared.network_model import load_network

# Azure's layout, .../<model name>/<version>: AZUREML_MODEL_DIR names the version folder, as in an Azure ML
# deployment, so the server reads the model's id (mnist:1) from the path instead of failing to.
DEFAULT_MODEL_DIR = MODEL_DIR

service: ScoringService | None = None


def init() -> None:
    """Load the model from AZUREML_MODEL_DIR and start the native evaluator."""
    global service
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The storage SDK logs every HTTP request at INFO; one line per scoring request is ours to write.
    logging.getLogger("azure").setLevel(logging.WARNING)
    # The AzureML server configures logging with disable_existing_loggers; ours may already exist
    # (gunicorn's master imported the ei pool before forking this worker).
    logging.getLogger("encrypted_mnist.service").disabled = False
    model_dir = os.environ.get("AZUREML_MODEL_DIR", str(DEFAULT_MODEL_DIR))
    coef, intercept = load_model(model_dir)
    service = ScoringService(coef, intercept, ServiceSettings.from_env(), network=load_network(model_dir))
    service.wait_ready()
    logging.getLogger("encrypted_mnist.service").info("init: model from %s, schemes %s", model_dir,
                                                       sorted(service.schemes))


def run(raw_data: str) -> object:
    """One request: the result on success, an AMLResponse with a 4xx JSON error otherwise."""
    if service is None:
        return AMLResponse({"error": "not_ready", "message": "The service is still starting."}, 503, json_str=True)
    status, body = service.handle(raw_data)
    if status != 200:
        return AMLResponse(body, status, json_str=True)
    return body
