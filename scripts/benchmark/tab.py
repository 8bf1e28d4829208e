"""Benchmark of the "Encrypt in my browser" mode: issue 12's targets, in headless Chromium, on this machine.

    .venv/bin/python -m scripts.benchmark.tab [--digits N] [--warm N] [--tabs N]    # about a minute

It starts its own stack on free ports in a temporary STACK_DIR (Azurite, the scoring service with 2
workers, the app), then opens --tabs (default 3) fresh tabs, each its own browser context so that
nothing is cached between them, in Debian's Chromium, headless, launched as the browser tests launch
it (scripts/chromium.py). In each tab it switches to "Encrypt in my browser", waits for the tab's key
pair, traces real MNIST test digits (the first --digits of the test set, in turn) with the mouse on
the tab's canvas (tests/mouse_redraw.py) and presses the button: one first prediction per tab (the
tab uploaded its public keys as soon as it made them; the service's key cache is cold), then the
tab's share of --warm (default 20) warm ones. Every time is the tab's own, read from the waterfall's
``data-timings`` (``performance.now()`` in the tab):

- key generation plus encryption (target 300 ms): the median key generation of the fresh tabs plus
  the median encrypt of the warm predictions;
- end to end, warm (target 500 ms): the tab's total (normalise + encrypt + relay + decrypt, from the
  click to the shown result) of the predictions after a tab's first: the median, and the p95 besides;
- the component's assets (target 5 MB): the decoded bodies of every response whose URL contains
  ``app/static/`` (the largest tab's) plus the loader JS that Streamlit sends inline; also printed:
  the bytes on the wire (Streamlit gzips), static/browser_encryption.js's size and its gzip -9 size.

For context it prints SEAL's load and context creation, the stages (normalise, encrypt, the relay and
the service's own time within it, compute, decrypt), a tab's first prediction, key-cache misses, how
many predictions equal the plaintext network's on the tab's canvas (read back with ``toDataURL``,
normalised by ``lib.preprocess``), and node-seal in Node measured in the same run once the stack has
stopped (tests/node_tab.py: the same tab_seal.js, a fresh process per tab, encrypting what that tab
encrypted), with the ratio Chromium / Node for key generation and encrypt.

Exit status 0 if every target is met, 1 if one is not, 130 on Ctrl-C. Everything it starts is stopped
on exit, Ctrl-C, SIGTERM and SIGHUP; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import importlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lib.formatting import MISSING, format_bytes, format_factor, format_percent, format_seconds, is_number
from scripts.benchmark.mixed import percentile
from scripts.benchmark.report import table
from scripts.benchmark.stoppable import run_stoppable
from scripts.chromium import CHROMIUM, CHROMIUM_FLAGS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Response

    from service.shared.network_model import NetworkWeights

# Issue 12's targets, in its words: "key generation plus encryption ≤ 300 ms, end to end ≤ 500 ms warm,
# the component's assets ≤ 5 MB" (MB as everywhere in this project: 10^6 bytes).
KEYGEN_ENCRYPT_TARGET_MS = 300.0
END_TO_END_WARM_TARGET_MS = 500.0
ASSETS_TARGET_BYTES = 5_000_000

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "static" / "browser_encryption.js"
STATIC = "app/static/"
WORKERS = 2  # the scoring service's gunicorn workers, as in the local stack
WAIT_S = 180.0  # the app's start, a tab's key pair, one prediction: generous on a busy 2-core machine
POLL_MS = 20
DIGITS, WARM, TABS = 10, 20, 3


def format_ms(ms: float | None) -> str:
    """Milliseconds as lib.formatting shows durations: '125 ms', '4.9 ms', '1.20 s'."""
    return format_seconds(ms / 1000 if ms is not None and is_number(ms) else None)


# ------------------------------------------------------------------------------ the pure parts


@dataclass(frozen=True)
class Target:
    """Issue 12's goal ``wording``: the measured figure must be at most ``limit`` (ms or bytes)."""

    key: str
    wording: str
    limit: float
    show: Callable[[float | None], str]


TARGETS: tuple[Target, ...] = (
    Target("keygen_encrypt", "key generation plus encryption ≤ 300 ms", KEYGEN_ENCRYPT_TARGET_MS, format_ms),
    Target("end_to_end_warm", "end to end ≤ 500 ms warm", END_TO_END_WARM_TARGET_MS, format_ms),
    Target("assets", "the component's assets ≤ 5 MB", ASSETS_TARGET_BYTES, format_bytes),
)


