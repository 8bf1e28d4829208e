"""Service settings, read once from the environment at init()."""
from __future__ import annotations

import os
from dataclasses import dataclass

AZURITE_ACCOUNT = "devstoreaccount1"


class SettingsError(ValueError):
    """A setting has a value the service cannot start with."""


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class ServiceSettings:
    """Where keys may come from, and how much the service accepts and keeps."""

    allowed_blob_hosts: frozenset[str]
    """`host:port` pairs of local Azurite instances, reached over plain http (loopback only)."""
    allowed_storage_account: str | None
    """The Azure Storage account whose `https://<account>.blob.core.windows.net` is allowed."""
    max_key_bytes: int
    key_cache_bytes: int
    max_request_bytes: int
    max_ciphertext_bytes: int
    compute_threads: int
    storage_timeout_s: float
    """Connect and per-read timeout of every storage call. Calls are not retried, so a request that
    needs storage while it is down is answered (502) within this time and holds its thread no longer."""

    @classmethod
    def from_env(cls) -> ServiceSettings:
        """Read ALLOWED_BLOB_HOSTS, ALLOWED_STORAGE_ACCOUNT, MAX_KEY_MB, KEY_CACHE_MB, ... ."""
        hosts = os.environ.get("ALLOWED_BLOB_HOSTS", "127.0.0.1:10000")
        allowed = set()
        for item in hosts.split(","):
            item = item.strip().lower()
            if not item:
                continue
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise SettingsError(f"ALLOWED_BLOB_HOSTS entries must be host:port, got {item!r}")
            if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
                raise SettingsError(
                    f"ALLOWED_BLOB_HOSTS is for local Azurite only (loopback over http), got {item!r}; "
                    "allow a cloud account with ALLOWED_STORAGE_ACCOUNT"
                )
            allowed.add(f"{host}:{port}")
        account = os.environ.get("ALLOWED_STORAGE_ACCOUNT", "").strip().lower() or None
        if account is not None and not (3 <= len(account) <= 24 and account.isalnum()):
            raise SettingsError(f"ALLOWED_STORAGE_ACCOUNT must be a storage account name, got {account!r}")
        mb = 1024 * 1024
        return cls(
            allowed_blob_hosts=frozenset(allowed),
            allowed_storage_account=account,
            max_key_bytes=int(_number("MAX_KEY_MB", 16) * mb),
            key_cache_bytes=int(_number("KEY_CACHE_MB", 128) * mb),
            max_request_bytes=int(_number("MAX_REQUEST_MB", 4) * mb),
            max_ciphertext_bytes=int(_number("MAX_CIPHERTEXT_KB", 1024) * 1024),
            compute_threads=int(_number("COMPUTE_THREADS", max(1, min(os.cpu_count() or 1, 10)))),
            storage_timeout_s=_number("STORAGE_TIMEOUT_S", 2.5),
        )
