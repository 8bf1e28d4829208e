"""One typed settings object for the app and the CLI.

Each setting is read from the environment variable of the same name upper-cased, then from a
secrets mapping (the app passes ``st.secrets``), then falls back to a default that works with the
local stack (``.venv/bin/python -m scripts.local_stack up``). Values are checked when loaded, so a
typo fails at start-up with a message that names the setting, not deep inside a request.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from lib.errors import SettingsError

__all__ = ["AppSettings", "SettingsError", "azurite_connection_string", "parse_connection_string"]

# The Azurite development account. Its key is public and documented by Microsoft; it only
# ever opens the local emulator.
_AZURITE_ACCOUNT = "devstoreaccount1"
_AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_DEFAULT_AZURITE_PORT = 10000

# A SAS longer than a week is a standing credential, not a short-lived reference.
_MAX_SAS_TTL_MINUTES = 7 * 24 * 60

# Container names: 3-63 characters, lowercase letters, digits and single hyphens between them.
_CONTAINER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


def azurite_connection_string(port: int = _DEFAULT_AZURITE_PORT) -> str:
    """The explicit devstoreaccount1 connection string for Azurite on 127.0.0.1:``port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={_AZURITE_ACCOUNT};AccountKey={_AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{_AZURITE_ACCOUNT};"
    )


def parse_connection_string(conn_str: str) -> dict[str, str]:
    """Split ``Key=Value;...`` into a dict with the keys as written (values may contain ``=``)."""
    parts: dict[str, str] = {}
    for item in conn_str.split(";"):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(
                "BLOB_CONNECTION_STRING is not a storage connection string: expected "
                "'Key=Value;Key=Value;...' (e.g. AccountName=...;AccountKey=...;BlobEndpoint=...)."
            )
        parts[key.strip()] = value.strip()
    return parts


def _default_connection_string() -> str:
    """Azurite on AZURITE_PORT (or 10000), matching what ``scripts.local_stack up`` starts."""
    raw = os.environ.get("AZURITE_PORT", "").strip()
    if not raw:
        return azurite_connection_string()
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise SettingsError(f"AZURITE_PORT must be a TCP port number (1-65535), got {raw!r}.")
    return azurite_connection_string(port)


