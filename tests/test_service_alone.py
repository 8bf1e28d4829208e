"""The scoring service stands alone: what its deployment ships runs without the rest of the repo.

``service.SHIPPED`` names what a deployment ships. This test copies only that into a temporary
folder and, in a fresh interpreter there with the repository *not* on ``sys.path`` (it checks that
``import lib`` fails), loads ``service/score.py`` by path as the AzureML server does, calls
``init()`` and ``run()`` on real ckks and bfv requests made by the real client, with the public
keys in a real Azurite. The client decrypts the answers, which must match the plaintext model
on the same digit. A static check also reads every module under service/ for an import of lib.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import service
from lib.blob_store import PublicKeyStore
from lib.contract import build_score_request, parse_score_response
from lib.gallery import load_gallery
from lib.reference import load_reference_model
from lib.schemes import new_client

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ("ckks", "bfv")

DRIVER = """
import importlib.util, json, sys

def lib_importable():
    try:
        import lib  # noqa: F401
    except ImportError:
        return False
    return True

before = lib_importable()
spec = importlib.util.spec_from_file_location("score", "service/score.py")
score = importlib.util.module_from_spec(spec)
spec.loader.exec_module(score)
score.init()
answers = [score.run(body) for body in json.load(open(sys.argv[1]))]
score.service.close()
json.dump({
    "lib_importable": [before, lib_importable()],
    "lib_modules": sorted(name for name in sys.modules if name == "lib" or name.startswith("lib.")),
    "service_files": sorted({m.__file__ for m in list(sys.modules.values())
                             if (m.__name__ == "service" or m.__name__.startswith("service."))}),
    "answers": [answer if isinstance(answer, (dict, list)) else repr(answer) for answer in answers],
}, open(sys.argv[2], "w"))
"""


def imports_of(path: Path) -> set[str]:
    """Every module a Python file imports (top-level names and ``from`` modules)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_nothing_under_service_imports_lib() -> None:
    modules = sorted((ROOT / "service").rglob("*.py"))
    assert len(modules) > 10 and ROOT / "service" / "shared" / "specs.py" in modules
    offenders = {str(path.relative_to(ROOT)): sorted(name for name in imports_of(path)
                                                     if name == "lib" or name.startswith("lib."))
                 for path in modules}
    assert {path: names for path, names in offenders.items() if names} == {}
    assert "lib.schemes.base" in imports_of(ROOT / "lib" / "schemes" / "__init__.py")  # the check sees imports


def test_the_static_check_would_catch_an_import_of_lib(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom lib.schemes import new_client\nimport lib.errors as e\n", encoding="utf-8")
    assert {"lib.schemes", "lib.errors"} <= imports_of(module)


def ship(destination: Path) -> list[Path]:
    """Copy what the deployment ships (service.SHIPPED) and nothing else."""
    copied = []
    for relative in service.SHIPPED:
        source = ROOT / relative
        target = destination / relative
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        copied.append(target)
    return copied


@pytest.mark.slow
def test_shipped_service_scores_real_requests_alone(azurite, tmp_path: Path) -> None:
    deployment = tmp_path / "deployment"
    ship(deployment)
    assert sorted(path.name for path in deployment.iterdir()) == sorted(service.SHIPPED)
    assert not (deployment / "lib").exists() and (deployment / "service" / "shared" / "seal4.py").is_file()

    store = PublicKeyStore(azurite.connection_string, "service-alone")
    store.ensure_container()
    images, labels = load_gallery()
    index = int(np.flatnonzero(labels == 3)[0])
    pixels = np.rint(images[index] * 255.0) / 255.0  # MNIST's levels, which bfv's 0..255 grid holds exactly
    clients, bodies = [], []
    for name in SCHEMES:
        client = new_client(name)
        material = client.public_material()
        store.upload(client.key_id, material)
        url = store.read_only_sas_url(client.key_id, ttl_minutes=30)
        body = build_score_request(client.descriptor, client.encrypt(pixels), url, hashlib.sha256(material).hexdigest())
        clients.append(client)
        bodies.append(json.dumps(body))
    requests_file, answers_file = tmp_path / "requests.json", tmp_path / "answers.json"
    requests_file.write_text(json.dumps(bodies), encoding="utf-8")

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        AZUREML_MODEL_DIR=str(deployment / "service" / "model" / "mnist" / "1"),
        ALLOWED_BLOB_HOSTS=f"127.0.0.1:{azurite.port}",
        COMPUTE_THREADS="1",
    )
    child = subprocess.run(  # -I: neither PYTHONPATH nor the working directory goes on sys.path
        [sys.executable, "-I", "-c", DRIVER, str(requests_file), str(answers_file)],
        cwd=deployment, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    report = json.loads(answers_file.read_text(encoding="utf-8"))
    assert report["lib_importable"] == [False, False]
    assert report["lib_modules"] == []
    assert report["service_files"] and all(Path(file).is_relative_to(deployment) for file in report["service_files"])

    model = load_reference_model()
    expected = model.scores(pixels)
    for name, client, answer in zip(SCHEMES, clients, report["answers"], strict=True):
        assert isinstance(answer, dict), f"{name}: {answer}"
        result = parse_score_response(answer, expected_scheme=client.scheme_id, expected_results=client.result_count)
        assert result.key_cache == "miss"
        scores = client.decrypt(list(result.result))
        assert int(np.argmax(scores)) == int(np.argmax(expected)), name
        np.testing.assert_allclose(scores, expected, atol=1e-3, err_msg=name)


def test_isolated_mode_keeps_the_repo_off_sys_path() -> None:
    """The counter-check: from the repo, -I hides lib and a plain interpreter finds it; the child's False means something."""
    child = subprocess.run(
        [sys.executable, "-I", "-c", "import lib.schemes"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert child.returncode != 0 and "No module named 'lib'" in child.stderr
    child = subprocess.run(
        [sys.executable, "-c", "import lib.errors"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr


def test_the_client_imports_only_the_shared_layer_of_the_service() -> None:
    """lib.schemes pulls in service/shared/ and nothing server-only (key fetching, the native child, Azure)."""
    code = (
        "import sys, lib.schemes\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('service', 'azure', 'azureml_inference_server_http'))))"
    )
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           check=False)
    assert child.returncode == 0, child.stderr
    loaded = set(child.stdout.split())
    assert {"service.shared.specs", "service.shared.seal4", "service.shared.seal3"} <= loaded
    assert loaded <= {"service", "service.shared", "service.shared.specs", "service.shared.seal4",
                      "service.shared.seal3", "service.shared.seal_header", "service.shared.network_layout"}
