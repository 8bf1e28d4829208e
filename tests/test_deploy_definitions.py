"""The Azure ML v2 definitions in deploy/azureml/ load in azure-ai-ml's own loaders, offline.

azure-ai-ml lives in its own virtualenv (.venv-deploy, made by ``scripts/setup.sh --dev``): it
pins OpenTelemetry versions that the scoring service's runtime must not get. So the loaders run
there, in a subprocess that prints what they read as JSON, and the checks run here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # a subprocess that imports azure-ai-ml: seconds

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_PYTHON = ROOT / ".venv-deploy" / "bin" / "python"
AZUREML = ROOT / "deploy" / "azureml"

_LOAD = r"""
import json, sys
from azure.ai.ml import load_environment, load_online_deployment, load_online_endpoint

folder = sys.argv[1]
endpoint = load_online_endpoint(f"{folder}/endpoint.yml")
deployment = load_online_deployment(f"{folder}/blue-deployment.yml")
environment = load_environment(f"{folder}/environment.yml")
routes = environment.inference_config
print(json.dumps({
    "endpoint": {"name": endpoint.name, "auth_mode": endpoint.auth_mode},
    "deployment": {
        "name": deployment.name,
        "endpoint_name": deployment.endpoint_name,
        "instance_count": deployment.instance_count,
        "instance_type": deployment.instance_type,
        "environment": deployment.environment,
        "environment_variables": deployment.environment_variables,
        "code": deployment.code_configuration is not None,
        "model": deployment.model is not None,
    },
    "environment": {
        "name": environment.name,
        "build_path": str(environment.build.path),
        "dockerfile_path": environment.build.dockerfile_path,
        "routes": {name: {"path": getattr(routes, name).path, "port": getattr(routes, name).port}
                   for name in ("liveness_route", "readiness_route", "scoring_route")},
    },
}))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[str, Any]:
    assert DEPLOY_PYTHON.is_file(), "run scripts/setup.sh --dev: it makes .venv-deploy with azure-ai-ml"
    result = subprocess.run(
        [str(DEPLOY_PYTHON), "-c", _LOAD, str(AZUREML)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_endpoint_needs_a_key(loaded: dict[str, Any]) -> None:
    assert loaded["endpoint"] == {"name": "encrypted-mnist", "auth_mode": "key"}


def test_the_deployment_runs_the_image_with_its_limits(loaded: dict[str, Any]) -> None:
    deployment = loaded["deployment"]
    assert deployment["name"] == "blue" and deployment["endpoint_name"] == loaded["endpoint"]["name"]
    assert deployment["instance_count"] >= 1 and deployment["instance_type"]
    assert "ALLOWED_STORAGE_ACCOUNT" in deployment["environment_variables"]
    assert deployment["environment"].split("@")[0].removeprefix("azureml:") == loaded["environment"]["name"]
    assert not deployment["code"] and not deployment["model"]  # both are in the image


def test_the_environment_builds_the_service_image_from_what_the_service_ships(loaded: dict[str, Any]) -> None:
    environment = loaded["environment"]
    assert (AZUREML / environment["build_path"]).resolve() == ROOT / "service"  # service.SHIPPED, nothing else
    dockerfile = (ROOT / "service" / environment["dockerfile_path"]).read_text()
    assert "EXPOSE 5001" in dockerfile and "SCORING_PORT=5001" in dockerfile
    assert "AZUREML_MODEL_DIR=/app/service/model/mnist/1" in dockerfile
    assert environment["routes"] == {
        "liveness_route": {"path": "/", "port": 5001},
        "readiness_route": {"path": "/", "port": 5001},
        "scoring_route": {"path": "/score", "port": 5001},
    }
