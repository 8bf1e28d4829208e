"""The "Encrypt in my browser" mode in headless Chromium, against the real local stack.

The app runs with its scoring URL pointed at a recording proxy in front of the real service (so every
request body it sends is kept) and inside a launcher that can dump every session's state
(tests/streamlit_with_state_dump.py). A probe installed before the page loads receives the tab's
secret key and the pixels it encrypts, and every websocket frame the tab sends the app is kept. Then:
- drawn digits come back as the plaintext network reads the same canvas, with the tab's stages timed;
- the claim: neither the pixels nor the secret key's bytes are in any frame the tab sent, in the app's
  session state, in its log, in any request body or in any uploaded blob;
- a tampered result is refused in the tab with a clear message, and no prediction is shown.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient
from mouse_redraw import Style, mouse_strokes
from playwright.sync_api import Browser, Locator, Page

from lib.mnist_data import SHARED_TEST_SET, load_test_set
from lib.preprocess import to_mnist
from scripts.local_stack import free_port, running, services
from service.shared.network_model import load_network
from tests.recording_proxy import RecordingProxy
from tests.test_browser import decode_png

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = "tab-mode-tests"
WAIT_MS = 120_000
PROBE = "window.__probe = {frames: []}; window.__encryptedMnistTabProbe = (x) => Object.assign(window.__probe, x);"


@dataclasses.dataclass
class TabApp:
    url: str
    proxy: RecordingProxy
    dump_dir: Path
    log_path: Path
    connection_string: str


@pytest.fixture(scope="module")
def tab_app(azurite, scoring_service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TabApp]:
    """The app on a free port, its scoring URL through a recording proxy, its state dumpable."""
    if not (ROOT / "static" / "browser_encryption.js").is_file():
        pytest.skip("the tab's code is not built (scripts/setup.sh builds static/browser_encryption.js)")
    folder = tmp_path_factory.mktemp("tab-app")
    proxy = RecordingProxy(scoring_service.base_url)
    env = dict(os.environ, BLOB_CONNECTION_STRING=azurite.connection_string, SCORING_URL=proxy.url,
               BLOB_CONTAINER=CONTAINER)  # fmt: skip
    service = services.streamlit_service(free_port(), folder / "streamlit.log", env=env)
    streamlit_args = list(service.command)[3:]  # after "python -m streamlit"
    service = dataclasses.replace(
        service, command=[sys.executable, str(ROOT / "tests" / "streamlit_with_state_dump.py"), str(folder / "dump"),
                          *streamlit_args],
    )  # fmt: skip
    try:
        with running(service):
            yield TabApp(f"http://127.0.0.1:{service.port}", proxy, folder / "dump", service.log_path,
                         azurite.connection_string)  # fmt: skip
    finally:
        proxy.close()


@pytest.fixture
def page(browser: Browser, tab_app: TabApp) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1300}, device_scale_factor=1)
    context.add_init_script(PROBE)
    page = context.new_page()
    page.set_default_timeout(30_000)
    frames: list[bytes] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(
        payload if isinstance(payload, bytes) else payload.encode())))  # fmt: skip
    page.frames_sent = frames  # type: ignore[attr-defined]
    page.goto(tab_app.url)
    page.get_by_role("button", name="Encrypt and classify").wait_for(timeout=WAIT_MS)
    page.get_by_text("Encrypt in my browser").first.click()
    keys = page.get_by_test_id("tab-keys")
    deadline = time.monotonic() + WAIT_MS / 1000
    while "Key pair made" not in keys.inner_text():
        assert time.monotonic() < deadline, f"no key pair in the tab: {keys.inner_text()}"
        page.wait_for_timeout(100)
    yield page
    context.close()


def draw(page: Page, paths: list[np.ndarray]) -> None:
    """Mouse strokes on the tab's own canvas (canvas coordinates, 280 x 280)."""
    box = page.get_by_test_id("tab-canvas").bounding_box()
    assert box is not None
    for path in paths:
        kept = [path[0]]
        for point in path[1:]:
            if np.linalg.norm(point - kept[-1]) >= 4.0:  # a point every few pixels, as a hand moves a mouse
                kept.append(point)
        kept.append(path[-1])
        page.mouse.move(box["x"] + float(kept[0][0]), box["y"] + float(kept[0][1]))
        page.mouse.down()
        for x, y in kept[1:]:
            page.mouse.move(box["x"] + float(x), box["y"] + float(y))
        page.mouse.up()


