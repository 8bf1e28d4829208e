"""The secret key never leaves the process: not in a blob, a request, a log line, stdout or stderr.

A full prediction runs while every outgoing HTTP request (blob uploads included: the Azure SDK
sends through ``requests`` too) is recorded, every log record is captured at DEBUG, and stdout
and stderr are captured at the file-descriptor level (native code included). Then every blob in
the storage account is downloaded. The secret key is searched for as raw bytes, base64 (standard
and URL-safe) and hex, in all of them. Run against the in-process ``ContractScorer`` always, and
against the real scoring service (plus its log file) when the service and model exist.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from azure.storage.blob import BlobServiceClient
from test_session import MODEL_PATH, ContractScorer

from lib.session import EncryptedSession
from lib.settings import AppSettings
from service.shared.seal4 import FILES


def secret_forms(session: EncryptedSession) -> dict[str, bytes]:
    """The session's secret key in every encoding worth looking for (read here, only to search)."""
    if session.scheme_name != "ei":
        return seal4_secret_forms(session)
    b64 = session._client._client.secret_key()  # type: ignore[union-attr]
    raw = base64.b64decode(b64)
    assert len(raw) == 64
    return {
        "raw": raw,
        "base64": b64.encode(),
        "base64 url-safe": base64.urlsafe_b64encode(raw),
        "base64 unpadded": b64.rstrip("=").encode(),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }


def seal4_secret_forms(session: EncryptedSession) -> dict[str, bytes]:
    """A SEAL 4 secret key: its serialization, and its first 64 coefficients raw, base64 and hex."""
    secret = session._client._secret_key  # type: ignore[union-attr]
    data = secret.data()
    raw = np.array([data.data(i) for i in range(64)], dtype="<u8").tobytes()
    assert len(set(raw)) > 16, "the secret key's coefficients look empty"
    return {
        "SEAL serialization": FILES.to_bytes(secret)[16:],
        "raw coefficients": raw,
        "base64": base64.b64encode(raw)[:80],
        "hex": raw.hex().encode(),
    }


class Recorder:
    """Wraps requests.Session.send to keep every outgoing request's URL, headers and body."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = requests.Session.send
        recorder = self

        def send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
            body = request.body
            if isinstance(body, str):
                body = body.encode()
            assert body is None or isinstance(body, bytes), f"unrecorded body type {type(body)}"
            head = f"{request.method} {request.url}\n" + "\n".join(
                f"{k}: {v}" for k, v in request.headers.items()
            )
            recorder.sent.append((head, body or b""))
            return original(session, request, **kwargs)

        monkeypatch.setattr(requests.Session, "send", send)


def all_blobs(connection_string: str) -> Iterator[tuple[str, bytes]]:
    service = BlobServiceClient.from_connection_string(connection_string, api_version="2025-11-05")
    for container in service.list_containers():
        client = service.get_container_client(container.name)
        for blob in client.list_blobs(include=["metadata"]):
            data = client.download_blob(blob.name).readall()
            yield f"{container.name}/{blob.name} {json.dumps(blob.metadata)}", data


def assert_no_secret(forms: dict[str, bytes], where: str, data: bytes) -> None:
    for name, form in forms.items():
        assert form not in data, f"the secret key ({name}) appears in {where}"


def run_and_check(
    settings: AppSettings,
    scorer: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    service_log: Path | None = None,
    scheme: str = "ei",
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = Recorder()
    recorder.install(monkeypatch)
    digit = np.random.default_rng(11).random(784)

    session = EncryptedSession.start(
        settings, lambda m, f: print(f"progress {f:.0%} {m}"), scheme=scheme, scorer=scorer
    )
    try:
        forms = secret_forms(session)
        blob_url = session.key_blob_url
        predictions = [session.predict(digit), session.predict(digit)]
        print(repr(session), session.__dict__, predictions)
        logging.getLogger("test").debug("session %r predictions %r", session, predictions)

        # What was sent: the request bodies the session built, and every HTTP request on the wire.
        for prediction in predictions:
            assert_no_secret(forms, "the request body", json.dumps(prediction.request_body).encode())
        assert any(blob_url.split("?")[0] in head for head, _ in recorder.sent), "the upload was not recorded"
        assert any(len(body) == session.key_bytes for _, body in recorder.sent), "the key upload was not seen"
        for head, body in recorder.sent:
            assert_no_secret(
                forms, f"an HTTP request ({head.splitlines()[0][:80]})", head.encode() + b"\n" + body
            )

        # What was stored: every blob in the account.
        blobs = list(all_blobs(settings.blob_connection_string))
        assert any(session.key_id in name for name, _ in blobs), "the public-key blob is missing"
        for name, data in blobs:
            assert_no_secret(forms, f"blob {name}", name.encode() + data)
    finally:
        session.close()

    # What was logged or printed, by Python or by native code.
    captured = capfd.readouterr()
    assert "progress" in captured.out, "stdout capture is not working"
    assert_no_secret(forms, "stdout", captured.out.encode())
    assert_no_secret(forms, "stderr", captured.err.encode())
    assert caplog.records, "log capture is not working"
    assert_no_secret(forms, "the captured logs", caplog.text.encode())
    if service_log is not None:
        assert service_log.is_file() and service_log.stat().st_size > 0
        assert_no_secret(forms, f"the service log {service_log}", service_log.read_bytes())


@pytest.mark.slow
@pytest.mark.integration
def test_secret_key_stays_in_process_with_contract_scorer(
    azurite,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = AppSettings(blob_connection_string=azurite.connection_string, blob_container="secret-tests")
    run_and_check(settings, ContractScorer(), monkeypatch, caplog, capfd)


@pytest.mark.integration
@pytest.mark.parametrize("scheme", [pytest.param("ei", marks=pytest.mark.slow), "ckks", "bfv"])
def test_secret_key_stays_in_process_with_real_service(
    scheme: str,
    azurite,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    if not MODEL_PATH.is_file():
        pytest.skip(f"{MODEL_PATH.name} has not been trained yet (scripts/train_model.py)")
    service = request.getfixturevalue("scoring_service")
    settings = AppSettings(
        blob_connection_string=azurite.connection_string,
        blob_container="secret-tests",
        scoring_url=service.url,
        scoring_timeout_s=300,
    )
    run_and_check(settings, None, monkeypatch, caplog, capfd, getattr(service, "log_path", None), scheme)
