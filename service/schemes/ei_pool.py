"""One queue of ei work per replica, shared by its gunicorn workers.

An ei evaluation takes about a second of CPU; a ckks or bfv one takes milliseconds. With one native
child per worker, the ei requests of kept-alive connections pile up in whichever worker holds them
while the other worker's child idles. So gunicorn's master starts one pool process per replica
(service/gunicorn_config.py), before it forks the workers:

- the pool runs ``EI_POOL_SIZE`` native children (default: one per core, one thread each, niced:
  service/schemes/ei_isolated.py), each with its own key cache;
- every worker sends its ei requests to the pool over a private Unix socket (a 0700 folder, HMAC
  authentication with a key only the master's children know), and the pool serves them first come,
  first served, on whichever child is free;
- a child that dies on bad input is replaced, as before; if the pool itself is gone, a request gets
  503 ``not_ready`` (the app tries once more) rather than a wrong answer.

Without gunicorn (``init()`` called directly, as the tests and ``service.SHIPPED`` checks do) each
``EiScheme`` keeps its own child, as before.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

from service.errors import RequestRejected
from service.schemes.base import Evaluation
from service.schemes.ei_isolated import IsolatedEvaluator

log = logging.getLogger("encrypted_mnist.service")

ADDRESS_ENV = "EI_POOL_SOCKET"
AUTHKEY_ENV = "EI_POOL_AUTHKEY"
SIZE_ENV = "EI_POOL_SIZE"
_READY_TIMEOUT_S = 120.0


@dataclass
class _Job:
    """One evaluation waiting for a child: the worker's connection, to answer and to ask for keys."""

    connection: Connection
    cache_key: Hashable
    ciphertexts: bytes
    done: threading.Event
    worker_gave_up: bool = False
    """The worker could not fetch the keys and has answered its client itself: nothing to send back."""


def _serve_connection(connection: Connection, jobs: queue.Queue[_Job]) -> None:
    """A worker's connection: each ("eval", cache_key, ciphertexts) is queued, answered by a child."""
    with connection:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return
            _, cache_key, ciphertexts = message
            job = _Job(connection, cache_key, ciphertexts, threading.Event())
            jobs.put(job)
            job.done.wait()


def _run_jobs(evaluator: IsolatedEvaluator, jobs: queue.Queue[_Job]) -> None:
    """A child's dispatcher: take the oldest job, evaluate, answer; keys are asked of the worker on a miss."""
    while True:
        job = jobs.get()

        def fetch_keys(job: _Job = job) -> tuple[bytes, int]:
            job.connection.send(("need_keys",))
            reply = job.connection.recv()
            if reply[0] == "rejected":
                job.worker_gave_up = True
                raise RequestRejected(*reply[1:])
            return reply[1], reply[2]

        try:
            job.connection.send(("ok", evaluator.evaluate(job.cache_key, job.ciphertexts, fetch_keys)))
        except RequestRejected as rejected:
            if not job.worker_gave_up:
                job.connection.send(("rejected", rejected.status, rejected.code, rejected.message))
        except (EOFError, OSError):
            pass  # the worker went away mid-request; nobody to answer
        finally:
            job.done.set()


def serve(model_dir: str, size: int, cache_bytes: int, address: str, authkey: bytes) -> None:
    """The pool process: ``size`` native children behind one first-come, first-served queue.

    Each child gets ``cache_bytes`` for keys, as each worker's own child did: every child may serve
    every session, so each needs room for all of them; a replica's memory is what it was.
    """
    from service.scoring import load_model

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master stops the pool (SIGTERM), not Ctrl-C
    try:
        coef, intercept = load_model(model_dir)
    except (OSError, ValueError, KeyError) as error:
        print(f"no model to load: {error}", flush=True)
        return
    evaluators = [IsolatedEvaluator(coef, intercept, 1, cache_bytes) for _ in range(size)]
    for evaluator in evaluators:
        evaluator.wait_ready()
    jobs: queue.Queue[_Job] = queue.Queue()
    for number, evaluator in enumerate(evaluators):
        threading.Thread(target=_run_jobs, args=(evaluator, jobs), name=f"ei-child-{number}", daemon=True).start()
    with Listener(address, family="AF_UNIX", authkey=authkey) as listener:
        print("ready", flush=True)
        os.dup2(2, 1)  # nobody reads the pipe after this line: anything else goes to the log
        while True:
            try:
                connection = listener.accept()
            except (OSError, EOFError):  # a peer without the key, or one that hung up during the handshake
                continue
            threading.Thread(target=_serve_connection, args=(connection, jobs), daemon=True).start()