def classify(page: Page) -> str:
    """Press the tab's button and wait for its outcome; returns the tab's status line."""
    status = page.get_by_test_id("tab-status")
    page.get_by_test_id("tab-classify").click()
    deadline = time.monotonic() + WAIT_MS / 1000
    while not re.match(r"Decrypted|This tab refused|The |Could not", status.inner_text()):
        assert time.monotonic() < deadline, f"no outcome in the tab: {status.inner_text()}"
        page.wait_for_timeout(100)
    return status.inner_text()


def tab_canvas(page: Page) -> np.ndarray:
    canvas: Locator = page.get_by_test_id("tab-canvas")
    return decode_png(canvas.evaluate("c => c.toDataURL('image/png')"))


def test_drawn_digits_come_back_as_the_network_reads_them_with_the_tabs_stages(page: Page) -> None:
    """Three real MNIST test digits traced with the mouse on the tab's canvas: each prediction, made and
    decrypted in the tab, equals the plaintext network's on the canvas's pixels as lib.preprocess reads
    them; the waterfall shows the tab's key generation, encryption and decryption."""
    if not SHARED_TEST_SET.is_dir():
        pytest.skip(f"the real MNIST test set is not at {SHARED_TEST_SET}")
    images, labels = load_test_set(SHARED_TEST_SET)
    network = load_network()
    rng = np.random.default_rng(12)
    for index in (0, 1, 4):  # a 7, a 2 and a 4
        page.get_by_role("button", name="Clear").click()
        draw(page, mouse_strokes(images[index], Style(height=0.7, stroke=20, place=(0.5, 0.5), background="black"), rng))
        status = classify(page)
        assert status.startswith("Decrypted in this tab"), status
        predicted = int(page.get_by_test_id("tab-prediction").inner_text())
        scores = np.array(json.loads(page.get_by_test_id("tab-prediction").get_attribute("data-scores") or "[]"))
        expected = network.logits(to_mnist(tab_canvas(page)).astype(np.float64))
        assert predicted == int(np.argmax(expected)) == int(labels[index]), (index, scores, expected)
        assert np.abs(scores - expected).max() < 0.1
        stages = page.get_by_test_id("tab-waterfall").inner_text()
        for stage in ("tab: key generation (once)", "tab: encrypt", "tab: decrypt", "service: compute"):
            assert re.search(re.escape(stage) + r"\s+\d+(\.\d+)? (ms|s)", stages), stages
    page.screenshot(path=str(ROOT / "artifacts" / "browser_mode.png"), full_page=True)