@dataclass(frozen=True)
class TargetRow:
    """One target with what was measured: ratio = measured / limit; met when measured ≤ limit."""

    target: Target
    measured: float | None

    @property
    def ratio(self) -> float | None:
        if self.measured is None or not is_number(self.measured) or self.target.limit <= 0:
            return None
        return self.measured / self.target.limit

    @property
    def met(self) -> bool:
        return self.ratio is not None and self.measured is not None and self.measured <= self.target.limit

    def cells(self) -> list[str]:
        met = "yes" if self.met else ("not measured" if self.ratio is None else "NO")
        return [self.target.wording, self.target.show(self.measured), format_factor(self.ratio), met]


def target_rows(measured: Mapping[str, float | None], targets: Sequence[Target] = TARGETS) -> list[TargetRow]:
    """A row per target, in order; a target missing from ``measured`` is 'not measured' (and not met)."""
    return [TargetRow(target, measured.get(target.key)) for target in targets]


def all_met(rows: Sequence[TargetRow]) -> bool:
    return bool(rows) and all(row.met for row in rows)


def targets_table(rows: Sequence[TargetRow]) -> str:
    return table(["target (issue 12)", "measured", "measured / target", "met"], [row.cells() for row in rows])


@dataclass(frozen=True)
class Spread:
    """Median (the usual one: the mean of the middle two for an even count), nearest-rank p95, range."""

    n: int
    median: float | None
    p95: float | None
    low: float | None
    high: float | None


def spread(values: Sequence[float]) -> Spread:
    """The spread of ``values``; every figure None when there are none."""
    if not values:
        return Spread(0, None, None, None, None)
    return Spread(len(values), statistics.median(values), percentile(values, 95), min(values), max(values))


