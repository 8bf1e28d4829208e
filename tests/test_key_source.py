"""Unit tests: which key URLs the service accepts (before any network call), and what storage's answers become."""
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from service.errors import RequestRejected
from service.key_source import (
    _storage_errors,
    check_allowed_blob_url,
    check_read_only_sas,
    from_connection_string,
)
from service.settings import ServiceSettings, SettingsError

SETTINGS = ServiceSettings(
    allowed_blob_hosts=frozenset({"127.0.0.1:10000"}),
    allowed_storage_account="demoaccount",
    max_key_bytes=1 << 24, key_cache_bytes=1 << 27, max_request_bytes=1 << 22, max_ciphertext_bytes=1 << 20,
    compute_threads=1, storage_timeout_s=1.0,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:10000/devstoreaccount1/public-keys/abc?sp=r",
        "https://demoaccount.blob.core.windows.net/public-keys/abc?sp=r",
        "https://DemoAccount.blob.core.windows.net:443/public-keys/abc",
    ],
)
def test_allowed_urls_lose_their_query(url):
    assert "?" not in check_allowed_blob_url(url, SETTINGS)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:10001/devstoreaccount1/public-keys/abc",  # another port
        "http://10.0.0.5:10000/devstoreaccount1/public-keys/abc",  # another host
        "https://127.0.0.1:10000/devstoreaccount1/public-keys/abc",  # Azurite is http
        "http://demoaccount.blob.core.windows.net/public-keys/abc",  # the account only over https
        "https://otheraccount.blob.core.windows.net/public-keys/abc",
        "https://demoaccount.blob.core.windows.net.evil.example/public-keys/abc",
        "http://127.0.0.1:10000/otheraccount/public-keys/abc",
        "http://127.0.0.1:10000/devstoreaccount1/public-keys",  # no blob name
        "file:///etc/passwd",
        "ftp://127.0.0.1:10000/devstoreaccount1/c/b",
    ],
)
def test_other_hosts_are_refused(url):
    with pytest.raises(RequestRejected) as caught:
        check_allowed_blob_url(url, SETTINGS)
    assert (caught.value.status, caught.value.code) == (403, "host_not_allowed")


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@127.0.0.1:10000/devstoreaccount1/c/b",
        "http://@127.0.0.1:10000/devstoreaccount1/c/b",  # empty user info
        "http://127.0.0.1:10000/devstoreaccount1/c/b#fragment",
        "http://127.0.0.1:notaport/x",
        "http://127.0.0.1:99999/x",
        "http://[::1/x",
        "http://127.0.0.1:10000/devstoreaccount1/c/../other/b",
        "http://127.0.0.1:10000/devstoreaccount1/c/%2e%2e/other/b",
        "http://127.0.0.1:10000/devstoreaccount1/c/%2E%2e/b",
        "http://127.0.0.1:10000/devstoreaccount1/c/%2e/b",
        "https://demoaccount.blob.core.windows.net/public-keys/%2e%2e/other/abc",
    ],
)
def test_malformed_urls_on_an_allowed_host_are_bad_requests(url):
    with pytest.raises(RequestRejected) as caught:
        check_allowed_blob_url(url, SETTINGS)
    assert (caught.value.status, caught.value.code) == (400, "bad_request")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:10000@evil.example/devstoreaccount1/public-keys/abc",  # user info hides the host
        "http://127.0.0.1:10000:pw@evil.example/devstoreaccount1/public-keys/abc",
        "https://demoaccount.blob.core.windows.net@evil.example/public-keys/abc",
        "http://evil.example/devstoreaccount1/c/../b#frag",
    ],
)
def test_the_host_is_judged_before_the_rest(url):
    """docs/contract.md: any other host is 403, however the rest of the URL looks."""
    with pytest.raises(RequestRejected) as caught:
        check_allowed_blob_url(url, SETTINGS)
    assert (caught.value.status, caught.value.code) == (403, "host_not_allowed")
    assert "evil.example" in caught.value.message


def _raising(error: Exception):
    def action():
        raise error

    return action


@pytest.mark.parametrize(
    ("storage_status", "status", "code"),
    [(400, 400, "bad_request"), (401, 403, "sas_invalid"), (403, 403, "sas_invalid"), (404, 404, "key_not_found"),
     (409, 502, "storage_unavailable"), (500, 502, "storage_unavailable"), (503, 502, "storage_unavailable")],
)
def test_storage_answers_become_contract_errors(storage_status, status, code):
    error = HttpResponseError(message="storage said no")
    error.status_code = storage_status
    with pytest.raises(RequestRejected) as caught:
        _storage_errors(_raising(error))
    assert (caught.value.status, caught.value.code) == (status, code)


def test_storage_unreachable_is_502():
    with pytest.raises(RequestRejected) as caught:
        _storage_errors(_raising(ServiceRequestError("connection refused")))
    assert (caught.value.status, caught.value.code) == (502, "storage_unavailable")


def sas(**fields):
    return "http://h/x?" + "&".join(f"{key}={value}" for key, value in fields.items())


def test_read_only_unexpired_sas_passes():
    future = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    check_read_only_sas(sas(sp="r", se=future, sig="abc"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sp": "r", "se": "2099-01-01T00:00:00Z"}, "sig"),
        ({"sp": "rw", "se": "2099-01-01T00:00:00Z", "sig": "a"}, "read permission only"),
        ({"sp": "racwd", "se": "2099-01-01T00:00:00Z", "sig": "a"}, "read permission only"),
        ({"sp": "r", "sig": "a"}, "se"),
        ({"sp": "r", "se": "2001-01-01T00:00:00Z", "sig": "a"}, "expired"),
        ({"sp": "r", "se": "tomorrow", "sig": "a"}, "not a valid time"),
    ],
)
def test_unsafe_or_expired_sas_is_refused(fields, message):
    with pytest.raises(RequestRejected, match=message) as caught:
        check_read_only_sas(sas(**fields))
    assert (caught.value.status, caught.value.code) == (403, "sas_invalid")


def test_connection_string_to_another_host_is_refused_before_any_request():
    conn = "DefaultEndpointsProtocol=https;AccountName=evil;AccountKey=a2V5;EndpointSuffix=core.windows.net"
    with pytest.raises(RequestRejected) as caught:
        from_connection_string(conn, "public-keys", "abc", SETTINGS)
    assert caught.value.code == "host_not_allowed"


def test_garbage_connection_string_is_a_bad_request():
    with pytest.raises(RequestRejected) as caught:
        from_connection_string("this is not one", "public-keys", "abc", SETTINGS)
    assert caught.value.status == 400


def test_settings_refuse_non_loopback_azurite_hosts(monkeypatch):
    monkeypatch.setenv("ALLOWED_BLOB_HOSTS", "10.1.2.3:10000")
    with pytest.raises(SettingsError, match="loopback"):
        ServiceSettings.from_env()
    monkeypatch.setenv("ALLOWED_BLOB_HOSTS", "127.0.0.1:10000,localhost:10001")
    monkeypatch.setenv("ALLOWED_STORAGE_ACCOUNT", "DemoAccount")
    settings = ServiceSettings.from_env()
    assert settings.allowed_blob_hosts == {"127.0.0.1:10000", "localhost:10001"}
    assert settings.allowed_storage_account == "demoaccount"
