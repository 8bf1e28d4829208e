"""The three services as :class:`Service` descriptions: Azurite, the scoring service and the app."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from .config import (
    AZURITE_BIN,
    DEFAULT_ENTRY_SCRIPT,
    DEFAULT_MODEL_DIR,
    GUNICORN_CONFIG,
    HOST,
    PORT_ENV,
    ROOT,
    VENV_BIN,
    Settings,
    StackError,
    azurite_blob_endpoint,
    scoring_base_url,
)
from .net import HttpAnswer, HttpProbe
from .process import Service


def azurite_probes(port: int) -> tuple[HttpProbe, ...]:
    """Azurite is ready when it answers HTTP (any status: it wants auth for a container list)."""
    return (HttpProbe(f"{azurite_blob_endpoint(port)}?comp=list"),)


def azurite_service(
    port: int, data_dir: Path, in_memory: bool = False, log_path: Path | None = None, timeout: float = 60.0
) -> Service:
    """Azurite's blob service on 127.0.0.1:``port``, its data in ``data_dir`` (or in memory)."""
    if not AZURITE_BIN.exists():
        raise StackError(f"{AZURITE_BIN} is missing: run scripts/setup.sh (it runs npm ci)")
    data_dir = Path(data_dir)
    # Azurite refuses --inMemoryPersistence together with --location.
    where = ["--inMemoryPersistence"] if in_memory else ["--location", str(data_dir)]
    if not in_memory:
        data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        str(AZURITE_BIN), "--blobHost", HOST, "--blobPort", str(port), *where,
        "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent",
    ]  # fmt: skip
    log_path = Path(log_path) if log_path else data_dir.parent / "azurite.log"
    return Service("Azurite", command, log_path, port, PORT_ENV["azurite"], None, azurite_probes(port), timeout)


def _is_json_4xx(answer: HttpAnswer) -> bool:
    if not 400 <= answer.status < 500 or "json" not in answer.content_type:
        return False
    try:
        answer.json()
    except ValueError:
        return False
    return True


def scoring_probes(base_url: str) -> tuple[HttpProbe, ...]:
    """``GET /`` says Healthy, then ``POST /score`` with ``{}`` gets a JSON 4xx (init() done, run() live).

    The port accepts connections before init() finishes, so a read timeout is "not yet".
    """
    base_url = base_url.rstrip("/")
    return (
        HttpProbe(f"{base_url}/", ready=lambda a: a.status == 200 and b"healthy" in a.body.lower()),
        HttpProbe(f"{base_url}/score", ready=_is_json_4xx, method="POST", body=b"{}", request_timeout=30.0),
    )


def _gunicorn_cmd() -> list[str]:
    gunicorn = VENV_BIN / "gunicorn"
    return [str(gunicorn)] if gunicorn.exists() else [sys.executable, "-m", "gunicorn"]


def check_entry_script(entry_script: Path | None) -> Path:
    """The entry script (default service/score.py), resolved; :class:`StackError` if it is missing."""
    path = Path(entry_script or DEFAULT_ENTRY_SCRIPT).resolve()
    if not path.is_file():
        raise StackError(
            f"the scoring service's entry script {path} does not exist (to start only Azurite: --only azurite)"
        )
    return path


def scoring_service(
    port: int,
    workers: int,
    *,
    entry_script: Path | None = None,
    model_dir: Path | None = None,
    log_path: Path | None = None,
    azurite_port: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> Service:
    """The AzureML inference server (gunicorn, ``workers`` workers) on 127.0.0.1:``port``.

    gunicorn's other settings (threaded workers, timeouts) are service/gunicorn_config.py, as in the image.

    ``entry_script`` and ``model_dir`` default to service/score.py and service/model. The environment
    (``env``, default ``os.environ``) is passed through; ``ALLOWED_BLOB_HOSTS`` defaults to the local
    Azurite (``127.0.0.1:<azurite_port>``) when it is not set.
    """
    script = check_entry_script(entry_script)
    child_env = dict(os.environ if env is None else env)
    settings = Settings.from_env(child_env)
    child_env.setdefault("ALLOWED_BLOB_HOSTS", f"{HOST}:{azurite_port or settings.azurite_port}")
    child_env["AZUREML_ENTRY_SCRIPT"] = str(script)
    child_env["AZUREML_MODEL_DIR"] = str(Path(model_dir or DEFAULT_MODEL_DIR).resolve())
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    command = [*_gunicorn_cmd(), "--config", str(GUNICORN_CONFIG), "-b", f"{HOST}:{port}", "-w", str(workers)]
    log_path = Path(log_path) if log_path else settings.stack_dir / "scoring.log"
    probes = scoring_probes(scoring_base_url(port))
    return Service("the scoring service", command, log_path, port, PORT_ENV["scoring"], child_env, probes, timeout)


def streamlit_service(
    port: int, log_path: Path, env: Mapping[str, str] | None = None, app: Path = ROOT / "app.py", timeout: float = 90.0
) -> Service:
    """``streamlit run app.py`` (headless) on 127.0.0.1:``port``; ready when ``/_stcore/health`` says ok."""
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(port), "--server.address", HOST, "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    health = HttpProbe(
        f"http://{HOST}:{port}/_stcore/health", ready=lambda a: a.status == 200 and a.body.strip() == b"ok"
    )
    return Service("streamlit", command, log_path, port, PORT_ENV["streamlit"], env, (health,), timeout)