def split_warm(warm: int, tabs: int) -> list[int]:
    """--warm predictions over the tabs, as evenly as can be, the first ones taking the rest: 20, 3 -> 7, 7, 6."""
    if tabs < 1 or warm < 0:
        raise ValueError("need at least one tab and no negative count")
    return [warm // tabs + (1 if k < warm % tabs else 0) for k in range(tabs)]


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, None when either is unknown or the reference is 0."""
    if value is None or reference is None or not is_number(value) or not is_number(reference):
        return None
    if reference == 0:
        return None
    return value / reference


# ------------------------------------------------------------------------------ what a tab shows


@dataclass(frozen=True)
class Shown:
    """One prediction as the tab showed it, with the plaintext network's reading of the same canvas."""

    digit: int  # index in the MNIST test set
    label: int  # its true label
    predicted: int  # the tab's
    plaintext: int  # the plaintext network's argmax on the tab's canvas
    score_error: float  # max |tab's score - plaintext network's score|
    timings: dict[str, Any]  # the waterfall's data-timings
    pixels: np.ndarray  # the canvas as lib.preprocess normalises it (what the tab encrypted)

    def ms(self, stage: str) -> float:
        return float(self.timings[stage])

    def server_ms(self, name: str | None = None) -> float:
        """The service's own time (every stage on its side), or that of the one stage ``name``."""
        stages = [s for s in self.timings["server"] if s["side"] == "server" and name in (None, s["name"])]
        return float(sum(s["ms"] for s in stages))

    @property
    def key_cache_miss(self) -> bool:
        return any("miss" in s["name"] for s in self.timings["server"])


@dataclass(frozen=True)
class Assets:
    """What a fresh tab downloaded from ``app/static/``: bodies as decoded, bytes on the wire, responses."""

    body_bytes: int
    wire_bytes: int
    responses: int


@dataclass(frozen=True)
class FreshTab:
    assets: Assets
    shown: list[Shown]  # the first prediction, then the warm ones

    @property
    def setup(self) -> dict[str, float]:
        first = self.shown[0].timings
        return {"load": float(first["setup"]["load"]), "context": float(first["setup"]["context"]),
                "keygen": float(first["keygen"])}  # fmt: skip


@dataclass(frozen=True)
class NodeFigures:
    """node-seal in Node, one fresh process per tab: key pair (load + context + keygen), a second key
    pair in the same process (context + keygen) and the warm encrypts (each process's first left out)."""

    version: str
    fresh_keygen: list[float]
    again_keygen: list[float]
    warm_encrypt: list[float]


# ------------------------------------------------------------------------------ the browser


def draw(page: Page, strokes: list[np.ndarray]) -> None:
    """Press, move and release the mouse along each stroke (canvas coordinates), a point every 4 px."""
    box = page.get_by_test_id("tab-canvas").bounding_box()
    if box is None:
        raise RuntimeError("the tab's canvas is not on the page")
    for path in strokes:
        kept = [path[0]]
        kept += [p for p in path[1:-1] if np.linalg.norm(p - kept[-1]) >= 4.0] + [path[-1]]
        page.mouse.move(box["x"] + float(kept[0][0]), box["y"] + float(kept[0][1]))
        page.mouse.down()
        for x, y in kept[1:]:
            page.mouse.move(box["x"] + float(x), box["y"] + float(y))
        page.mouse.up()


def wait_until(page: Page, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {WAIT_S:.0f} s")
        page.wait_for_timeout(POLL_MS)


def open_tab(browser: Browser, url: str, responses: list[Response]) -> Page:
    """A fresh context and page on the app, in "Encrypt in my browser", once the tab's key pair exists."""
    context = browser.new_context(viewport={"width": 1400, "height": 1300}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    page.on("response", lambda response: responses.append(response) if STATIC in response.url else None)
    page.goto(url)
    page.get_by_role("button", name="Encrypt and classify").wait_for()  # the app is up (its default mode)
    page.get_by_text("Encrypt in my browser").first.click()
    keys = page.get_by_test_id("tab-keys")
    keys.wait_for()
    wait_until(page, lambda: "Key pair made" in keys.inner_text(), "key pair in the tab")
    return page


def measure_assets(responses: Sequence[Response]) -> Assets:
    """Decoded bodies and bytes on the wire (encoded body + headers, as Chromium counted them)."""
    body = wire = 0
    for response in responses:
        body += len(response.body())
        sizes = response.request.sizes()
        wire += sizes["responseBodySize"] + sizes["responseHeadersSize"]
    return Assets(body, wire, len(responses))


def classify(page: Page) -> dict[str, Any]:
    """Press the tab's button; the tab's timings once it shows the (new) result."""
    waterfall, status = page.get_by_test_id("tab-waterfall"), page.get_by_test_id("tab-status")
    before = waterfall.get_attribute("data-timings")
    page.get_by_test_id("tab-classify").click()

    def finished() -> bool:
        if any(kind in (status.get_attribute("class") or "") for kind in ("error", "warning")):
            raise RuntimeError(f"the tab says: {status.inner_text()}")
        return waterfall.get_attribute("data-timings") not in (None, before)

    wait_until(page, finished, "result in the tab")
    if not status.inner_text().startswith("Decrypted in this tab"):
        raise RuntimeError(f"unexpected status in the tab: {status.inner_text()}")
    return dict(json.loads(waterfall.get_attribute("data-timings") or "{}"))


def canvas_rgba(page: Page) -> np.ndarray:
    from PIL import Image

    url = str(page.get_by_test_id("tab-canvas").evaluate("c => c.toDataURL('image/png')"))
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1]))).convert("RGBA"))


def predict(page: Page, digit: int, image: np.ndarray, label: int, network: NetworkWeights) -> Shown:
    """Clear, trace the digit, classify; checked against the plaintext network on the tab's canvas."""
    from lib.preprocess import to_mnist

    # By name: mypy checks scripts/, not tests/, and would otherwise follow this import into tests/.
    redraw = importlib.import_module("tests.mouse_redraw")
    page.get_by_role("button", name="Clear").click()
    style = redraw.Style(height=0.7, stroke=20, place=(0.5, 0.5), background="black")  # the tab's stroke: 20
    draw(page, redraw.mouse_strokes(image, style, np.random.default_rng([12, digit])))
    timings = classify(page)
    prediction = page.get_by_test_id("tab-prediction")
    scores = np.asarray(json.loads(prediction.get_attribute("data-scores") or "[]"), dtype=np.float64)
    pixels = to_mnist(canvas_rgba(page))
    plaintext = network.logits(pixels.astype(np.float64))
    return Shown(digit, label, int(prediction.inner_text()), int(np.argmax(plaintext)),
                 float(np.abs(scores - plaintext).max()), timings, pixels)  # fmt: skip


