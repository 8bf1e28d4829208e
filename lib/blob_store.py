"""Blob storage for public keys: upload once, hand the service a read-only, expiring SAS URL.

This is the only module that talks to blob storage (Azurite locally, Azure Storage in the
cloud). It is built from a connection string the Azure-samples way:
``BlobServiceClient.from_connection_string -> get_container_client -> get_blob_client``.

Every Azure SDK failure is mapped to ``StorageUnavailable`` with a message that says what to do.
Timeouts and retries are short on purpose: a stopped Azurite should fail in seconds, not in the
SDK's default of minutes (15 s backoff, 3 retries, 20 s connect timeout each).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    LinearRetry,
    generate_blob_sas,
)

from lib.errors import SettingsError, StorageUnavailable

__all__ = ["START_HINT", "STORAGE_API_VERSION", "PublicKeyStore"]

START_HINT = "start the local storage with `.venv/bin/python -m scripts.local_stack up`"

# azure-storage-blob 12.31 speaks API version 2026-10-06 by default; Azurite 3.35 (the newest that
# runs on Node 20) implements up to 2025-11-05 and refuses newer versions unless started with
# --skipApiVersionCheck. We pin 2025-11-05 for every endpoint, not only loopback Azurite: Azure
# Storage serves every GA version, we use nothing newer than basic put/get/delete, and one pinned
# version means the emulator and the cloud see exactly the same requests. With it, upload, SAS
# download and delete work on Azurite 3.35 even without --skipApiVersionCheck (checked; a SAS
# is still signed with the SDK's default `sv`, which Azurite accepts).
STORAGE_API_VERSION = "2025-11-05"

_CONNECT_TIMEOUT_S = 3.0
_READ_TIMEOUT_S = 30.0  # per socket read, not per transfer: an 8.5 MB upload may take longer
_PROBE_TIMEOUT_S = 2.0
_CLOCK_SKEW = timedelta(minutes=2)
_BLOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")

T = TypeVar("T")


class PublicKeyStore:
    """Public-key blobs in one container; never holds or sees a secret key."""

    def __init__(self, connection_string: str, container: str) -> None:
        try:
            self._service = BlobServiceClient.from_connection_string(
                connection_string,
                api_version=STORAGE_API_VERSION,
                # The SDK annotates these as int, but sleeps for any number of seconds.
                retry_policy=LinearRetry(
                    backoff=0.5,  # type: ignore[arg-type]
                    retry_total=1,
                    random_jitter_range=0.2,  # type: ignore[arg-type]
                ),
                connection_timeout=_CONNECT_TIMEOUT_S,
                read_timeout=_READ_TIMEOUT_S,
            )
        except ValueError:
            # The SDK's message can quote the connection string (and so the account key).
            raise SettingsError(
                "BLOB_CONNECTION_STRING could not be used by the Azure SDK: check its format."
            ) from None
        self._container = self._service.get_container_client(container)
        self.container_name = container

    def __repr__(self) -> str:
        return f"PublicKeyStore(endpoint={self.endpoint!r}, container={self.container_name!r})"

    @property
    def endpoint(self) -> str:
        """The blob service URL (no credentials), for messages and display."""
        return self._service.url.rstrip("/")

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        """Run one SDK call and turn its failures into StorageUnavailable."""
        try:
            return operation()
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise StorageUnavailable(
                f"Blob storage at {self.endpoint} is not reachable ({what}): {START_HINT}, "
                "or point BLOB_CONNECTION_STRING at a storage account."
            ) from exc
        except ClientAuthenticationError as exc:
            raise StorageUnavailable(
                f"Blob storage at {self.endpoint} refused our credentials ({what}, HTTP {exc.status_code}): "
                "check the account name and key in BLOB_CONNECTION_STRING."
            ) from exc
        except HttpResponseError as exc:
            code = getattr(exc, "error_code", None) or "no error code"
            raise StorageUnavailable(
                f"Blob storage at {self.endpoint} failed to {what} (HTTP {exc.status_code}, {code}): "
                f"check that it is running ({START_HINT}) and that BLOB_CONNECTION_STRING is right."
            ) from exc

    def _blob(self, blob_name: str) -> BlobClient:
        if not isinstance(blob_name, str) or not _BLOB_NAME_RE.match(blob_name):
            raise ValueError(f"blob names here are 1-255 of [A-Za-z0-9._-], got {blob_name!r}")
        return self._container.get_blob_client(blob_name)

    def ensure_container(self) -> None:
        """Create the container if it does not exist yet (idempotent, private access)."""

        def create() -> None:
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()

        self._call(f"create the container {self.container_name!r}", create)

    def upload(self, blob_name: str, data: bytes, metadata: Mapping[str, str] | None = None) -> str:
        """Upload (overwriting) ``data`` and return the blob URL without any SAS."""
        blob = self._blob(blob_name)
        self._call(
            f"upload {blob_name!r}",
            lambda: blob.upload_blob(
                data,
                overwrite=True,
                metadata=dict(metadata or {}),
                content_settings=ContentSettings(content_type="application/octet-stream"),
            ),
        )
        return blob.url

    def blob_url(self, blob_name: str) -> str:
        """The URL of ``blob_name`` without any SAS."""
        return self._blob(blob_name).url

    def read_only_sas_url(self, blob_name: str, ttl_minutes: float, *, now: datetime | None = None) -> str:
        """The blob URL plus a SAS that grants read only (``sp=r``) and expires after ``ttl_minutes``.

        The start time is two minutes in the past so a client or server whose clock runs a little
        behind can still use it. ``now`` exists for tests (e.g. to make an already expired SAS).
        """
        if not ttl_minutes > 0:
            raise ValueError("ttl_minutes must be positive")
        blob = self._blob(blob_name)
        credential = self._service.credential
        account_key = getattr(credential, "account_key", None)
        if not account_key:
            raise SettingsError(
                "BLOB_CONNECTION_STRING has no account key, so no read-only SAS can be signed for the service."
            )
        if not blob.account_name:
            raise SettingsError("BLOB_CONNECTION_STRING names no storage account, so no SAS can be signed.")
        now = now or datetime.now(UTC)
        sas = generate_blob_sas(
            account_name=blob.account_name,
            container_name=self.container_name,
            blob_name=blob_name,
            account_key=account_key,
            permission=BlobSasPermissions(read=True),
            expiry=now + timedelta(minutes=ttl_minutes),
            start=now - _CLOCK_SKEW,
        )
        return f"{blob.url}?{sas}"

    def delete(self, blob_name: str) -> None:
        """Delete the blob; a blob that is already gone is fine."""
        blob = self._blob(blob_name)

        def delete() -> None:
            with contextlib.suppress(ResourceNotFoundError):
                blob.delete_blob(delete_snapshots="include")

        self._call(f"delete {blob_name!r}", delete)

    def is_reachable(self) -> bool:
        """True if the blob service answers an authenticated request within about two seconds."""
        try:
            self._container.exists(
                retry_total=0, connection_timeout=_PROBE_TIMEOUT_S, read_timeout=_PROBE_TIMEOUT_S
            )
        except (ServiceRequestError, ServiceResponseError, HttpResponseError):
            return False
        return True


def strip_sas(url: str) -> str:
    """``url`` without its query string (the SAS), e.g. for display or logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