class EiPool:
    """The pool process, as gunicorn's master starts, watches and stops it.

    If the pool process dies, it is started again at the same address with the same key, so the
    workers (which reconnect on their next ei request) need not know.
    """

    WATCH_S = 1.0

    def __init__(self, model_dir: str, size: int, cache_bytes: int) -> None:
        self._folder = tempfile.mkdtemp(prefix="ei-pool-")  # 0700: only this user can reach the socket
        self.address = str(Path(self._folder) / "pool.sock")
        self.authkey = secrets.token_bytes(32)
        self._args = (model_dir, size, cache_bytes)
        self.restarts = 0
        self._stopping = threading.Event()
        self._process = self._start()
        threading.Thread(target=self._watch, name="ei-pool-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._stopping.wait(self.WATCH_S):
            if self._process.poll() is not None and not self._stopping.is_set():
                log.warning("the ei pool exited (code %s); starting it again", self._process.returncode)
                self.restarts += 1
                with contextlib.suppress(OSError):
                    Path(self.address).unlink()
                try:
                    self._process = self._start()
                except RuntimeError as error:
                    log.error("%s", error)

    def _start(self) -> subprocess.Popen[str]:
        model_dir, size, cache_bytes = self._args
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        code = (
            "import sys; from service.schemes.ei_pool import serve; a = sys.argv; "
            "serve(a[1], int(a[2]), int(a[3]), a[4], bytes.fromhex(sys.stdin.readline().strip()))"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", code, model_dir, str(size), str(cache_bytes), self.address],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=root, text=True,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(self.authkey.hex() + "\n")
        process.stdin.close()
        line = process.stdout.readline()
        if line.strip() != "ready":
            process.kill()
            process.wait()
            raise RuntimeError(f"the ei pool did not start ({line.strip() or f'exit code {process.returncode}'})")
        return process

    def environment(self) -> dict[str, str]:
        """What a worker needs to reach the pool."""
        return {ADDRESS_ENV: self.address, AUTHKEY_ENV: self.authkey.hex()}

    def stop(self) -> None:
        """Stop the pool and its children, and remove the socket's folder."""
        self._stopping.set()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for path in (Path(self.address), Path(self._folder)):
            with contextlib.suppress(OSError):
                path.unlink() if path.is_socket() else path.rmdir()


class PoolClient:
    """A worker's handle on its replica's pool: the interface of ``IsolatedEvaluator``.

    Each request thread keeps its own connection, so requests from one worker run concurrently.
    """

    def __init__(self, address: str, authkey: bytes) -> None:
        self._address = address
        self._authkey = authkey
        self._local = threading.local()

    @classmethod
    def from_env(cls) -> PoolClient | None:
        """The pool gunicorn's master started for this replica, if any."""
        address, authkey = os.environ.get(ADDRESS_ENV), os.environ.get(AUTHKEY_ENV)
        if not address or not authkey:
            return None
        return cls(address, bytes.fromhex(authkey))

    def _connection(self) -> Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = Client(self._address, family="AF_UNIX", authkey=self._authkey)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def wait_ready(self) -> None:
        """Block until the pool accepts this worker (it is ready before any worker starts)."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            try:
                self._connection()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def evaluate(
        self, cache_key: Hashable, ciphertexts: bytes, fetch_keys: Callable[[], tuple[bytes, int]]
    ) -> Evaluation:
        """Evaluate on the pool; keys are fetched here (the worker reaches storage) on a cache miss."""
        try:
            connection = self._connection()
            connection.send(("eval", cache_key, ciphertexts))
            while True:
                reply = connection.recv()
                if reply[0] != "need_keys":
                    break
                try:
                    keys = fetch_keys()
                except RequestRejected as rejected:
                    connection.send(("rejected", rejected.status, rejected.code, rejected.message))
                    raise
                connection.send(("keys", *keys))
        except (OSError, EOFError):
            self._drop()
            log.warning("the ei pool is unreachable")
            raise RequestRejected(503, "not_ready", "The ei evaluator is restarting: try again in a moment.") from None
        if reply[0] == "rejected":
            raise RequestRejected(*reply[1:])
        evaluation: Evaluation = reply[1]
        return evaluation

    def close(self) -> None:
        """Close this thread's connection (the pool belongs to the master)."""
        self._drop()