def run_tab(browser: Browser, url: str, digits: Sequence[int], test_set: tuple[np.ndarray, np.ndarray],
            network: NetworkWeights) -> FreshTab:  # fmt: skip
    """One fresh tab: its assets, then a prediction per digit (the first one cold)."""
    responses: list[Response] = []
    page = open_tab(browser, url, responses)
    try:
        assets = measure_assets(responses)
        images, labels = test_set
        shown = [predict(page, d, images[d], int(labels[d]), network) for d in digits]
    finally:
        page.context.close()
    return FreshTab(assets, shown)


def run_browser(
    url: str, plan: Sequence[Sequence[int]], test_set: tuple[np.ndarray, np.ndarray]
) -> tuple[str, list[FreshTab]]:
    """Chromium's version and a FreshTab per entry of ``plan`` (each the digits that tab draws)."""
    from playwright.sync_api import sync_playwright

    from service.shared.network_model import load_network

    network = load_network()
    tabs: list[FreshTab] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            for k, digits in enumerate(plan, 1):
                print(f"tab {k}/{len(plan)}: fresh context, key pair, {len(digits)} predictions", flush=True)
                tabs.append(run_tab(browser, url, digits, test_set, network))
            return browser.version, tabs
        finally:
            browser.close()


# ------------------------------------------------------------------------------ the stack and Node


@contextlib.contextmanager
def local_app() -> Iterator[tuple[str, list[int]]]:
    """Azurite, the scoring service and the app on free ports in a temporary STACK_DIR; their URL and pids."""
    from scripts.local_stack import LocalStack, free_port, running, services

    with contextlib.ExitStack() as cleanup:
        stack_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="benchmark-tab-")))
        azurite_port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("SCORING_KEY", "STACK_DIR")}
        env["ALLOWED_BLOB_HOSTS"] = f"127.0.0.1:{azurite_port}"
        stack = LocalStack(azurite_port=azurite_port, scoring_port=free_port(), workers=WORKERS,
                           stack_dir=stack_dir, env=env)  # fmt: skip
        cleanup.callback(stack.stop)  # before start: a Ctrl-C while starting stops it too
        print(f"starting Azurite, the scoring service ({WORKERS} workers), the app: free ports", flush=True)
        stack.start()
        app_env = {**env, **stack.app_env()}
        app = services.streamlit_service(free_port(), stack_dir / "streamlit.log", env=app_env)
        proc = cleanup.enter_context(running(app))
        pids = [p.pid for p in (stack.azurite_proc, stack.scoring_proc, proc) if p is not None]
        yield f"http://127.0.0.1:{app.port}", pids
        print("stopping the local stack ...", flush=True)


def node_version() -> str:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "node-seal").is_dir():
        raise RuntimeError("Node and node_modules/node-seal are needed (scripts/setup.sh installs them)")
    return subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def run_node(pixels_per_tab: Sequence[Sequence[np.ndarray]]) -> NodeFigures:
    """node-seal in Node (tests/node_tab.py), a fresh process per tab, encrypting what that tab encrypted."""
    from lib.tab_mode import tab_config
    from tests.node_tab import NodeTab

    class TimedNodeTab(NodeTab):
        """NodeTab with the times its Node process measures (performance.now() around each call)."""

        def encrypt_ms(self, pixels: np.ndarray) -> float:
            request = {"cmd": "encrypt", "pixels": np.asarray(pixels, dtype=float).tolist()}
            return float(self._ask(request)["ms"])

        def keygen_again_ms(self) -> float:
            return float(self._ask({"cmd": "keygen", "config": tab_config()})["ms"])

    figures = NodeFigures(node_version(), [], [], [])
    for pixels in pixels_per_tab:
        node = TimedNodeTab()
        try:
            figures.fresh_keygen.append(node.keygen_ms)
            encrypts = [node.encrypt_ms(p) for p in pixels]
            figures.warm_encrypt.extend(encrypts[1:])
            figures.again_keygen.append(node.keygen_again_ms())
        finally:
            node.close()
    return figures


# ------------------------------------------------------------------------------ the report


def warm(tabs: Sequence[FreshTab]) -> list[Shown]:
    return [shown for tab in tabs for shown in tab.shown[1:]]


