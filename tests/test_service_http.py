"""Integration: the scoring service over HTTP, under azureml-inference-server-http, with Azurite.

Both processes are started by the session fixtures in conftest.py. These tests speak the
contract from the client side by hand (not through lib/), so they check the service alone.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import struct
import zlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas
from encrypted.inference.eiclient import EILinearRegressionClient

from service.scoring import ScoringService, load_model
from service.settings import ServiceSettings
from service.shared.network_model import load_network

CONTAINER = "public-keys"
ACCOUNT = "devstoreaccount1"
EI_SCHEME = {"name": "ei", "version": "0.9",
             "params": {"poly_modulus_degree": 8192, "coeff_modulus_bits": [60, 40, 40, 60], "scale_bits": 40}}


def account_key(connection_string: str) -> str:
    return dict(part.split("=", 1) for part in connection_string.split(";") if part)["AccountKey"]


@pytest.fixture(scope="module")
def model():
    return load_model("service/model/mnist/1")


@pytest.fixture(scope="module")
def blob_service(azurite):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    with contextlib.suppress(ResourceExistsError):
        service.create_container(CONTAINER)
    return service


@pytest.fixture(scope="module")
def client():
    return EILinearRegressionClient()


@pytest.fixture(scope="module")
def uploaded_keys(client, blob_service):
    """The seed's flow: the key id names the blob, the public keys are its bytes."""
    key_id, public_keys = client.get_public_keys()
    blob_service.get_blob_client(container=CONTAINER, blob=key_id).upload_blob(public_keys, overwrite=True)
    return key_id, public_keys


def sas_url(azurite, blob_name: str, minutes: float = 30, **permissions) -> str:
    permission = BlobSasPermissions(**(permissions or {"read": True}))
    token = generate_blob_sas(
        ACCOUNT, CONTAINER, blob_name, account_key=account_key(azurite.connection_string),
        permission=permission, expiry=datetime.now(UTC) + timedelta(minutes=minutes),
        start=datetime.now(UTC) - timedelta(minutes=5),
    )
    return f"{azurite.blob_endpoint}/{CONTAINER}/{blob_name}?{token}"


def our_request(ciphertexts, url, key_bytes, scheme=None) -> dict:
    return {"contract": "encrypted-mnist/v1", "scheme": scheme or EI_SCHEME, "ciphertexts": ciphertexts,
            "keys": {"url": url, "sha256": hashlib.sha256(key_bytes).hexdigest()}}


@pytest.fixture(scope="module")
def digit():
    rng = np.random.default_rng(3)
    return rng.random(784) * (rng.random(784) > 0.6)


@pytest.mark.slow
def test_seed_notebook_client_works_unchanged(scoring_service, azurite, blob_service, model, digit):
    """The how-to's client code, verbatim in spirit: only the URL and the connection string change."""
    conn_str, container_name = azurite.connection_string, CONTAINER
    edp = EILinearRegressionClient()
    public_keys_blob, public_keys_data = edp.get_public_keys()
    blob_service_client = BlobServiceClient.from_connection_string(conn_str)
    blob_client = blob_service_client.get_blob_client(container=container_name, blob=public_keys_blob)
    blob_client.upload_blob(public_keys_data, overwrite=True)
    raw_data = edp.encrypt(digit)
    test_sample = json.dumps({"data": raw_data, "key_id": public_keys_blob, "conn_str": conn_str,
                              "container": container_name})
    test_sample = bytes(test_sample, encoding="utf8")
    response = requests.post(scoring_service.url, data=test_sample,
                             headers={"Content-Type": "application/json"}, timeout=300)
    assert response.status_code == 200, response.text
    eresult = response.json()
    assert isinstance(eresult, list) and len(eresult) == 10
    results = edp.decrypt(eresult)
    coef, intercept = model
    assert np.max(np.abs(results - (coef @ digit + intercept))) <= 1e-4
    assert int(np.argmax(results)) == int(np.argmax(coef @ digit + intercept))


@pytest.mark.slow
def test_sas_request_returns_scores_timings_and_sizes(scoring_service, azurite, client, uploaded_keys, model,
                                                      digit):
    key_id, public_keys = uploaded_keys
    body = our_request(client.encrypt(digit), sas_url(azurite, key_id), public_keys)
    answers = [requests.post(scoring_service.url, json=body, timeout=300) for _ in range(3)]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"].startswith("application/json")
    first, *later = [answer.json() for answer in answers]
    assert first["contract"] == "encrypted-mnist/v1" and first["scheme"] == "ei-0.9"
    # Two workers: each has its own cache, so the first request of each is a miss, then hits.
    caches = [answer["server"]["key_cache"] for answer in [first, *later]]
    assert caches[0] == "miss" and "hit" in caches
    server = later[-1]["server"] if caches[-1] == "hit" else later[0]["server"]
    assert server["timings_ms"]["key_fetch"] == 0 and server["timings_ms"]["compute"] > 0
    assert first["server"]["timings_ms"]["key_fetch"] > 0
    assert first["server"]["sizes"]["key_bytes"] == len(public_keys)
    assert first["server"]["sizes"]["ciphertext_bytes"] == len(base64.b64decode(body["ciphertexts"][0]))
    assert first["server"]["sizes"]["request_bytes"] == len(answers[0].request.body)
    assert first["server"]["sizes"]["result_bytes"] > 10 * 100_000
    scores = client.decrypt(first["result"])
    coef, intercept = model
    assert np.max(np.abs(scores - (coef @ digit + intercept))) <= 1e-4


