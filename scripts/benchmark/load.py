"""The load generator for the throughput figure: concurrent clients POST pre-encrypted requests.

Plain ``http.client`` threads, one kept-alive connection each, so the generator itself costs
little CPU (the report says how much). Nothing here decrypts: the caller checks a sample of the
responses afterwards.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from scripts.benchmark.cpu import own_cpu_seconds
from scripts.benchmark.results import Throughput

SAMPLES = 24  # responses kept from inside the window, for the caller to decrypt and check
_KEY_CACHE_RE = re.compile(rb'"key_cache"\s*:\s*"(hit|miss)"')


def key_cache_of(body: bytes) -> str:
    """'hit' or 'miss' from a raw JSON response body without parsing it all ('' if absent)."""
    found = _KEY_CACHE_RE.search(body)
    return found.group(1).decode("ascii") if found else ""


class _CountingConnection(http.client.HTTPConnection):
    """An HTTP connection that counts how many TCP connections were opened (class-wide)."""

    opened = 0
    lock = threading.Lock()

    def connect(self) -> None:
        super().connect()
        with _CountingConnection.lock:
            _CountingConnection.opened += 1


class _Log:
    """What the client threads record, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window: list[float] = []  # [start] once measuring, [start, end] when done
        self.events: list[tuple[float, int, str]] = []  # (completed at, status or -1, key cache)
        self.samples: list[tuple[int, bytes]] = []  # (body index, raw 200 body) from inside the window
        self.failures: list[str] = []
        self.sent = 0

    def record(self, index: int, status: int, data: bytes, count_in_window: int) -> int:
        """Note one finished request; returns the thread's new count of 200s inside the window."""
        finished = time.perf_counter()
        with self.lock:
            self.sent += 1
            self.events.append((finished, status, key_cache_of(data) if status == 200 else ""))
            if status not in (200, -1):
                self.failures.append(f"HTTP {status}: {data[:200]!r}")
            if status == 200 and len(self.window) == 1 and finished >= self.window[0]:
                count_in_window += 1
                if count_in_window % 5 == 1 and len(self.samples) < SAMPLES:
                    self.samples.append((index, data))
        return count_in_window

    def warmed_up(self, started: float, workers: int) -> bool:
        """Every worker has had its key-cache miss, a second has passed and half a second since the last miss."""
        now = time.perf_counter()
        with self.lock:
            misses = [e[0] for e in self.events if e[2] == "miss"]
            broken = sum(1 for e in self.events if e[1] != 200)
        last_miss = max(misses) if misses else started
        if len(misses) >= workers and now - started >= 1.0 and now - last_miss >= 0.5:
            return True
        return broken > 20  # the service is failing: measure that instead of waiting


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
    log = _Log()
    _CountingConnection.opened = 0

    def client(number: int) -> None:
        conn = _CountingConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=300)
        index, in_window = number, 0
        try:
            while not stop.is_set():
                body = bodies[index % len(bodies)]
                status, data = -1, b""
                for attempt in (1, 2):  # a connection the server closed while idle is reopened once
                    try:
                        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                        response = conn.getresponse()
                        data, status = response.read(), response.status
                        break
                    except (OSError, http.client.HTTPException) as exc:
                        conn.close()
                        if attempt == 2:
                            with log.lock:
                                log.failures.append(f"{type(exc).__name__}: {exc}")
                in_window = log.record(index % len(bodies), status, data, in_window)
                index += clients
        finally:
            conn.close()

    threads = [
        threading.Thread(target=client, args=(n,), daemon=True, name=f"load-{n}") for n in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        while True:  # warm-up
            time.sleep(0.05)
            if log.warmed_up(started, workers) or time.perf_counter() - started > warmup_max_s:
                break
        with log.lock:
            log.window.append(time.perf_counter())
        cpu_started = own_cpu_seconds()
        time.sleep(seconds)
        with log.lock:
            log.window.append(time.perf_counter())
        client_cpu_s = own_cpu_seconds() - cpu_started
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    start, end = log.window if len(log.window) == 2 else (started, time.perf_counter())
    inside = [e for e in log.events if start <= e[0] < end]
    result = Throughput(
        clients=clients,
        seconds=end - start,
        ok=sum(1 for e in inside if e[1] == 200),
        failed=sum(1 for e in inside if e[1] != 200),
        misses=sum(1 for e in inside if e[2] == "miss"),
        requests=log.sent,
        connections=_CountingConnection.opened,
        warmup_s=start - started,
        client_cpu_s=client_cpu_s,
        first_failure=log.failures[0] if log.failures else "",
    )
    return result, log.samples
