"""One session of the mixed load, run in its own process (``multiprocessing`` spawn context).

``session_main`` is the process: it makes the session's key pair with the scheme's client half
(``lib.schemes``), uploads the public keys and signs a read-only SAS with ``lib.blob_store``, and
encrypts every request body before anything is timed. Then, with all the other sessions:
- ``ready`` barrier, then the warm-up: untimed requests, each on a new connection (so that any
  worker may take it), until the session has seen ``caches`` key-cache misses (its key is then in
  every worker's cache) or has sent all its warm-up bodies;
- ``warm`` barrier, then the timed phase: the timed requests back to back over one kept-alive
  connection, as the app's ``requests.Session`` sends them, each timed from just before the request
  is sent until its response has been read in full (nothing is parsed in between);
- ``done`` barrier, then it checks and decrypts each answer, deletes its key blob and puts a
  ``SessionOutcome`` on the queue; the parent compares the scores with the plaintext model.

One process per session so that no session's Python (reading a 3 MB ei response, say) holds a
lock that another session's timing waits for: the processes share nothing but the machine.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from scripts.benchmark.load import key_cache_of
from scripts.benchmark.mixed import LOST_STATUS, TIMED, WARMUP

BARRIER_TIMEOUT_S = 900.0  # key generation of 16 sessions on 2 cores, or 10 ei predictions under load
REQUEST_TIMEOUT_S = 300.0  # the service's own worker timeout
SAS_TTL_MINUTES = 60.0
_COMPACT = (",", ":")


class Barrier(Protocol):
    """What a session needs of ``multiprocessing.Barrier``."""

    def wait(self, timeout: float | None = None) -> int: ...

    def abort(self) -> None: ...


class Queue(Protocol):
    """What a session needs of ``multiprocessing.Queue``."""

    def put(self, obj: Any) -> None: ...


@dataclass(frozen=True)
class SessionJob:
    """What one session process is told: its scheme, the service, its digits (warm-ups first)."""

    scheme: str
    number: int
    scoring_url: str
    connection_string: str  # for the key upload; holds an account key, never printed
    container: str
    digits: tuple[int, ...]  # the run's digit index of each request, warm-ups first
    pixels: np.ndarray  # (len(digits), 784) in [0, 1]
    warmup: int  # at most this many warm-up requests (the first ``warmup`` digits)
    caches: int = 1  # key caches behind the URL (worker processes): the warm-up stops after as many misses
    scoring_key: str = ""  # sent as ``Authorization: Bearer``; never printed

    def __repr__(self) -> str:
        return f"SessionJob(scheme={self.scheme!r}, number={self.number}, requests={len(self.digits)})"


@dataclass
class Answer:
    """One request as the session saw it; ``scores`` are the decrypted logits of a 200."""

    phase: str
    digit: int
    started: float
    finished: float
    status: int
    key_cache: str = ""
    replica: str = ""  # the twin's X-Replica header: which replica answered
    timings_ms: dict[str, float] = field(default_factory=dict)
    scores: np.ndarray | None = None
    error: str = ""  # why it failed: a status and error code, or an exception's type and message


@dataclass
class SessionOutcome:
    """Everything one session sends back (no key material)."""

    scheme: str
    number: int
    answers: list[Answer] = field(default_factory=list)
    client_cpu_s: float = 0.0  # this process's CPU during its request loop
    failure: str = ""  # set when the session could not run at all


def _cpu_seconds() -> float:
    return time.process_time()


def _refusal(status: int, raw: bytes) -> str:
    """'HTTP 503 busy' from a refusal body in the contract's shape, else the status alone."""
    try:
        body = json.loads(raw)
    except ValueError:
        return f"HTTP {status}"
    code = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {status} {str(code)[:40]}" if code else f"HTTP {status}"


Sent = tuple[float, float, int, bytes, str, str]  # (sent, read, status, raw body, error, X-Replica)