@pytest.mark.slow
def test_a_new_upload_to_the_same_blob_cannot_change_cached_keys(azurite, client, blob_service, model, digit):
    """Keys are cached by (blob, SHA-256): overwriting the blob cannot swap another client's keys.

    In process (one cache, so hit and miss are deterministic), against the real Azurite.
    """
    victim_id, victim_keys = client.get_public_keys()
    blob_name = "shared-" + victim_id
    blob = blob_service.get_blob_client(container=CONTAINER, blob=blob_name)
    blob.upload_blob(victim_keys, overwrite=True)
    url = sas_url(azurite, blob_name)
    settings = dataclasses.replace(ServiceSettings.from_env(), allowed_blob_hosts=frozenset({f"127.0.0.1:{azurite.port}"}),
                                   compute_threads=2)
    service = ScoringService(*model, settings, network=load_network("service/model/mnist/1"))
    try:
        request = json.dumps(our_request(client.encrypt(digit), url, victim_keys))
        status, body = service.handle(request)
        assert (status, body["server"]["key_cache"]) == (200, "miss")
        blob.upload_blob(EILinearRegressionClient().get_public_keys()[1], overwrite=True)  # the "attacker"
        status, body = service.handle(request)
        assert (status, body["server"]["key_cache"]) == (200, "hit")
        coef, intercept = model
        assert np.max(np.abs(client.decrypt(body["result"]) - (coef @ digit + intercept))) <= 1e-4
        # Claiming the blob still holds the victim's bytes does not get the attacker's keys cached.
        other = json.dumps(our_request(client.encrypt(digit), url, victim_keys[:-1]))
        status, body = service.handle(other)
        assert (status, body["error"]) == (422, "key_hash_mismatch")
    finally:
        service.close()


def _sealed(payload: bytes) -> bytes:
    body = zlib.compress(payload)
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 3, 5, 1, 0, 16 + len(body)) + body


def _ei_bad_requests(azurite, client, blob_service, uploaded_keys, digit):
    """(name, body bytes, expected status, expected error code): the seed's ei scheme's own bad input.

    Every other kind of malformed request (for every scheme and both shapes) is in
    tests/test_malformed_requests.py; these need the seed's client and the SEAL 3.5 child process.
    """
    key_id, public_keys = uploaded_keys
    good_ct = client.encrypt(digit)
    good_url = sas_url(azurite, key_id)

    def dumps(body) -> bytes:
        return json.dumps(body).encode()

    def upload(name: str, data: bytes) -> str:
        blob_service.get_blob_client(container=CONTAINER, blob=name).upload_blob(data, overwrite=True)
        return sas_url(azurite, name)

    junk_keys = os.urandom(4096)
    framed_keys = _sealed(os.urandom(3000)) + _sealed(os.urandom(3000))
    return [
        ("random ciphertext bytes", dumps(our_request([base64.b64encode(os.urandom(5000)).decode()], good_url,
                                                      public_keys)), 422, "ciphertext_invalid"),
        ("framed garbage ciphertext (SEAL aborts on it)",
         dumps(our_request([base64.b64encode(_sealed(os.urandom(4000))).decode()], good_url, public_keys)), 422,
         {"ciphertext_invalid", "seal_rejected"}),  # "seal_rejected" when the worker had no keys cached yet
        ("junk key blob", dumps(our_request(good_ct, upload("junk-keys", junk_keys), junk_keys)), 422,
         "key_invalid"),
        ("framed garbage key blob (SEAL aborts on it)",
         dumps(our_request(good_ct, upload("framed-keys", framed_keys), framed_keys)), 422, "seal_rejected"),
        ("key hash mismatch", dumps(our_request(good_ct, good_url, b"other bytes")), 422, "key_hash_mismatch"),
    ]


@pytest.mark.slow
def test_ei_bad_input_gets_a_clear_4xx_and_the_service_keeps_serving(scoring_service, azurite, client, blob_service,
                                                                      uploaded_keys, model, digit):
    cases = _ei_bad_requests(azurite, client, blob_service, uploaded_keys, digit)
    failures = []
    for name, body, status, code in cases:
        answer = requests.post(scoring_service.url, data=body, headers={"Content-Type": "application/json"},
                               timeout=300)
        try:
            payload = answer.json()
        except ValueError:
            payload = {"raw": answer.text[:200]}
        codes = code if isinstance(code, set) else {code}
        if answer.status_code != status or payload.get("error") not in codes or not payload.get("message"):
            failures.append(f"{name}: got {answer.status_code} {payload}, expected {status} {code}")
        health = requests.get(scoring_service.base_url + "/", timeout=30)
        if health.status_code != 200:
            failures.append(f"after {name}: health check answered {health.status_code}")
    assert not failures, "\n".join(failures)
    # Still serving correct answers on both workers afterwards (the SEAL 3.5 child was restarted).
    key_id, public_keys = uploaded_keys
    request = our_request(client.encrypt(digit), sas_url(azurite, key_id), public_keys)
    coef, intercept = model
    for _ in range(2):
        answer = requests.post(scoring_service.url, json=request, timeout=300)
        assert answer.status_code == 200, answer.text
        assert np.max(np.abs(client.decrypt(answer.json()["result"]) - (coef @ digit + intercept))) <= 1e-4


def test_service_log_names_no_secret(scoring_service, azurite, client, uploaded_keys, digit):
    """The log has one line per request, with the blob URL but never a SAS signature or account key."""
    key_id, public_keys = uploaded_keys
    url = sas_url(azurite, key_id)
    answer = requests.post(scoring_service.url, json=our_request(client.encrypt(digit), url, public_keys), timeout=300)
    assert answer.status_code == 200
    signature = parse_qs(urlsplit(url).query)["sig"][0]
    log_text = scoring_service.log_path.read_text(errors="replace")
    assert f"keys={url.split('?')[0]}" in log_text
    for secret in (signature, quote(signature, safe=""), account_key(azurite.connection_string)):
        assert secret not in log_text
