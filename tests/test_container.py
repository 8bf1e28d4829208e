"""Opt-in (CONTAINER_TESTS=1): the scoring service image, built with podman and run, predicts right.

``scripts/container.sh`` builds ``service/Dockerfile`` (installing podman, runc and debootstrap and
making the Debian base image once, if missing; later runs reuse the cached layers). The container runs
with host networking on a free port (SCORING_PORT, read by the image's CMD), allowed to fetch keys
from the ``azurite`` fixture. Then: the real client's SAS-shaped requests (ckks, bfv) and the seed's
request shape (ei) get the plaintext model's answer, the service runs as a non-root user, and the
image holds no storage key. The container is stopped and removed at the end.

Needs root, and about 2 minutes on a first run (measured here: 1 min for the tools and the Debian base
image, 1 min for the first build; later runs take about 12 s), so it is not part of the default run:
``CONTAINER_TESTS=1 .venv/bin/python -m pytest tests/test_container.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from encrypted.inference.eiclient import EILinearRegressionClient

from lib.digits import gallery
from lib.reference import load_reference_model
from lib.session import EncryptedSession
from lib.settings import AppSettings
from scripts.chromium import CHROMIUM, CHROMIUM_FLAGS
from scripts.local_stack import HOST, free_port

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("IMAGE", "localhost/encrypted-mnist-scoring:dev")
PODMAN = ["podman", "--runtime", "runc"]  # crun fails on this machine's cgroups
SEED_CONTAINER = "seed-public-keys"
READY_TIMEOUT_S = 180.0

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        os.environ.get("CONTAINER_TESTS") != "1",
        reason="opt-in: set CONTAINER_TESTS=1 to build the service image with podman (scripts/container.sh, "
        "root, minutes on a first run) and run it",
    ),
]


@dataclass(frozen=True)
class Container:
    """A running scoring-service container (host network) on 127.0.0.1:``port``."""

    name: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/score"


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert not check or done.returncode == 0, (
        f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    )
    return done


def ulimits() -> list[str]:
    """Explicit limits at or below this process's: podman's defaults (1M files, 4M processes) are above
    what this machine lets runc set ("error setting rlimits ... operation not permitted")."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 65536)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (or brought up to date from cached layers) by scripts/container.sh."""
    build = subprocess.run([str(ROOT / "scripts" / "container.sh")], cwd=ROOT, capture_output=True, text=True,
                           check=False, timeout=1800, env=dict(os.environ, IMAGE=IMAGE))  # fmt: skip
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print(*(line for line in build.stderr.splitlines() if line.startswith("container:")), sep="\n")
    return IMAGE


def _ready(container: Container) -> bool:
    """GET / says Healthy and POST /score answers (a JSON 4xx for an empty request: init() is done)."""
    try:
        health = requests.get(container.base_url + "/", timeout=5)
        if health.status_code != 200 or "Healthy" not in health.text:
            return False
        score = requests.post(container.url, json={}, timeout=30)
    except requests.RequestException:  # the port accepts connections before init() finishes
        return False
    is_json = score.headers.get("Content-Type", "").startswith("application/json")
    return 400 <= score.status_code < 500 and is_json