def measured_targets(tabs: Sequence[FreshTab], loader_bytes: int) -> dict[str, float | None]:
    keygen = spread([tab.setup["keygen"] for tab in tabs]).median
    encrypt = spread([s.ms("encrypt") for s in warm(tabs)]).median
    return {
        "keygen_encrypt": None if keygen is None or encrypt is None else keygen + encrypt,
        "end_to_end_warm": spread([s.ms("total") for s in warm(tabs)]).median,
        "assets": max(tab.assets.body_bytes for tab in tabs) + loader_bytes if tabs else None,
    }


def loader_js_bytes() -> int:
    """The component's loader (ui/browser_encryption.py), as Streamlit sends it inline, bundle hash in."""
    from ui.browser_encryption import _LOADER

    return len(_LOADER.replace("BUNDLE_HASH", hashlib.sha256(BUNDLE.read_bytes()).hexdigest()[:16]).encode())


def _med(values: Sequence[float]) -> str:
    return format_ms(spread(values).median)


def _row(figure: str, tab: Sequence[float] | str, node: Sequence[float] | None = None) -> list[str]:
    """A figure: the tab's median (or a text), Node's median and the ratio tab / Node where there is one."""
    shown = tab if isinstance(tab, str) else _med(tab)
    if node is None or isinstance(tab, str):
        return [figure, shown, MISSING, MISSING]
    return [figure, shown, _med(node), format_factor(ratio(spread(tab).median, spread(node).median))]


def stage_rows(tabs: Sequence[FreshTab], node: NodeFigures) -> list[list[str]]:
    setups, hot = [tab.setup for tab in tabs], warm(tabs)
    keygens = [s["keygen"] for s in setups]
    total = spread([s.ms("total") for s in hot])
    return [
        _row("SEAL load (WebAssembly), per fresh tab", [s["load"] for s in setups]),
        _row("SEAL context, per fresh tab", [s["context"] for s in setups]),
        _row("key generation, per fresh tab: " + ", ".join(format_ms(k) for k in keygens), keygens),
        _row("load + context + key generation (fresh tab / fresh Node process)",
             [s["load"] + s["context"] + s["keygen"] for s in setups], node.fresh_keygen),
        _row("context + key generation (SEAL loaded; Node: a 2nd key pair)",
             [s["context"] + s["keygen"] for s in setups], node.again_keygen),
        _row("normalise to 28×28, warm", [s.ms("normalise") for s in hot]),
        _row("encrypt, warm", [s.ms("encrypt") for s in hot], node.warm_encrypt),
        _row("relay tab → app → service → tab, warm", [s.ms("relay") for s in hot]),
        _row("  of which the service's own time (parse, key fetch, compute)", [s.server_ms() for s in hot]),
        _row("  its share of the relay (median)",
             format_percent(spread([ratio(s.server_ms(), s.ms("relay")) or 0.0 for s in hot]).median, 0)),
        _row("  service compute", [s.server_ms("compute") for s in hot]),
        _row("decrypt, warm", [s.ms("decrypt") for s in hot]),
        _row("end to end, warm: p95 (of 500 ms)",
             f"{format_ms(total.p95)} ({format_factor(ratio(total.p95, END_TO_END_WARM_TARGET_MS))})"),
        _row("end to end, warm: range", f"{format_ms(total.low)} – {format_ms(total.high)}"),
        _row("end to end, a tab's first prediction (the service's key cache cold)",
             [tab.shown[0].ms("total") for tab in tabs]),
    ]


def _count(checks: Iterable[bool]) -> str:
    """'19/20': how many of the checks hold."""
    done = list(checks)
    return f"{sum(done)}/{len(done)}"


