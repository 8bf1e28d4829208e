"""PublicKeyStore against a real Azurite: upload, read-only SAS, expiry, delete, fast failure."""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from lib.blob_store import PublicKeyStore, strip_sas
from lib.errors import StorageUnavailable
from lib.settings import azurite_connection_string


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def store(azurite) -> PublicKeyStore:
    container = f"test-{uuid.uuid4().hex[:12]}"
    store = PublicKeyStore(azurite.connection_string, container)
    store.ensure_container()
    return store


def blob_name() -> str:
    return uuid.uuid4().hex


@pytest.mark.integration
def test_ensure_container_is_idempotent(store: PublicKeyStore) -> None:
    store.ensure_container()
    store.ensure_container()
    assert store.is_reachable()


@pytest.mark.integration
def test_upload_returns_plain_url_and_sas_download_works(store: PublicKeyStore, azurite) -> None:
    name, data = blob_name(), os.urandom(3 * 1024 * 1024 + 17)
    url = store.upload(name, data, {"scheme": "ei"})
    assert url == f"{azurite.blob_endpoint}/{store.container_name}/{name}"
    assert "?" not in url and "sig=" not in url

    sas_url = store.read_only_sas_url(name, ttl_minutes=5)
    assert strip_sas(sas_url) == url
    query = parse_qs(urlsplit(sas_url).query)
    assert query["sp"] == ["r"]
    expiry = datetime.fromisoformat(query["se"][0])
    start = datetime.fromisoformat(query["st"][0])
    now = datetime.now(UTC)
    assert timedelta(minutes=4) < expiry - now <= timedelta(minutes=5, seconds=5)
    assert start < now - timedelta(minutes=1)

    response = requests.get(sas_url, timeout=10)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers.get("x-ms-meta-scheme") == "ei"
    # Without the SAS the blob is private.
    assert requests.get(url, timeout=10).status_code in (401, 403, 404)


@pytest.mark.integration
def test_upload_overwrites(store: PublicKeyStore) -> None:
    name = blob_name()
    store.upload(name, b"first", {})
    store.upload(name, b"second", {})
    assert requests.get(store.read_only_sas_url(name, 1), timeout=10).content == b"second"


@pytest.mark.integration
def test_sas_is_read_only(store: PublicKeyStore) -> None:
    name = blob_name()
    store.upload(name, b"original", {})
    sas_url = store.read_only_sas_url(name, ttl_minutes=5)
    put = requests.put(sas_url, data=b"replaced", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10)
    assert put.status_code == 403
    assert requests.delete(sas_url, timeout=10).status_code == 403
    other = store.blob_url(blob_name()) + "?" + urlsplit(sas_url).query
    assert (
        requests.put(other, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10).status_code == 403
    )
    assert requests.get(sas_url, timeout=10).content == b"original"


@pytest.mark.integration
def test_expired_and_tampered_sas_are_refused(store: PublicKeyStore) -> None:
    name = blob_name()
    store.upload(name, b"data", {})
    expired = store.read_only_sas_url(name, ttl_minutes=60, now=datetime.now(UTC) - timedelta(hours=2))
    assert requests.get(expired, timeout=10).status_code == 403
    good = store.read_only_sas_url(name, ttl_minutes=5)
    assert requests.get(good, timeout=10).status_code == 200
    tampered = good.replace("sp=r", "sp=rw")
    assert tampered != good
    assert requests.get(tampered, timeout=10).status_code == 403


@pytest.mark.integration
def test_delete_is_idempotent(store: PublicKeyStore) -> None:
    name = blob_name()
    store.upload(name, b"data", {})
    sas_url = store.read_only_sas_url(name, ttl_minutes=5)
    store.delete(name)
    assert requests.get(sas_url, timeout=10).status_code == 404
    store.delete(name)
    store.delete(blob_name())


@pytest.mark.integration
def test_bad_account_key_is_storage_unavailable(azurite) -> None:
    conn = azurite.connection_string.replace("AccountKey=Eby8", "AccountKey=Xby8")
    store = PublicKeyStore(conn, "public-keys")
    with pytest.raises(StorageUnavailable, match=r"credentials|failed") as info:
        store.upload(blob_name(), b"x", {})
    assert "AccountKey" not in info.value.message and "Xby8" not in info.value.message


@pytest.mark.slow
def test_closed_port_fails_fast_with_a_hint() -> None:
    store = PublicKeyStore(azurite_connection_string(closed_port()), "public-keys")
    assert store.is_reachable() is False
    started = time.perf_counter()
    with pytest.raises(StorageUnavailable) as info:
        store.upload(blob_name(), b"data", {})
    assert time.perf_counter() - started < 10
    assert "scripts.local_stack up" in info.value.message
    for operation in (store.ensure_container, lambda: store.delete(blob_name())):
        with pytest.raises(StorageUnavailable):
            operation()
    # Signing a SAS is local: it works without the service.
    assert "sig=" in store.read_only_sas_url(blob_name(), 5)


def test_bad_blob_names_are_refused() -> None:
    store = PublicKeyStore(azurite_connection_string(closed_port()), "public-keys")
    for bad in ("", "../etc", "a/b", "x" * 300, "name?sig=1"):
        with pytest.raises(ValueError):
            store.blob_url(bad)


def test_repr_has_no_account_key() -> None:
    store = PublicKeyStore(azurite_connection_string(closed_port()), "public-keys")
    assert "Eby8" not in repr(store) and "public-keys" in repr(store)