@pytest.fixture(scope="module")
def container(image: str, azurite) -> Iterator[Container]:
    """The image running on a free port, allowed to fetch keys from ``azurite``; removed at the end."""
    port = free_port()
    name = f"encrypted-mnist-scoring-test-{port}"
    started = time.monotonic()
    try:
        podman("run", "--detach", "--name", name, "--network=host", *ulimits(),
               "-e", f"SCORING_PORT={port}", "-e", f"ALLOWED_BLOB_HOSTS={HOST}:{azurite.port}", image)  # fmt: skip
        ctr = Container(name, port)
        while not _ready(ctr):
            state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
            if state != "running" or time.monotonic() - started > READY_TIMEOUT_S:
                logs = podman("logs", name, check=False)
                pytest.fail(f"container {name} not ready ({state}) after {time.monotonic() - started:.0f} s:\n"
                            f"{logs.stdout[-3000:]}{logs.stderr[-3000:]}")  # fmt: skip
            time.sleep(0.5)
        print(f"container {name}: ready in {time.monotonic() - started:.1f} s")
        yield ctr
    finally:
        podman("stop", "--time", "10", name, check=False)
        podman("rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def digit() -> tuple[np.ndarray, int]:
    """A gallery digit and the plaintext model's label for it."""
    images, _labels = gallery()
    pixels = np.asarray(images[0], dtype=np.float64)
    return pixels, int(np.argmax(load_reference_model().scores(pixels)))


def test_the_server_says_healthy(container: Container) -> None:
    answer = requests.get(container.base_url + "/", timeout=10)
    assert answer.status_code == 200 and "Healthy" in answer.text


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_a_sas_shaped_request_from_the_real_client(container: Container, azurite, digit, scheme: str) -> None:
    pixels, label = digit
    settings = AppSettings(blob_connection_string=azurite.connection_string, scoring_url=container.url)
    with EncryptedSession.start(settings, scheme=scheme) as session:
        prediction = session.predict(pixels)
    expected = load_reference_model().scores(pixels)
    assert prediction.label == label
    assert float(np.max(np.abs(prediction.scores - expected))) <= 1e-3


def test_a_seed_shaped_request_for_ei(container: Container, azurite, digit) -> None:
    """The seed's client: public keys uploaded with the connection string, which goes in the request."""
    pixels, label = digit
    conn_str = azurite.connection_string
    edp = EILinearRegressionClient()
    key_id, public_keys = edp.get_public_keys()
    blob_service = BlobServiceClient.from_connection_string(conn_str)
    with contextlib.suppress(ResourceExistsError):
        blob_service.create_container(SEED_CONTAINER)
    blob_service.get_blob_client(container=SEED_CONTAINER, blob=key_id).upload_blob(
        public_keys, overwrite=True
    )
    body = json.dumps(
        {"data": edp.encrypt(pixels), "key_id": key_id, "conn_str": conn_str, "container": SEED_CONTAINER}
    )
    answer = requests.post(container.url, data=body.encode("utf8"), headers={"Content-Type": "application/json"},
                           timeout=300)  # fmt: skip
    assert answer.status_code == 200, answer.text[:2000]
    results = edp.decrypt(answer.json())
    assert int(np.argmax(results)) == label
    assert float(np.max(np.abs(np.asarray(results) - load_reference_model().scores(pixels)))) <= 1e-3


def test_the_service_runs_as_a_non_root_user(container: Container) -> None:
    uid = podman("exec", container.name, "id", "-u").stdout.strip()
    assert uid.isdigit() and int(uid) != 0
    # Every process of the container, gunicorn's master and workers included.
    top = podman("top", container.name, "user", "args").stdout.splitlines()[1:]
    assert top and all(line.split()[0] != "root" for line in top), top


def test_no_secret_in_the_image(image: str, azurite) -> None:
    inspect = json.loads(podman("image", "inspect", image).stdout)[0]
    env = inspect["Config"].get("Env") or []
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    account_key = dict(part.split("=", 1) for part in azurite.connection_string.split(";") if part)[
        "AccountKey"
    ]
    for text in ("\n".join(env), history, json.dumps(inspect)):
        assert "AccountKey" not in text and account_key not in text
    assert not [
        item for item in env if item.split("=", 1)[0].upper().endswith(("KEY", "SECRET", "PASSWORD", "TOKEN"))
    ]
    assert any(item.startswith("AZUREML_ENTRY_SCRIPT=") for item in env)


# --- the app's image (app.Dockerfile), against the scoring container above --------------------------

APP_IMAGE = os.environ.get("APP_IMAGE", "localhost/encrypted-mnist-app:dev")


@pytest.fixture(scope="module")
def app_image() -> str:
    """The app's image, built (or brought up to date) by ``scripts/container.sh app``."""
    build = subprocess.run([str(ROOT / "scripts" / "container.sh"), "app"], cwd=ROOT, capture_output=True,
                           text=True, check=False, timeout=1800, env=dict(os.environ, APP_IMAGE=APP_IMAGE))  # fmt: skip
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return APP_IMAGE


@pytest.fixture(scope="module")
def app_container(app_image: str, container: Container, azurite) -> Iterator[str]:
    """The app image on a free port, using the tests' Azurite and the scoring container; yields its URL."""
    port = free_port()
    name = f"encrypted-mnist-app-test-{port}"
    url = f"http://{HOST}:{port}"
    started = time.monotonic()
    try:
        podman("run", "--detach", "--name", name, "--network=host", *ulimits(), "-e", f"STREAMLIT_PORT={port}",
               "-e", f"BLOB_CONNECTION_STRING={azurite.connection_string}", "-e", f"SCORING_URL={container.url}",
               app_image)  # fmt: skip
        while True:
            try:
                if requests.get(f"{url}/_stcore/health", timeout=5).text.strip() == "ok":
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - started > READY_TIMEOUT_S:
                logs = podman("logs", name, check=False)
                pytest.fail(f"app container not ready after {READY_TIMEOUT_S:.0f} s:\n{logs.stdout[-3000:]}"
                            f"{logs.stderr[-3000:]}")  # fmt: skip
            time.sleep(0.5)
        yield url
    finally:
        podman("stop", "--time", "10", name, check=False)
        podman("rm", "--force", name, check=False)


def test_the_app_image_classifies_a_picked_digit_through_the_scoring_container(app_container: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(app_container, wait_until="networkidle")
            page.get_by_role("radio", name="Pick a test digit").click()
            page.get_by_text("True label").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Encrypt and classify").click()
            predicted = page.locator("#predicted-digit")
            predicted.wait_for(timeout=120_000)
            digit = predicted.inner_text().strip()
            assert digit.isdigit()
            agreement = page.get_by_text(f"Yes: both {digit}")
            agreement.wait_for(timeout=30_000)  # the plaintext model on the same pixels agrees
            _classify_in_the_tab(page)
        finally:
            browser.close()


def _classify_in_the_tab(page) -> None:
    """The image's "Encrypt in my browser" mode: its tab code is served, makes keys and gets a result back."""
    page.get_by_text("Encrypt in my browser").first.click()
    keys, status = page.get_by_test_id("tab-keys"), page.get_by_test_id("tab-status")
    deadline = time.monotonic() + 60
    while "Key pair made" not in keys.inner_text():
        assert time.monotonic() < deadline, keys.inner_text()
        page.wait_for_timeout(200)
    box = page.get_by_test_id("tab-canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 140, box["y"] + 50)
    page.mouse.down()
    for y in range(60, 240, 10):  # a 1
        page.mouse.move(box["x"] + 140, box["y"] + y)
    page.mouse.up()
    page.get_by_test_id("tab-classify").click()
    deadline = time.monotonic() + 120
    while not status.inner_text().startswith(("Decrypted", "This tab refused", "The ")):
        assert time.monotonic() < deadline, status.inner_text()
        page.wait_for_timeout(200)
    assert status.inner_text().startswith("Decrypted in this tab"), status.inner_text()
    assert page.get_by_test_id("tab-prediction").inner_text().strip().isdigit()


def test_the_app_runs_as_a_non_root_user_with_no_secret_in_its_image(app_image: str, app_container: str,
                                                                    azurite) -> None:  # fmt: skip
    inspect = json.loads(podman("image", "inspect", app_image).stdout)[0]
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", app_image).stdout
    account_key = dict(part.split("=", 1) for part in azurite.connection_string.split(";") if part)["AccountKey"]
    for text in (json.dumps(inspect), history):
        assert "AccountKey" not in text and account_key not in text
    assert inspect["Config"]["User"] not in ("", "0", "root")
