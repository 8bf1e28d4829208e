"""Where public keys come from: allowed blob-storage hosts only, read by a read-only SAS.

Two ways in, both with azure-storage-blob:
- our contract: a blob URL with a read-only, expiring SAS, plus the SHA-256 of the key bytes;
- the seed's contract: a connection string, container and blob name (the seed's design, kept
  for compatibility; the connection string is never logged or echoed back).
Every URL is checked against the allowed hosts before any network call is made.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobClient, BlobServiceClient

from service.errors import RequestRejected
from service.settings import AZURITE_ACCOUNT, ServiceSettings

# Azurite 3.35 speaks API versions up to this one; Azure Storage accepts it too.
_API_VERSION = "2025-11-05"

T = TypeVar("T")


@dataclass(frozen=True)
class KeyReference:
    """A key blob the service may read: its identity for the cache, and how to download it."""

    blob_url: str
    """The blob's URL without any SAS: safe to log and to show."""
    cache_key: tuple[str, str]
    fetch: Callable[[], bytes]


class SasVerifier:
    """Asks storage whether a SAS is good before cached keys are used with it.

    A cache hit needs no download, but it must not let a forged or revoked SAS through. Storage
    judges each new SAS once (a HEAD request); one it accepted is remembered until it expires, so
    a session's requests after the first cost no storage round trip.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._accepted: dict[str, datetime] = {}

    def verify(self, url: str, expiry: datetime, settings: ServiceSettings) -> None:
        """Return if storage accepts the SAS to read the blob; else raise RequestRejected."""
        fingerprint = hashlib.sha256(url.encode()).hexdigest()
        if fingerprint in self._accepted and self._accepted[fingerprint] > datetime.now(UTC):
            return
        blob = BlobClient.from_blob_url(url, **_client_options(settings))
        _storage_errors(blob.get_blob_properties)
        if len(self._accepted) >= self.max_entries:
            now = datetime.now(UTC)
            self._accepted = {key: until for key, until in self._accepted.items() if until > now}
            if len(self._accepted) >= self.max_entries:
                self._accepted.clear()
        self._accepted[fingerprint] = expiry


def check_allowed_blob_url(url: str, settings: ServiceSettings, what: str = "keys.url") -> str:
    """Return the URL without its query if it is a blob on an allowed host, else refuse (403).

    The host is judged first: a URL on another host is 403 however malformed the rest is. On an
    allowed host, user info, a fragment or a '.'/'..' segment (also percent-encoded) is 400.
    ``what`` names the URL in messages.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RequestRejected(400, "bad_request", f"{what} is not a valid URL.") from None
    host = (parts.hostname or "").lower()
    path = parts.path
    segments = [segment for segment in path.split("/") if segment]
    allowed = False
    if parts.scheme == "http" and f"{host}:{port}" in settings.allowed_blob_hosts:
        # Azurite serves accounts by path: /devstoreaccount1/<container>/<blob>.
        allowed = len(segments) >= 3 and segments[0] == AZURITE_ACCOUNT
    elif (
        parts.scheme == "https"
        and settings.allowed_storage_account is not None
        and host == f"{settings.allowed_storage_account}.blob.core.windows.net"
        and port in (None, 443)
    ):
        allowed = len(segments) >= 2
    if not allowed:
        raise RequestRejected(
            403, "host_not_allowed",
            f"Keys may only be fetched from the allowed blob storage; {parts.scheme}://{host}"
            f"{'' if port is None else ':' + str(port)} is not allowed.",
        )
    # Only now, so that a URL whose user info hides another host ("http://127.0.0.1:10000@evil/...")
    # is refused as that host (403 above), not as malformed.
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise RequestRejected(400, "bad_request", f"{what} must not hold user info or a fragment.")
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        # Also percent-encoded ("%2e%2e"): storage would resolve it to another blob, or answer 400.
        raise RequestRejected(400, "bad_request", f"{what} must not contain '.' or '..' path segments.")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def check_read_only_sas(url: str, now: datetime | None = None) -> datetime:
    """The SAS must grant read only, and expire in the future; returns its expiry.

    Storage checks the signature (see SasVerifier)."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)

    def single(name: str) -> str:
        values = query.get(name)
        if not values or len(values) != 1 or not values[0]:
            raise RequestRejected(403, "sas_invalid", f"keys.url needs a SAS with exactly one '{name}'.")
        return values[0]

    single("sig")
    if single("sp") != "r":
        raise RequestRejected(403, "sas_invalid", "The SAS must grant read permission only (sp=r).")
    expiry_text = single("se")
    try:
        expiry = datetime.fromisoformat(expiry_text)
    except ValueError:
        raise RequestRejected(403, "sas_invalid", "The SAS expiry (se) is not a valid time.") from None
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=UTC)
    if expiry <= (now or datetime.now(UTC)):
        raise RequestRejected(403, "sas_invalid", "The SAS has expired: make a new one.")
    return expiry


def _storage_errors(action: Callable[[], T]) -> T:
    """Run a storage call, turning its failures into contract errors."""
    try:
        return action()
    except ResourceNotFoundError:
        raise RequestRejected(404, "key_not_found", "The public-key blob was not found: upload the keys again.") \
            from None
    except ResourceModifiedError:
        raise RequestRejected(409, "key_changed", "The key blob changed while it was read: try again.") from None
    except ClientAuthenticationError:
        raise RequestRejected(403, "sas_invalid", "Blob storage refused the SAS or credentials.") from None
    except (ServiceRequestError, ServiceResponseError):
        raise RequestRejected(502, "storage_unavailable", "Blob storage could not be reached.") from None
    except HttpResponseError as error:
        if error.status_code in (401, 403):
            raise RequestRejected(403, "sas_invalid", "Blob storage refused the SAS or credentials.") from None
        if error.status_code == 404:
            raise RequestRejected(404, "key_not_found", "The public-key blob was not found.") from None
        if error.status_code == 400:  # storage judged the request malformed: the key URL (or SAS) is bad
            raise RequestRejected(
                400, "bad_request", "Blob storage refused the key URL as malformed (HTTP 400): check keys.url."
            ) from None
        raise RequestRejected(502, "storage_unavailable", f"Blob storage answered {error.status_code}.") from None


def _download_capped(blob: BlobClient, max_bytes: int, **conditions: Any) -> bytes:
    downloader = blob.download_blob(**conditions)
    if downloader.size > max_bytes:
        raise RequestRejected(413, "too_large", f"The key blob is over the {max_bytes} byte limit.")
    return downloader.readall()


def _client_options(settings: ServiceSettings) -> dict[str, Any]:
    """No retries and short timeouts: storage down costs a request one timeout, then 502."""
    return {
        "api_version": _API_VERSION,
        "connection_timeout": settings.storage_timeout_s,
        "read_timeout": settings.storage_timeout_s,
        "retry_total": 0,
        # Small first GET, so an oversized blob is refused after 4 MB, not after downloading it.
        "max_single_get_size": 4 * 1024 * 1024,
        "max_chunk_get_size": 4 * 1024 * 1024,
    }


def from_sas_url(url: str, sha256_hex: str, settings: ServiceSettings, verifier: SasVerifier) -> KeyReference:
    """Our contract: check host and SAS now; download, size-cap and hash-check on a cache miss."""
    blob_url = check_allowed_blob_url(url, settings)
    verifier.verify(url, check_read_only_sas(url), settings)

    def fetch() -> bytes:
        blob = BlobClient.from_blob_url(url, **_client_options(settings))
        data = _storage_errors(lambda: _download_capped(blob, settings.max_key_bytes))
        if hashlib.sha256(data).hexdigest() != sha256_hex:
            raise RequestRejected(
                422, "key_hash_mismatch", "The key blob's bytes do not match keys.sha256: upload the keys again."
            )
        return data

    return KeyReference(blob_url, (blob_url, "sha256:" + sha256_hex), fetch)


def from_connection_string(conn_str: str, container: str, blob_name: str, settings: ServiceSettings) -> KeyReference:
    """The seed's contract: the blob's ETag (one HEAD request) keys the cache."""
    try:
        service = BlobServiceClient.from_connection_string(conn_str, **_client_options(settings))
        blob = service.get_blob_client(container=container, blob=blob_name)
    except (ValueError, KeyError, TypeError):
        raise RequestRejected(400, "bad_request", "conn_str is not a valid storage connection string.") from None
    blob_url = check_allowed_blob_url(blob.url, settings, "The blob URL of conn_str, container and key_id")
    properties = _storage_errors(blob.get_blob_properties)
    if properties.size > settings.max_key_bytes:
        raise RequestRejected(413, "too_large", f"The key blob is over the {settings.max_key_bytes} byte limit.")
    etag = properties.etag

    def fetch() -> bytes:
        return _storage_errors(lambda: _download_capped(
            blob, settings.max_key_bytes, etag=etag, match_condition=MatchConditions.IfNotModified
        ))

    return KeyReference(blob_url, (blob_url, "etag:" + etag), fetch)
