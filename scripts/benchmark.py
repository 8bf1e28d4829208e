"""Benchmark: every encryption scheme against the seed's `EIServer.predict`, measured in one run.

    .venv/bin/python scripts/benchmark.py [--schemes ei,ckks,bfv] [--warm 5] [--skip-reference]
                                          [--throughput-seconds 5] [--accuracy-digits 10]

It starts its own Azurite and scoring service (2 workers) on free ports and, for each scheme:
- makes a key pair (timed), uploads its public keys to Azurite and signs a read-only SAS URL;
- in process: `ScoringService.handle` on our SAS request (keys fetched from Azurite), key cache
  cold (miss) and warm (median of --warm), with the client's encrypt and decrypt around it;
- over HTTP: a real `lib.session.EncryptedSession` against the service, cold and warm, then a few
  real MNIST test digits for accuracy;
- throughput: concurrent clients fire pre-encrypted requests at the 2-worker service for
  --throughput-seconds after a warm-up and count the 200 responses per second; a sample of the
  responses is decrypted and checked against the plaintext model's label.
The reference is the seed's own path, in process: its client's encrypt, `EIServer.predict` (what the
seed's score.py calls), and its client's decrypt (about 25 s; --skip-reference leaves it out).
It prints one table of figures (a column per scheme), one of ratios to the reference, and whether
each target is met. Targets are printed, never asserted: this machine is shared and noisy, so the
first table's last row says how much CPU other processes took meanwhile. Everything the benchmark
starts is stopped on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORKERS = 2  # the scoring service's gunicorn workers, as in the local stack
KB = 1000  # sizes are decimal: 1 kB = 1000 bytes, 1 MB = 1,000,000 bytes
MB = 1000 * 1000
SAS_TTL_MINUTES = 180
THROUGHPUT_BODIES = 16  # distinct pre-encrypted request bodies the clients cycle through
THROUGHPUT_SAMPLES = 24  # responses decrypted and checked after the throughput window

# The `ei` targets (HTTP, warm), kept from the first version of this benchmark.
EI_TARGET_SERVER_S = 1.3
EI_TARGET_SPEEDUP = 15.0
EI_TARGET_WARM_E2E_S = 1.6


# ---------------------------------------------------------------------------------------------
# Pure helpers: formatting, statistics, targets (tests/test_benchmark.py)
# ---------------------------------------------------------------------------------------------


def is_number(value: object) -> bool:
    """True for a finite int or float (not a bool, not None, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def fmt_seconds(seconds: float | None) -> str:
    """A duration with a readable unit: '23.6 s', '1.27 s', '17.6 ms', '0.85 ms'; '-' if unknown."""
    if not is_number(seconds):
        return "-"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_bytes(count: float | None) -> str:
    """A byte count in decimal units: '8.56 MB', '215.3 kB', '512 B'; '-' if unknown."""
    if not is_number(count):
        return "-"
    if count >= MB:
        return f"{count / MB:.2f} MB"
    if count >= KB:
        return f"{count / KB:.1f} kB"
    return f"{int(count)} B"


def ratio(reference: float | None, value: float | None) -> float | None:
    """reference / value (how many times faster or smaller), or None if either is unknown or <= 0."""
    if not (is_number(reference) and is_number(value)) or reference <= 0 or value <= 0:
        return None
    return reference / value


def fmt_ratio(value: float | None) -> str:
    """'1,234x', '15.2x', '0.85x'; '-' if unknown."""
    if not is_number(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def fmt_rate(per_second: float | None) -> str:
    """'1,234/s', '82/s', '1.3/s'; '-' if unknown."""
    if not is_number(per_second):
        return "-"
    return f"{per_second:,.0f}/s" if per_second >= 10 else f"{per_second:.1f}/s"


def fmt_share(value: float | None) -> str:
    """'7%'; '-' if unknown."""
    return f"{value:.0%}" if is_number(value) else "-"


def fmt_error(value: float | None) -> str:
    return f"{value:.1e}" if is_number(value) else "-"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned, a rule under the header."""
    width = len(header)
    if any(len(row) != width for row in rows):
        raise ValueError("every row needs as many cells as the header")
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(width)]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(cell).rjust(widths[i + 1]) for i, cell in enumerate(cells[1:])]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])


@dataclass(frozen=True)
class Target:
    """A goal for one figure: ``value`` must be <= ``limit`` (or >= when ``at_least``)."""

    scheme: str
    what: str
    value: float | None
    limit: float
    at_least: bool = False
    shown: str = ""  # the measured value as printed (default: the number)

    @property
    def verdict(self) -> str:
        """'met', 'NOT met', or 'not measured'."""
        if not is_number(self.value):
            return "not measured"
        met = self.value >= self.limit if self.at_least else self.value <= self.limit
        return "met" if met else "NOT met"

    def line(self, width: int = 0) -> str:
        """'<scheme> <what, padded to width> <measured>  <verdict>'."""
        measured = self.shown or (f"{self.value:g}" if is_number(self.value) else "-")
        return f"{self.scheme:4s} {self.what:{width}s} {measured:>10s}  {self.verdict}"


def split_cold_warm(samples: Sequence[tuple[str, Any]]) -> tuple[Any | None, list[Any]]:
    """From (key_cache, item) samples: the first miss's item (or None) and every hit's item."""
    cold = next((item for cache, item in samples if cache == "miss"), None)
    return cold, [item for cache, item in samples if cache == "hit"]


def parse_schemes(text: str, known: Sequence[str]) -> list[str]:
    """'ei,ckks' -> ['ei', 'ckks'] in the given order, without repeats; unknown names raise ValueError."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in known:
            raise ValueError(f"unknown scheme {name!r}; known: {', '.join(known)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no scheme given")
    return names


_KEY_CACHE_RE = re.compile(rb'"key_cache"\s*:\s*"(hit|miss)"')


def key_cache_of(body: bytes) -> str:
    """'hit' or 'miss' from a raw JSON response body without parsing it all ('' if absent)."""
    found = _KEY_CACHE_RE.search(body)
    return found.group(1).decode("ascii") if found else ""


def decoded_length(ciphertexts: Sequence[str]) -> int:
    """Bytes that a list of base64 strings decodes to."""
    return sum(len(base64.b64decode(text)) for text in ciphertexts)


def other_cpu_share(machine_busy_s: float, ours_s: float, wall_s: float, cpus: int) -> float | None:
    """The share of the machine's CPU capacity that other processes used: (busy - ours) / (wall * cpus)."""
    if not all(is_number(v) for v in (machine_busy_s, ours_s, wall_s)) or wall_s <= 0 or cpus <= 0:
        return None
    return min(max((machine_busy_s - ours_s) / (wall_s * cpus), 0.0), 1.0)


class CpuMeter:
    """How busy the machine was with *other* work while we measured (Linux /proc; else unknown).

    Ours = every process in this process's group and in the local stack's groups (Azurite, the
    scoring service and its workers' children); machine = all CPU time the kernel counted busy.
    A high share means the figures measured meanwhile are slower than on a quiet machine.
    """

    def __init__(self, pgids: set[int]) -> None:
        self.pgids = set(pgids)
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.cpus = os.cpu_count() or 1

    def snapshot(self) -> tuple[float, float, float] | None:
        """(wall, machine busy CPU s, our CPU s), or None without /proc."""
        try:
            first = Path("/proc/stat").read_text().splitlines()[0].split()
            values = [int(v) for v in first[1:]] + [0] * 8
            user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
            busy = (user + nice + system + irq + softirq + steal) / self.tick
            ours = 0
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    text = Path(entry.path, "stat").read_text()
                except OSError:
                    continue  # the process just exited
                fields = text[text.rindex(")") + 2 :].split()
                if int(fields[2]) in self.pgids:  # pgrp
                    ours += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
            return time.perf_counter(), busy, ours / self.tick
        except (OSError, ValueError, IndexError):
            return None

    def other_share(self, start: tuple[float, float, float] | None) -> float | None:
        end = self.snapshot()
        if start is None or end is None:
            return None
        return other_cpu_share(end[1] - start[1], end[2] - start[2], end[0] - start[0], self.cpus)


# ---------------------------------------------------------------------------------------------
# What one run measures
# ---------------------------------------------------------------------------------------------


@dataclass
class Throughput:
    clients: int
    seconds: float
    ok: int = 0  # 200 responses completed inside the window
    failed: int = 0  # other statuses or connection errors inside the window
    misses: int = 0  # key-cache misses inside the window (should be 0 after the warm-up)
    requests: int = 0  # all requests sent, warm-up included
    connections: int = 0  # TCP connections opened for them
    warmup_s: float = 0.0
    client_cpu_s: float = 0.0  # CPU time this process (the load generator) used inside the window
    checked: int = 0
    correct: int = 0
    max_error: float | None = None
    first_failure: str = ""

    @property
    def per_second(self) -> float | None:
        return self.ok / self.seconds if self.seconds > 0 else None


@dataclass
class Figures:
    """Everything measured for one scheme (or the reference); None where it does not apply."""

    name: str
    scheme_id: str = ""
    keygen_s: float | None = None
    key_bytes: int | None = None
    upload_s: float | None = None
    request_bytes: int | None = None
    ciphertext_bytes: int | None = None
    encrypt_s: float | None = None
    inproc_server_cold_s: float | None = None
    inproc_server_warm_s: float | None = None
    inproc_e2e_warm_s: float | None = None
    http_server_cold_s: float | None = None
    http_server_warm_s: float | None = None
    http_compute_warm_s: float | None = None  # the homomorphic evaluation alone (server timings_ms.compute)
    http_e2e_warm_s: float | None = None
    response_bytes: int | None = None
    result_bytes: int | None = None
    decrypt_s: float | None = None
    errors: list[float] = field(default_factory=list)
    digits: int = 0
    correct: int = 0
    agree: int = 0
    throughput: Throughput | None = None
    other_cpu: float | None = None  # share of the machine other processes used meanwhile

    @property
    def max_error(self) -> float | None:
        return max(self.errors) if self.errors else None

    @property
    def server_warm_s(self) -> float | None:
        """The warm server time the targets use: over HTTP when measured, else in process."""
        return self.http_server_warm_s if self.http_server_warm_s is not None else self.inproc_server_warm_s


@dataclass
class Digits:
    images: np.ndarray  # (n, 784) in [0, 1]
    labels: np.ndarray  # (n,)
    source: str


def load_digits(count: int) -> Digits:
    """Real MNIST test digits (../shared), else the held-out gallery, else fixed pseudo-digits."""
    count = max(1, count)
    try:
        from lib.mnist_data import load_test_set

        images, labels = load_test_set()
        return Digits(np.asarray(images[:count], np.float64), np.asarray(labels[:count]), "MNIST test set")
    except (OSError, ValueError):
        pass
    try:
        from lib.gallery import load_gallery

        images, labels = load_gallery()
        pick = np.linspace(0, len(images) - 1, count).astype(int)
        return Digits(np.asarray(images[pick], np.float64), np.asarray(labels[pick]), "held-out gallery")
    except (OSError, ValueError):
        rng = np.random.default_rng(0)
        images = rng.random((count, 784)) * (rng.random((count, 784)) > 0.8)
        return Digits(images, np.full(count, -1), "pseudo-digits (no labels)")


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


class Bench:
    """One run: a local stack, an in-process scoring service, the model and the digits."""

    def __init__(
        self,
        args: argparse.Namespace,
        coef: np.ndarray,
        intercept: np.ndarray,
        digits: Digits,
        settings: Any,
        store: Any,
        service: Any,
        scoring_url: str,
        meter: CpuMeter,
    ) -> None:
        self.args = args
        self.meter = meter
        self.coef = coef
        self.intercept = intercept
        self.digits = digits
        self.settings = settings  # lib.settings.AppSettings
        self.store = store  # lib.blob_store.PublicKeyStore
        self.service = service  # service.scoring.ScoringService, in this process
        self.scoring_url = scoring_url
        self.sample = digits.images[0]
        self.plain = digits.images @ coef.T + intercept  # (n, 10) plaintext scores

    def error(self, scores: np.ndarray, index: int = 0) -> float:
        return float(np.max(np.abs(np.asarray(scores, np.float64) - self.plain[index])))

    # --- one scheme ----------------------------------------------------------------------------

    def scheme(self, name: str) -> Figures:
        from lib.schemes import new_client

        figures = Figures(name)
        cpu_start = self.meter.snapshot()
        print(f"[{name}] key generation and upload ...", flush=True)
        started = time.perf_counter()
        client = new_client(name)
        public = client.public_material()
        figures.keygen_s = time.perf_counter() - started
        figures.key_bytes = len(public)
        figures.scheme_id = client.scheme_id
        started = time.perf_counter()
        self.store.upload(client.key_id, public)
        figures.upload_s = time.perf_counter() - started
        sas_url = self.store.read_only_sas_url(client.key_id, SAS_TTL_MINUTES)
        key_sha256 = hashlib.sha256(public).hexdigest()
        try:
            print(f"[{name}] in process: 1 cold + {self.args.warm} warm ...", flush=True)
            self.in_process(figures, client, sas_url, key_sha256)
            print(
                f"[{name}] over HTTP: cold + {self.args.warm} warm, {len(self.digits.labels)} digits ...",
                flush=True,
            )
            self.over_http(figures)
            if self.args.throughput_seconds > 0:
                print(
                    f"[{name}] throughput: {self.args.throughput_clients} clients, "
                    f"{self.args.throughput_seconds:g} s after warm-up ...",
                    flush=True,
                )
                figures.throughput = self.throughput(client, sas_url, key_sha256)
        finally:
            self.store.delete(client.key_id)
        figures.other_cpu = self.meter.other_share(cpu_start)
        return figures

    def in_process(self, figures: Figures, client: Any, sas_url: str, key_sha256: str) -> None:
        from lib.contract import build_score_request

        samples: list[tuple[str, tuple[float, float]]] = []
        encrypt_s, decrypt_s = [], []
        for _ in range(1 + self.args.warm):
            started = time.perf_counter()
            ciphertexts = client.encrypt(self.sample)
            encrypt_s.append(time.perf_counter() - started)
            raw = json.dumps(
                build_score_request(client.descriptor, ciphertexts, sas_url, key_sha256),
                separators=(",", ":"),
            )
            status, body = self.service.handle(raw)
            if status != 200:
                raise RuntimeError(f"{figures.name}: in-process request failed: {status} {body}")
            response = json.dumps(body, separators=(",", ":"))  # what the service would send
            results = json.loads(response)["result"]
            t = time.perf_counter()
            scores = client.decrypt(results)
            decrypt_s.append(time.perf_counter() - t)
            e2e = time.perf_counter() - started
            figures.errors.append(self.error(scores))
            samples.append((body["server"]["key_cache"], (body["server"]["timings_ms"]["total"] / 1e3, e2e)))
        figures.ciphertext_bytes = decoded_length(ciphertexts)
        figures.request_bytes = len(raw.encode())
        figures.response_bytes = len(response.encode())
        figures.result_bytes = decoded_length(body["result"])
        figures.encrypt_s = median(encrypt_s)
        figures.decrypt_s = median(decrypt_s)
        cold, warm = split_cold_warm(samples)
        figures.inproc_server_cold_s = cold[0] if cold else None
        figures.inproc_server_warm_s = median([w[0] for w in warm])
        figures.inproc_e2e_warm_s = median([w[1] for w in warm])

    def over_http(self, figures: Figures) -> None:
        from lib.session import EncryptedSession

        with EncryptedSession.start(self.settings, scheme=figures.name) as session:
            samples: list[tuple[str, tuple[float, float, float]]] = []
            hits = 0
            for _ in range(self.args.warm + 6):  # 2 workers: one or two cold requests, then warm ones
                prediction = session.predict(self.sample)
                server_s = sum(stage.seconds for stage in prediction.stages if stage.source == "server")
                compute_s = sum(stage.seconds for stage in prediction.stages if stage.name == "compute")
                samples.append((prediction.key_cache, (server_s, prediction.total_s, compute_s)))
                figures.errors.append(self.error(prediction.scores))
                hits += prediction.key_cache == "hit"
                if hits >= self.args.warm:
                    break
            cold, warm = split_cold_warm(samples)
            figures.http_server_cold_s = cold[0] if cold else None
            figures.http_server_warm_s = median([w[0] for w in warm])
            figures.http_e2e_warm_s = median([w[1] for w in warm])
            figures.http_compute_warm_s = median([w[2] for w in warm])
            # The HTTP body sizes are what really crossed the wire.
            figures.request_bytes = prediction.sizes["request_bytes"]
            figures.response_bytes = prediction.sizes["response_bytes"]
            for index, (image, label) in enumerate(zip(self.digits.images, self.digits.labels, strict=True)):
                prediction = session.predict(image)
                figures.errors.append(self.error(prediction.scores, index))
                figures.digits += 1
                figures.correct += int(prediction.label == label)
                figures.agree += int(prediction.label == int(np.argmax(self.plain[index])))

    def throughput(self, client: Any, sas_url: str, key_sha256: str) -> Throughput:
        from lib.contract import build_score_request

        count = min(THROUGHPUT_BODIES, len(self.digits.labels))
        bodies = [
            json.dumps(
                build_score_request(
                    client.descriptor, client.encrypt(self.digits.images[i]), sas_url, key_sha256
                ),
                separators=(",", ":"),
            ).encode()
            for i in range(count)
        ]
        result, samples = fire(
            self.scoring_url,
            bodies,
            clients=self.args.throughput_clients,
            seconds=self.args.throughput_seconds,
            workers=WORKERS,
        )
        errors = []
        for index, raw in samples:
            scores = client.decrypt(json.loads(raw)["result"])
            result.checked += 1
            result.correct += int(int(np.argmax(scores)) == int(np.argmax(self.plain[index])))
            errors.append(self.error(scores, index))
        result.max_error = max(errors) if errors else None
        return result

    # --- the reference ---------------------------------------------------------------------------

    def reference(self) -> Figures:
        from encrypted.inference.eiclient import EILinearRegressionClient
        from encrypted.inference.eiserver import EIServer

        from lib.contract import build_seed_request

        figures = Figures("reference", scheme_id="EIServer.predict")
        cpu_start = self.meter.snapshot()
        started = time.perf_counter()
        seed_client = EILinearRegressionClient()  # the package's own client, as the seed uses it
        key_id, seed_keys = seed_client.get_public_keys()
        figures.keygen_s = time.perf_counter() - started
        figures.key_bytes = len(seed_keys)
        server = EIServer(self.coef, self.intercept)
        predict_s, e2e_s, encrypt_s, decrypt_s = [], [], [], []
        for run in range(self.args.reference_runs):
            print(
                f"reference: EIServer.predict, run {run + 1} of {self.args.reference_runs} (about 25 s) ...",
                flush=True,
            )
            started = time.perf_counter()
            ciphertexts = seed_client.encrypt(self.sample)
            encrypt_s.append(time.perf_counter() - started)
            t = time.perf_counter()
            result = server.predict(ciphertexts, seed_keys)
            predict_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            scores = seed_client.decrypt(result)
            decrypt_s.append(time.perf_counter() - t)
            e2e_s.append(time.perf_counter() - started)
            figures.errors.append(self.error(scores))
        figures.encrypt_s = median(encrypt_s)
        figures.decrypt_s = median(decrypt_s)
        # EIServer.predict has no key cache: every call loads the keys, so cold = warm.
        figures.inproc_server_cold_s = figures.inproc_server_warm_s = median(predict_s)
        figures.inproc_e2e_warm_s = median(e2e_s)
        texts = [c if isinstance(c, str) else c.decode("ascii") for c in ciphertexts]
        results = [r if isinstance(r, str) else r.decode("ascii") for r in result]
        seed_request = build_seed_request(
            texts, key_id or "key", self.settings.blob_connection_string, self.settings.blob_container
        )
        figures.request_bytes = len(json.dumps(seed_request, separators=(",", ":")).encode())
        figures.ciphertext_bytes = decoded_length(texts)
        figures.response_bytes = len(json.dumps(results, separators=(",", ":")).encode())
        figures.result_bytes = decoded_length(results)
        figures.other_cpu = self.meter.other_share(cpu_start)
        return figures


class _CountingConnection(http.client.HTTPConnection):
    opened = 0
    lock = threading.Lock()

    def connect(self) -> None:
        super().connect()
        with _CountingConnection.lock:
            _CountingConnection.opened += 1


def fire(
    url: str,
    bodies: Sequence[bytes],
    *,
    clients: int,
    seconds: float,
    workers: int,
    warmup_max_s: float = 180.0,
) -> tuple[Throughput, list[tuple[int, bytes]]]:
    """POST ``bodies`` (cycled) from ``clients`` threads; count 200s per second after a warm-up.

    The warm-up lasts until every worker has had its key-cache miss (``workers`` misses seen) and at
    least a second has passed. Each thread keeps one HTTP connection and reopens it only when the
    server closes it. Returns the counts and a sample of (body index, raw 200 response body) from
    inside the window.
    """
    parts = urlsplit(url)
    path = parts.path or "/"
    stop = threading.Event()
    lock = threading.Lock()
    window: list[float] = []  # [start] once measuring, [start, end] when done
    events: list[tuple[float, int, str]] = []  # (completed at, status or -1, key cache)
    samples: list[tuple[int, bytes]] = []
    failures: list[str] = []
    sent = [0]
    _CountingConnection.opened = 0

    def worker(number: int) -> None:
        conn = _CountingConnection(parts.hostname, parts.port or 80, timeout=300)
        index, done_in_window = number, 0
        try:
            while not stop.is_set():
                body = bodies[index % len(bodies)]
                status, data = -1, b""
                for attempt in (1, 2):  # a connection the server closed while idle is reopened once
                    try:
                        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                        response = conn.getresponse()
                        data = response.read()
                        status = response.status
                        break
                    except (OSError, http.client.HTTPException) as exc:
                        conn.close()
                        if attempt == 2:
                            with lock:
                                failures.append(f"{type(exc).__name__}: {exc}")
                finished = time.perf_counter()
                cache = key_cache_of(data) if status == 200 else ""
                with lock:
                    sent[0] += 1
                    events.append((finished, status, cache))
                    if status != 200 and status != -1:
                        failures.append(f"HTTP {status}: {data[:200]!r}")
                    if status == 200 and window and finished >= window[0] and not stop.is_set():
                        done_in_window += 1
                        if done_in_window % 5 == 1 and len(samples) < THROUGHPUT_SAMPLES:
                            samples.append((index % len(bodies), data))
                index += clients
        finally:
            conn.close()

    threads = [
        threading.Thread(target=worker, args=(n,), daemon=True, name=f"load-{n}") for n in range(clients)
    ]
    started = time.perf_counter()
    client_cpu_s = 0.0
    for thread in threads:
        thread.start()
    try:
        while True:  # warm-up
            time.sleep(0.05)
            now = time.perf_counter()
            with lock:
                misses = [e[0] for e in events if e[2] == "miss"]
                broken = len(events) - sum(1 for e in events if e[1] == 200)
            last_miss = max(misses) if misses else started
            if len(misses) >= workers and now - started >= 1.0 and now - last_miss >= 0.5:
                break
            if now - started > warmup_max_s or broken > 20:
                break
        with lock:
            window.append(time.perf_counter())
        cpu_started = time.process_time()
        time.sleep(seconds)
        with lock:
            window.append(time.perf_counter())
        client_cpu_s = time.process_time() - cpu_started
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    start, end = window if len(window) == 2 else (started, time.perf_counter())
    inside = [e for e in events if start <= e[0] < end]
    result = Throughput(
        clients=clients,
        seconds=end - start,
        ok=sum(1 for e in inside if e[1] == 200),
        failed=sum(1 for e in inside if e[1] != 200),
        misses=sum(1 for e in inside if e[2] == "miss"),
        requests=sent[0],
        connections=_CountingConnection.opened,
        warmup_s=start - started,
        client_cpu_s=client_cpu_s,
        first_failure=failures[0] if failures else "",
    )
    return result, samples


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def figures_table(columns: Sequence[Figures], warm: int, clients: int) -> str:
    def accuracy(f: Figures) -> str:
        if not f.digits:
            return "-"
        return f"{f.correct}/{f.digits}"

    def agreement(f: Figures) -> str:
        return f"{f.agree}/{f.digits}" if f.digits else "-"

    def rate(f: Figures) -> str:
        t = f.throughput
        return fmt_rate(t.per_second) if t else "-"

    def verified(f: Figures) -> str:
        t = f.throughput
        return f"{t.correct}/{t.checked}" if t and t.checked else "-"

    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("scheme", lambda f: f.scheme_id or "-"),
        ("key generation (client)", lambda f: fmt_seconds(f.keygen_s)),
        ("public key bytes", lambda f: fmt_bytes(f.key_bytes)),
        ("key upload to Azurite", lambda f: fmt_seconds(f.upload_s)),
        ("encrypt (client)", lambda f: fmt_seconds(f.encrypt_s)),
        ("request bytes (JSON body)", lambda f: fmt_bytes(f.request_bytes)),
        ("  of which ciphertexts (decoded)", lambda f: fmt_bytes(f.ciphertext_bytes)),
        ("server, in process, cold (key-cache miss)", lambda f: fmt_seconds(f.inproc_server_cold_s)),
        (f"server, in process, warm (median of {warm})", lambda f: fmt_seconds(f.inproc_server_warm_s)),
        ("server, HTTP, cold (key-cache miss)", lambda f: fmt_seconds(f.http_server_cold_s)),
        (f"server, HTTP, warm (median of {warm})", lambda f: fmt_seconds(f.http_server_warm_s)),
        ("  of which compute (the rest: parse and checks)", lambda f: fmt_seconds(f.http_compute_warm_s)),
        ("response bytes (JSON body)", lambda f: fmt_bytes(f.response_bytes)),
        ("  of which result ciphertexts (decoded)", lambda f: fmt_bytes(f.result_bytes)),
        ("decrypt (client)", lambda f: fmt_seconds(f.decrypt_s)),
        ("end to end, in process, warm", lambda f: fmt_seconds(f.inproc_e2e_warm_s)),
        ("end to end, HTTP, warm", lambda f: fmt_seconds(f.http_e2e_warm_s)),
        ("max |decrypted - plaintext model|", lambda f: fmt_error(f.max_error)),
        ("accuracy vs true labels (HTTP)", accuracy),
        ("same label as the plaintext model", agreement),
        (f"throughput, HTTP, {WORKERS} workers, {clients} clients", rate),
        ("  sampled responses decrypted correctly", verified),
        ("machine CPU used by other processes meanwhile", lambda f: fmt_share(f.other_cpu)),
    ]
    header = ["", *(f.name for f in columns)]
    return format_table(header, [[label, *(get(f) for f in columns)] for label, get in rows])


def ratios_table(reference: Figures, schemes: Sequence[Figures]) -> str:
    header = ["x faster / smaller than the reference", *(f.name for f in schemes)]
    rows = [
        ("server, in process, warm", lambda f: ratio(reference.inproc_server_warm_s, f.inproc_server_warm_s)),
        ("server, HTTP, warm", lambda f: ratio(reference.inproc_server_warm_s, f.http_server_warm_s)),
        ("end to end, in process, warm", lambda f: ratio(reference.inproc_e2e_warm_s, f.inproc_e2e_warm_s)),
        ("end to end, HTTP, warm", lambda f: ratio(reference.inproc_e2e_warm_s, f.http_e2e_warm_s)),
        ("key generation", lambda f: ratio(reference.keygen_s, f.keygen_s)),
        ("public key bytes", lambda f: ratio(reference.key_bytes, f.key_bytes)),
        ("request bytes", lambda f: ratio(reference.request_bytes, f.request_bytes)),
        ("response bytes", lambda f: ratio(reference.response_bytes, f.response_bytes)),
    ]
    return format_table(header, [[label, *(fmt_ratio(get(f)) for f in schemes)] for label, get in rows])


def targets(results: dict[str, Figures], reference: Figures | None) -> list[Target]:
    out: list[Target] = []
    if "ei" in results:
        f = results["ei"]
        speedup = ratio(reference.inproc_server_warm_s, f.http_server_warm_s) if reference else None
        out += [
            Target(
                "ei",
                f"server time <= {EI_TARGET_SERVER_S} s (HTTP, warm)",
                f.http_server_warm_s,
                EI_TARGET_SERVER_S,
                shown=fmt_seconds(f.http_server_warm_s),
            ),
            Target(
                "ei",
                f">= {EI_TARGET_SPEEDUP:.0f}x faster than the reference (server, HTTP, warm)",
                speedup,
                EI_TARGET_SPEEDUP,
                at_least=True,
                shown=fmt_ratio(speedup),
            ),
            Target(
                "ei",
                f"end to end <= {EI_TARGET_WARM_E2E_S} s (HTTP, warm)",
                f.http_e2e_warm_s,
                EI_TARGET_WARM_E2E_S,
                shown=fmt_seconds(f.http_e2e_warm_s),
            ),
        ]
    if "ckks" in results:
        f = results["ckks"]
        out += [
            Target(
                "ckks",
                "server time <= 25 ms (HTTP, warm)",
                f.server_warm_s,
                0.025,
                shown=fmt_seconds(f.server_warm_s),
            ),
            Target("ckks", "public keys <= 0.7 MB", f.key_bytes, 0.7 * MB, shown=fmt_bytes(f.key_bytes)),
            Target(
                "ckks",
                "response <= 130 kB (JSON body)",
                f.response_bytes,
                130 * KB,
                shown=fmt_bytes(f.response_bytes),
            ),
            Target("ckks", "max |error| <= 1e-3", f.max_error, 1e-3, shown=fmt_error(f.max_error)),
            Target(
                "ckks",
                "end to end <= 50 ms (HTTP, warm)",
                f.http_e2e_warm_s,
                0.050,
                shown=fmt_seconds(f.http_e2e_warm_s),
            ),
        ]
    if "bfv" in results:
        f = results["bfv"]
        rate = f.throughput.per_second if f.throughput else None
        if f.throughput and f.throughput.checked and f.throughput.correct < f.throughput.checked:
            rate = None  # wrong answers do not count as throughput
        out += [
            Target(
                "bfv",
                "server time <= 5 ms (HTTP, warm)",
                f.server_warm_s,
                0.005,
                shown=fmt_seconds(f.server_warm_s),
            ),
            Target(
                "bfv",
                "end to end <= 20 ms (HTTP, warm)",
                f.http_e2e_warm_s,
                0.020,
                shown=fmt_seconds(f.http_e2e_warm_s),
            ),
            Target(
                "bfv",
                f">= 300 predictions/s ({WORKERS} workers, HTTP, sample decrypts right)",
                rate,
                300,
                at_least=True,
                shown=fmt_rate(rate),
            ),
        ]
    return out


def report(
    args: argparse.Namespace,
    results: dict[str, Figures],
    reference: Figures | None,
    digits: Digits,
    other_cpu: float | None = None,
) -> None:
    schemes = list(results.values())
    columns = ([reference] if reference else []) + schemes
    print()
    print(figures_table(columns, args.warm, args.throughput_clients))
    print(
        f"(times are medians; sizes in decimal units, 1 kB = 1000 B; accuracy on the first "
        f"{digits.images.shape[0]} digits of the {digits.source}; the reference runs in process only: "
        f"the seed's client encrypt + EIServer.predict + decrypt, {args.reference_runs} run(s))"
    )
    for f in schemes:
        t = f.throughput
        if t:
            note = f"; first failure: {t.first_failure}" if t.first_failure else ""
            print(
                f"  {f.name} throughput: {t.ok} OK in {t.seconds:.1f} s after a {t.warmup_s:.1f} s warm-up, "
                f"{t.failed} failed, {t.misses} key-cache misses in the window; {t.requests} requests over "
                f"{t.connections} connections; the load generator used {t.client_cpu_s / t.seconds:.0%} of a "
                f"core; sample max |error| {fmt_error(t.max_error)}{note}"
            )
    print()
    if reference:
        print(ratios_table(reference, schemes))
        print("(x = the reference's figure / this scheme's, both measured in this run)")
    else:
        print("ratios to the reference: not measured (--skip-reference)")
    if is_number(other_cpu) and other_cpu > 0.1:
        print(
            f"\nnote: other processes used {other_cpu:.0%} of this machine's CPU during the run "
            "(see the last row of the first table): the times above are slower than on a quiet machine."
        )
    print()
    print("targets (printed, never asserted)")
    goals = targets(results, reference)
    width = max((len(goal.what) for goal in goals), default=0)
    for goal in goals:
        print("  " + goal.line(width))


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


class _StopOnSignal:
    """First SIGINT/SIGTERM/SIGHUP raises KeyboardInterrupt; later ones are ignored so clean-up finishes."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.fired:
            print("still stopping the local stack ...", file=sys.stderr, flush=True)
            return
        self.fired = True
        raise KeyboardInterrupt(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    from lib.blob_store import PublicKeyStore
    from lib.settings import AppSettings
    from scripts.local_stack import LocalStack, free_port
    from service.scoring import ScoringService, load_model
    from service.settings import ServiceSettings

    coef, intercept = load_model(ROOT / "service" / "model")
    digits = load_digits(args.accuracy_digits)
    results: dict[str, Figures] = {}
    reference: Figures | None = None

    with contextlib.ExitStack() as cleanup:
        stack_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="benchmark-"))
        azurite_port = free_port()
        env = dict(os.environ, ALLOWED_BLOB_HOSTS=f"127.0.0.1:{azurite_port}")
        print(f"starting Azurite and the scoring service ({WORKERS} workers) on free ports ...", flush=True)
        stack = LocalStack(
            azurite_port=azurite_port,
            scoring_port=free_port(),
            workers=WORKERS,
            stack_dir=Path(stack_dir),
            env=env,
        )
        cleanup.callback(stack.stop)  # registered before start: a Ctrl-C while starting stops it too
        stack.start()
        settings = AppSettings(blob_connection_string=stack.connection_string, scoring_url=stack.scoring_url)
        store = PublicKeyStore(settings.blob_connection_string, settings.blob_container)
        store.ensure_container()

        os.environ["ALLOWED_BLOB_HOSTS"] = env["ALLOWED_BLOB_HOSTS"]
        service = ScoringService(coef, intercept, ServiceSettings.from_env())
        cleanup.callback(service.close)
        service.wait_ready()

        pgids = {os.getpgrp(), *(proc.pid for proc in stack.processes().values())}  # own sessions
        meter = CpuMeter(pgids)
        run_start = meter.snapshot()
        bench = Bench(args, coef, intercept, digits, settings, store, service, stack.scoring_url, meter)
        for name in args.schemes:
            results[name] = bench.scheme(name)
        if not args.skip_reference:
            reference = bench.reference()
        other_cpu = meter.other_share(run_start)
        print("stopping the local stack ...", flush=True)

    report(args, results, reference, digits, other_cpu)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from lib.schemes import SCHEME_NAMES
    except ImportError:  # before the scheme registry exists
        SCHEME_NAMES = ("ei",)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--schemes",
        default=",".join(SCHEME_NAMES),
        help=f"comma-separated schemes to measure (default {','.join(SCHEME_NAMES)})",
    )
    parser.add_argument("--warm", type=int, default=5, help="warm repetitions per path (default 5)")
    parser.add_argument(
        "--skip-reference",
        action="store_true",
        help="do not run the seed's EIServer.predict (about 25 s); no ratios then",
    )
    parser.add_argument(
        "--reference-runs", type=int, default=1, help="EIServer.predict runs (about 25 s each)"
    )
    parser.add_argument(
        "--throughput-seconds",
        type=float,
        default=5.0,
        help="length of each scheme's throughput window, after warm-up; 0 skips it (default 5)",
    )
    parser.add_argument(
        "--throughput-clients",
        type=int,
        default=8,
        help="concurrent HTTP clients for the throughput (default 8)",
    )
    parser.add_argument(
        "--accuracy-digits",
        type=int,
        default=10,
        help="real MNIST test digits sent over HTTP per scheme (default 10)",
    )
    args = parser.parse_args(argv)
    try:
        args.schemes = parse_schemes(args.schemes, SCHEME_NAMES)
    except ValueError as exc:
        parser.error(str(exc))
    if args.warm < 1 or args.reference_runs < 1 or args.throughput_clients < 1 or args.accuracy_digits < 1:
        parser.error("--warm, --reference-runs, --throughput-clients and --accuracy-digits must be >= 1")

    handler = _StopOnSignal()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: everything the benchmark started has been stopped", file=sys.stderr)
        return 130
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


if __name__ == "__main__":
    raise SystemExit(main())
