"""Ports on 127.0.0.1, one HTTP request, and the readiness probe built on it."""

from __future__ import annotations

import dataclasses
import errno
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from .config import HOST, PortInUseError


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something already listens on ``host:port`` (a bind with SO_REUSEADDR fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def ensure_port_free(port: int, env_var: str | None = None) -> None:
    """Raise :class:`PortInUseError` (naming ``env_var``) if ``port`` is taken."""
    if port_in_use(port):
        raise PortInUseError(port, env_var)


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class HttpAnswer:
    """An HTTP answer, whatever its status."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def http_request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> HttpAnswer | None:
    """One request; the answer for any HTTP status, or None if no HTTP answer came (refused, timeout)."""
    sent = {"Content-Type": "application/json"} if body is not None else {}
    sent.update(headers or {})
    req = urllib.request.Request(url, data=body, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpAnswer(resp.status, resp.headers.get("Content-Type", ""), resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpAnswer(exc.code, exc.headers.get("Content-Type", ""), exc.read())
    except (urllib.error.URLError, OSError, ValueError):
        # ConnectionRefused/Reset, socket timeouts, RemoteDisconnected, BadStatusLine, ...
        return None


def any_answer(answer: HttpAnswer) -> bool:
    """Ready on any HTTP answer, whatever its status."""
    return True


@dataclasses.dataclass(frozen=True)
class HttpProbe:
    """Ready when ``target`` gives an HTTP answer that ``ready`` accepts; refusals and timeouts are "not yet".

    ``check`` returns None when ready, else what it saw instead.
    """

    target: str
    ready: Callable[[HttpAnswer], bool] = any_answer
    method: str = "GET"
    body: bytes | None = None
    request_timeout: float = 5.0
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)  # may hold a key

    def check(self, timeout: float) -> str | None:
        answer = http_request(self.target, self.method, self.body, timeout=timeout, headers=self.headers)
        if answer is None:
            return "no answer"
        return None if self.ready(answer) else f"HTTP {answer.status} {answer.body[:200]!r}"