def send_all(
    url: str,
    bodies: list[bytes],
    key: str = "",
    timeout_s: float = REQUEST_TIMEOUT_S,
    *,
    reuse: bool = True,
    stop_after_misses: int = 0,
) -> list[Sent]:
    """POST each body in turn: (sent, read, status, raw body, error, X-Replica header) for each.

    ``reuse``: one kept-alive connection for all (as a browser session), else a new one each.
    ``stop_after_misses`` > 0: stop once that many answers said ``"key_cache": "miss"``. A failed
    request (refused, reset, timed out) gets ``LOST_STATUS`` and the next one opens a new
    connection; nothing is retried, so a lost request stays lost.
    """
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s)
    out: list[Sent] = []
    misses = 0
    try:
        for body in bodies:
            started = time.perf_counter()
            try:
                conn.request("POST", parts.path or "/", body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                finished = time.perf_counter()
                out.append(
                    (started, finished, response.status, raw, "", response.getheader("X-Replica") or "")
                )
                if response.will_close or not reuse:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
                out.append((started, time.perf_counter(), LOST_STATUS, b"", error, ""))
                conn.close()
                continue
            misses += response.status == 200 and key_cache_of(raw) == "miss"
            if stop_after_misses and misses >= stop_after_misses:
                break
    finally:
        conn.close()
    return out


def _prepare(job: SessionJob) -> tuple[Any, Any, list[bytes]]:
    """Key pair, public keys uploaded, SAS signed, every request body encrypted: (client, store, bodies)."""
    from lib.blob_store import PublicKeyStore
    from lib.contract import build_score_request
    from lib.schemes import new_client

    store = PublicKeyStore(job.connection_string, job.container)
    client = new_client(job.scheme)
    public = client.public_material()
    descriptor = client.descriptor
    store.upload(
        client.key_id, public, {"scheme": descriptor["name"], "scheme_version": descriptor["version"]}
    )
    sas_url = store.read_only_sas_url(client.key_id, SAS_TTL_MINUTES)
    sha256 = hashlib.sha256(public).hexdigest()
    bodies = [
        json.dumps(
            build_score_request(descriptor, client.encrypt(row), sas_url, sha256), separators=_COMPACT
        ).encode()
        for row in job.pixels
    ]
    return client, store, bodies


def _answer(client: Any, phase: str, digit: int, sent: Sent) -> Answer:
    """Check and decrypt one response (after the timed phase)."""
    from lib.contract import parse_score_response
    from lib.errors import DemoError

    started, finished, status, raw, error, replica = sent
    answer = Answer(phase, digit, started, finished, status, replica=replica, error=error)
    if status == LOST_STATUS:
        return answer
    if status != 200:
        answer.error = _refusal(status, raw)
        return answer
    try:
        server = parse_score_response(
            json.loads(raw), expected_scheme=client.scheme_id, expected_results=client.result_count
        )
        answer.key_cache = server.key_cache
        answer.timings_ms = dict(server.timings_ms)
        answer.scores = np.asarray(client.decrypt(list(server.result)), dtype=np.float64)
    except (DemoError, ValueError, TypeError, RuntimeError) as exc:  # a malformed 200: wrong, not a crash
        answer.error = f"bad answer: {type(exc).__name__}: {str(exc)[:160]}"
    return answer


def session_main(job: SessionJob, ready: Barrier, warm: Barrier, done: Barrier, out: Queue) -> None:
    """The session process: prepare, warm up, the timed phase, decrypt, report (module docstring).

    Whatever fails, the outcome is put on ``out`` and the barriers are broken, so neither the
    other sessions nor the parent wait for this one in vain; the exception still ends the process.
    """
    outcome = SessionOutcome(job.scheme, job.number)
    stage = "preparing the session"
    try:
        client, store, bodies = _prepare(job)
        stage = "waiting for the other sessions"
        ready.wait(BARRIER_TIMEOUT_S)
        stage = "warming up"
        warmups = send_all(
            job.scoring_url, bodies[: job.warmup], job.scoring_key, reuse=False, stop_after_misses=job.caches
        )
        stage = "waiting for the other sessions to warm up"
        warm.wait(BARRIER_TIMEOUT_S)
        stage = "sending the timed requests"
        cpu_started = _cpu_seconds()
        timed = send_all(job.scoring_url, bodies[job.warmup :], job.scoring_key)
        outcome.client_cpu_s = _cpu_seconds() - cpu_started
        stage = "waiting for the other sessions to finish"
        done.wait(BARRIER_TIMEOUT_S)  # nobody decrypts while another session is still being timed
        stage = "decrypting the answers"
        for index, item in enumerate(warmups):
            outcome.answers.append(_answer(client, WARMUP, job.digits[index], item))
        for index, item in enumerate(timed, start=job.warmup):
            outcome.answers.append(_answer(client, TIMED, job.digits[index], item))
        stage = "deleting the key blob"
        store.delete(client.key_id)
    except BaseException as exc:
        outcome.failure = f"{stage} failed: {type(exc).__name__}: {str(exc)[:300]}"
        for barrier in (ready, warm, done):
            barrier.abort()  # the others (and the parent) stop waiting
        raise
    finally:
        out.put(outcome)