def _needles(secret_key_b64: str, pixels: list[str]) -> dict[str, list[bytes]]:
    """What would betray each secret, in any encoding it could travel in: raw, base64 at every alignment,
    hex; the pixels as the tab prints them, as float32 bytes and as 0..255 bytes."""
    key = base64.b64decode(secret_key_b64)
    body = key[len(key) // 2 :]  # coefficients, far from the header every SEAL object shares
    chunks = [body[i : i + 48] for i in (0, 1, 2, 4096, 4097, 4098)]
    key_needles = [*chunks, *(base64.b64encode(c)[4:-4] for c in chunks), chunks[0].hex().encode()]
    values = np.array([float(p) for p in pixels], dtype=np.float32)
    ink = np.flatnonzero((values > 0.05) & (values < 0.95))
    assert len(ink) >= 8, "the drawing has too few grey pixels to recognise"
    run = slice(int(ink[0]), int(ink[0]) + 8)
    pixel_needles = [pixels[int(i)].encode() for i in ink[:6]]
    pixel_needles += [values[run].tobytes(), np.rint(values[run] * 255).astype(np.uint8).tobytes(),
                      struct.pack("<8d", *values[run].astype(np.float64))]  # fmt: skip
    return {"secret key": key_needles, "pixels": pixel_needles}


def _found(needles: list[bytes], haystacks: list[bytes]) -> list[int]:
    return [i for i, needle in enumerate(needles) if any(needle in hay for hay in haystacks)]


def test_the_app_process_never_holds_the_pixels_or_the_secret_key(page: Page, tab_app: TabApp) -> None:
    """The claim of the mode, searched for: every frame the tab sent the app, the app's session state,
    its log, every request body it sent the service and every blob it uploaded."""
    if not SHARED_TEST_SET.is_dir():
        pytest.skip(f"the real MNIST test set is not at {SHARED_TEST_SET}")
    images, _ = load_test_set(SHARED_TEST_SET)
    page.get_by_role("button", name="Clear").click()
    draw(page, mouse_strokes(images[3], Style(height=0.6, stroke=14, place=(0.4, 0.6), background="black"),
                             np.random.default_rng(3)))  # fmt: skip
    first_request = len(tab_app.proxy.bodies)
    assert classify(page).startswith("Decrypted in this tab")
    assert classify(page).startswith("Decrypted in this tab")  # a second, warm one too
    probe = page.evaluate("window.__probe")
    needles = _needles(probe["secretKey"], probe["pixels"])

    request = tab_app.dump_dir / "request"
    request.touch()
    deadline = time.monotonic() + 30
    while request.exists():
        assert time.monotonic() < deadline, "the app did not dump its session state"
        time.sleep(0.1)
    state = (tab_app.dump_dir / "state.bin").read_bytes()
    frames: list[bytes] = page.frames_sent  # type: ignore[attr-defined]
    bodies = tab_app.proxy.bodies[first_request:]
    blobs = [blob_client.download_blob().readall() for blob_client in (
        BlobServiceClient.from_connection_string(tab_app.connection_string).get_container_client(CONTAINER)
        .get_blob_client(item.name) for item in BlobServiceClient.from_connection_string(
            tab_app.connection_string).get_container_client(CONTAINER).list_blobs())]  # fmt: skip
    log = tab_app.log_path.read_bytes()

    # The places searched hold what they should: the ciphertext went out, the keys were uploaded, the
    # state was dumped; and the search finds each secret where it is planted.
    assert len(bodies) >= 2 and any(b'"browser"' in body for body in bodies)
    assert blobs and max(len(blob) for blob in blobs) > 5_000_000
    assert any(b"browser_encryption" in frame for frame in frames) and len(state) > 10_000
    for what, found in needles.items():
        planted = json.dumps({"leak": probe["secretKey"] if what == "secret key" else probe["pixels"]}).encode()
        assert _found(found, [planted]), f"the search cannot find the {what} even where it is planted"
        if what == "pixels":
            assert _found(found, [np.array(probe["pixels"], dtype=np.float32).tobytes()])

    for what, found in needles.items():
        for place, haystacks in [("frames the tab sent", frames), ("session state", [state]), ("log", [log]),
                                 ("request bodies", bodies), ("blobs", blobs)]:  # fmt: skip
            assert not _found(found, haystacks), f"the {what} reached the app's {place}"


def test_a_tampered_result_is_refused_in_the_tab(page: Page, tab_app: TabApp) -> None:
    """The service's result changed on the way (its scale field): the tab says why and shows no prediction."""
    if not SHARED_TEST_SET.is_dir():
        pytest.skip(f"the real MNIST test set is not at {SHARED_TEST_SET}")
    images, _ = load_test_set(SHARED_TEST_SET)

    def tamper(body: bytes) -> bytes:
        answer = json.loads(body)
        result = bytearray(base64.b64decode(answer["result"][0]))
        result[16 + 57 : 16 + 65] = struct.pack("<d", 2.0**40)
        answer["result"] = [base64.b64encode(bytes(result)).decode()]
        return json.dumps(answer).encode()

    draw(page, mouse_strokes(images[0], Style(height=0.7, stroke=20, place=(0.5, 0.5), background="black"),
                             np.random.default_rng(1)))  # fmt: skip
    tab_app.proxy.tamper = tamper
    try:
        status = classify(page)
    finally:
        tab_app.proxy.tamper = None
    assert status.startswith("This tab refused the service's result"), status
    assert "scale" in status
    assert not page.get_by_test_id("tab-prediction").is_visible()
    assert classify(page).startswith("Decrypted in this tab")  # the next, untouched result is shown
