"""Where things are, the settings from the environment, the addresses of the services, the errors."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from service.shared.model_files import MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite-blob"
VENV_BIN = ROOT / ".venv" / "bin"
DEFAULT_ENTRY_SCRIPT = ROOT / "service" / "score.py"
DEFAULT_MODEL_DIR = MODEL_DIR
GUNICORN_CONFIG = ROOT / "service" / "gunicorn_config.py"

# Azurite's well-known development account. The key is public (documented by Microsoft for the
# emulator) and only ever valid against the local emulator.
DEV_ACCOUNT = "devstoreaccount1"
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

SERVICES = ("azurite", "scoring")
MAX_REPLICAS = 16
PORT_ENV = {"azurite": "AZURITE_PORT", "scoring": "SCORING_PORT", "streamlit": "STREAMLIT_PORT"}


class StackError(RuntimeError):
    """A service of the local stack could not be started, or did not become ready."""


class PortInUseError(StackError):
    """The port a service should listen on is already taken."""

    def __init__(self, port: int, env_var: str | None = None) -> None:
        hint = f"set {env_var} to a free port" if env_var else "choose a free port"
        stack = env_var in ("AZURITE_PORT", "SCORING_PORT")
        earlier = " (if it is an earlier local stack: .venv/bin/python -m scripts.local_stack down)" if stack else ""
        super().__init__(f"port {port} on {HOST} is already in use; {hint}, or stop what is listening there{earlier}")
        self.port = port
        self.env_var = env_var


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not an integer") from None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Ports, worker and replica counts, the endpoint key and the state directory, from the environment.

    ``scoring_replicas`` 0 is one plain scoring service on ``scoring_port``; N >= 1 is the local twin
    of a managed endpoint: N replicas behind nginx on ``scoring_port``, which checks ``scoring_key``
    (if set) as ``Authorization: Bearer``. The key is never part of the ``repr``.
    """

    azurite_port: int = 10000
    scoring_port: int = 5001
    streamlit_port: int = 8501
    scoring_workers: int = 2
    stack_dir: Path = ROOT / ".run"
    scoring_replicas: int = 0
    scoring_key: str = dataclasses.field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read AZURITE_PORT, SCORING_PORT, STREAMLIT_PORT, SCORING_WORKERS, SCORING_REPLICAS, SCORING_KEY
        and STACK_DIR."""
        env = os.environ if env is None else env
        stack_dir = env.get("STACK_DIR", "").strip()
        replicas = _int_env(env, "SCORING_REPLICAS", cls.scoring_replicas)
        if not 0 <= replicas <= MAX_REPLICAS:
            raise StackError(f"SCORING_REPLICAS={replicas} is out of range: 0 (no nginx) to {MAX_REPLICAS}")
        return cls(
            azurite_port=_int_env(env, "AZURITE_PORT", cls.azurite_port),
            scoring_port=_int_env(env, "SCORING_PORT", cls.scoring_port),
            streamlit_port=_int_env(env, "STREAMLIT_PORT", cls.streamlit_port),
            scoring_workers=_int_env(env, "SCORING_WORKERS", cls.scoring_workers),
            stack_dir=Path(stack_dir).resolve() if stack_dir else cls.stack_dir,
            scoring_replicas=replicas,
            scoring_key=env.get("SCORING_KEY", "").strip(),
        )


def azurite_blob_endpoint(port: int) -> str:
    """The blob endpoint of the local Azurite's development account."""
    return f"http://{HOST}:{port}/{DEV_ACCOUNT}"


def azurite_connection_string(port: int) -> str:
    """An explicit connection string for Azurite's development account on ``port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};"
        f"BlobEndpoint={azurite_blob_endpoint(port)};"
    )


def scoring_base_url(port: int) -> str:
    """The root of the local scoring service (``GET /`` is its health check)."""
    return f"http://{HOST}:{port}"


def scoring_url(port: int) -> str:
    """The scoring endpoint (``POST``) of the local scoring service."""
    return f"{scoring_base_url(port)}/score"


def app_env(azurite_port: int, scoring_port: int, scoring_key: str | None = None) -> dict[str, str]:
    """The settings the Streamlit app needs to find the local services (and the twin's endpoint key)."""
    env = {
        "BLOB_CONNECTION_STRING": azurite_connection_string(azurite_port),
        "SCORING_URL": scoring_url(scoring_port),
    }
    if scoring_key:
        env["SCORING_KEY"] = scoring_key
    return env