def _check_http_url(name: str, value: str) -> None:
    """An absolute http(s) URL with a host, and no user name or password in it."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise SettingsError(f"{name} is not a valid URL ({exc}): {value!r}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http:// or https:// URL with a host, got {value!r}.")
    if parts.username or parts.password:
        raise SettingsError(f"{name} must not carry a user name or password.")


def _check_connection_string(value: str) -> None:
    """A connection string we can upload with and sign a SAS with (so it needs an account key)."""
    parts = {k.lower(): v for k, v in parse_connection_string(value).items()}
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return
    missing = [k for k in ("AccountName", "AccountKey") if not parts.get(k.lower())]
    if missing:
        hint = (
            " A SharedAccessSignature connection string cannot sign the read-only SAS the service needs."
            if "sharedaccesssignature" in parts
            else ""
        )
        raise SettingsError(f"BLOB_CONNECTION_STRING has no {' or '.join(missing)}.{hint}")
    if "blobendpoint" in parts:
        _check_http_url("BlobEndpoint in BLOB_CONNECTION_STRING", parts["blobendpoint"])
    protocol = parts.get("defaultendpointsprotocol", "https").lower()
    if protocol not in ("http", "https"):
        raise SettingsError(
            f"DefaultEndpointsProtocol in BLOB_CONNECTION_STRING must be http or https, got {protocol!r}."
        )


_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _check_scoring_key(key: object, scoring_url: str) -> None:
    """An endpoint key is printable text without spaces, and goes over https (or to this machine) only.

    The messages never quote the key.
    """
    if not isinstance(key, str):
        raise SettingsError("SCORING_KEY must be text (the endpoint's key).")
    if not key:
        return
    if len(key) > 4096 or not key.isprintable() or any(c.isspace() for c in key):
        raise SettingsError(
            "SCORING_KEY must be the endpoint's key as one line without spaces (at most 4096 characters); "
            "copy it again from `az ml online-endpoint get-credentials`."
        )
    parts = urlsplit(scoring_url)
    if parts.scheme != "https" and parts.hostname not in _LOOPBACK_HOSTS:
        raise SettingsError(
            f"SCORING_URL is plain http to {parts.hostname}, so SCORING_KEY would travel unencrypted: "
            "use the endpoint's https:// URL."
        )


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise SettingsError(f"{name} must be a number of seconds, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number of seconds, got {value!r}.") from None
    if not math.isfinite(number) or number <= 0:
        raise SettingsError(f"{name} must be a positive number of seconds, got {value!r}.")
    return number


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise SettingsError(f"{name} must be a whole number of minutes, got {value!r}.")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a whole number of minutes, got {value!r}.") from None
    if not 1 <= number <= _MAX_SAS_TTL_MINUTES:
        raise SettingsError(f"{name} must be between 1 and {_MAX_SAS_TTL_MINUTES} minutes, got {value!r}.")
    return number


def _lookup(name: str, secrets: Mapping[str, Any] | None) -> Any | None:
    """Environment first, then secrets; an empty value counts as unset."""
    env_value = os.environ.get(name.upper())
    if env_value is not None and env_value.strip():
        return env_value.strip()
    if secrets is None:
        return None
    for key in (name.upper(), name):
        try:
            value = secrets.get(key, None)
        except FileNotFoundError:
            # st.secrets raises (a FileNotFoundError subclass) when there is no secrets.toml.
            return None
        if isinstance(value, str):
            value = value.strip()
        if value is not None and value != "":
            return value
    return None


@dataclass(frozen=True)
class AppSettings:
    """Where the public keys go and where the scoring service is.

    ``repr`` leaves out the connection string: it holds the storage account key.
    """

    blob_connection_string: str = field(default_factory=_default_connection_string, repr=False)
    blob_container: str = "public-keys"
    scoring_url: str = "http://127.0.0.1:5001/score"
    scoring_key: str = field(default="", repr=False)
    """The endpoint key (Azure ML managed endpoints require one), sent as ``Authorization: Bearer``."""
    scoring_timeout_s: float = 120.0
    sas_ttl_minutes: int = 60

    def __post_init__(self) -> None:
        """Check every setting and normalise the numbers (secrets may hold them as text)."""
        if not isinstance(self.blob_connection_string, str) or not self.blob_connection_string.strip():
            raise SettingsError("BLOB_CONNECTION_STRING is empty.")
        _check_connection_string(self.blob_connection_string)
        if not isinstance(self.blob_container, str) or not _CONTAINER_RE.match(self.blob_container):
            raise SettingsError(
                "BLOB_CONTAINER must be 3-63 characters of lowercase letters, digits and single hyphens, "
                f"starting and ending with a letter or digit; got {self.blob_container!r}."
            )
        if not isinstance(self.scoring_url, str):
            raise SettingsError(f"SCORING_URL must be a URL, got {self.scoring_url!r}.")
        _check_http_url("SCORING_URL", self.scoring_url)
        _check_scoring_key(self.scoring_key, self.scoring_url)
        object.__setattr__(self, "scoring_timeout_s", _to_float("SCORING_TIMEOUT_S", self.scoring_timeout_s))
        object.__setattr__(self, "sas_ttl_minutes", _to_int("SAS_TTL_MINUTES", self.sas_ttl_minutes))

    @classmethod
    def load(cls, secrets: Mapping[str, Any] | None = None) -> AppSettings:
        """Read each setting from the environment, then ``secrets``, then the default."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = _lookup(f.name, secrets)
            if raw is not None:
                values[f.name] = raw
        return cls(**values)

    @property
    def blob_endpoint(self) -> str:
        """The blob service endpoint named by the connection string (no key), for display."""
        parts = {k.lower(): v for k, v in parse_connection_string(self.blob_connection_string).items()}
        if parts.get("usedevelopmentstorage", "").lower() == "true":
            return f"http://127.0.0.1:{_DEFAULT_AZURITE_PORT}/{_AZURITE_ACCOUNT}"
        if parts.get("blobendpoint"):
            return parts["blobendpoint"].rstrip("/")
        protocol = parts.get("defaultendpointsprotocol", "https")
        suffix = parts.get("endpointsuffix", "core.windows.net")
        return f"{protocol}://{parts['accountname']}.blob.{suffix}"