def check_rows(tabs: Sequence[FreshTab], loader_bytes: int, other_cpu: float | None) -> list[list[str]]:
    every, hot = [s for tab in tabs for s in tab.shown], warm(tabs)
    bundle = BUNDLE.read_bytes()
    worst = max(tabs, key=lambda tab: tab.assets.body_bytes).assets
    rows = [
        ("warm predictions that missed the service's key cache", _count(s.key_cache_miss for s in hot)),
        ("tab's prediction = plaintext network on its canvas", _count(s.predicted == s.plaintext for s in every)),
        ("tab's prediction = the MNIST label", _count(s.predicted == s.label for s in every)),
        ("max |tab's score - plaintext network's score|", f"{max(s.score_error for s in every):.1e}"),
        ("static/browser_encryption.js: file, gzip -9",
         f"{format_bytes(len(bundle))}, {format_bytes(len(gzip.compress(bundle, 9)))}"),
        (f"downloaded from {STATIC} per fresh tab: bodies, on the wire",
         (f"{format_bytes(worst.body_bytes)}, {format_bytes(worst.wire_bytes)} "
          f"({worst.responses} response{'' if worst.responses == 1 else 's'})")),
        ("loader JS (sent inline by Streamlit)", format_bytes(loader_bytes)),
        ("CPU used by other processes meanwhile", format_percent(other_cpu, 0)),
    ]  # fmt: skip
    return [[figure, value, MISSING, MISSING] for figure, value in rows]


def render(tabs: Sequence[FreshTab], node: NodeFigures, chromium: str, loader_bytes: int,
           other_cpu: float | None, digits: int) -> tuple[str, bool]:  # fmt: skip
    """The header and both tables; True if every target is met."""
    rows = target_rows(measured_targets(tabs, loader_bytes))
    hot = warm(tabs)
    header = [
        (f'"Encrypt in my browser" (issue 12) in Chromium {chromium}, headless, on this machine '
         f"({os.cpu_count()} CPUs, {platform.machine()}); node-seal in Node {node.version} for reference."),
        (f"{len(tabs)} fresh tabs, each a first prediction then warm ones: {len(hot)} warm predictions of "
         f"the first {digits} real MNIST test digits, traced with the mouse. Medians unless said otherwise."),
        ("key generation plus encryption = median key generation of the fresh tabs + median warm encrypt; "
         f"end to end = the tab's total, click to shown result; assets = the largest tab's {STATIC} bodies "
         "+ the loader JS."),
    ]  # fmt: skip
    other = table(["figure", "Chromium (the tab)", "Node", "Chromium / Node"],
                  stage_rows(tabs, node) + check_rows(tabs, loader_bytes, other_cpu))  # fmt: skip
    met = all_met(rows)
    verdict = "every target met" if met else "a target was NOT met"
    return "\n".join([*header, "", targets_table(rows), "", other, "", verdict]), met


# ------------------------------------------------------------------------------ the run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.benchmark.tab", description=(__doc__ or "").split("\n\n")[0].strip('"')
    )
    parser.add_argument(
        "--digits", type=int, default=DIGITS, help=f"draw the first N MNIST test digits (default {DIGITS})"
    )
    parser.add_argument("--warm", type=int, default=WARM, help=f"warm predictions, all tabs (default {WARM})")
    parser.add_argument(
        "--tabs", type=int, default=TABS, help=f"fresh tabs (browser contexts), at least 3 (default {TABS})"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.digits <= 10_000 or args.warm < 1 or args.tabs < 3:
        parser.error("--digits must be 1..10000, --warm >= 1 and --tabs >= 3")
    return args


def plan_digits(warm_count: int, tabs: int, digits: int) -> list[list[int]]:
    """The test-set indices each tab draws: its first prediction, then its share of the warm ones."""
    plan, drawn = [], 0
    for share in split_warm(warm_count, tabs):
        plan.append([(drawn + i) % digits for i in range(1 + share)])
        drawn += 1 + share
    return plan


def run(args: argparse.Namespace) -> int:
    from lib.mnist_data import SHARED_TEST_SET, load_test_set
    from scripts.benchmark.cpu import CpuMeter

    for needed in (CHROMIUM, BUNDLE, SHARED_TEST_SET):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing (scripts/setup.sh --dev sets this machine up)")
    node_version()  # fail before the stack starts, not after
    test_set = load_test_set(SHARED_TEST_SET)
    plan = plan_digits(args.warm, args.tabs, args.digits)
    with local_app() as (url, pids):
        meter = CpuMeter(pids)
        start = meter.snapshot()
        chromium, tabs = run_browser(url, plan, test_set)
        other_cpu = meter.other_share(start)
    print("node-seal in Node: a fresh process per tab ...", flush=True)
    node = run_node([[s.pixels for s in tab.shown] for tab in tabs])
    report, met = render(tabs, node, chromium, loader_js_bytes(), other_cpu, args.digits)
    print("\n" + report)
    return 0 if met else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_stoppable(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
