"""A recording (and, on request, tampering) HTTP proxy in front of the scoring service, for browser tests.

``RecordingProxy(target)`` listens on a free loopback port and forwards every request to ``target``
(the real service): the tests point the app's SCORING_URL at it, so ``bodies`` holds every request body
the app sent, and ``tamper`` (if set) rewrites the service's response body before the app gets it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class RecordingProxy:
    """Forwards to ``target`` (scheme://host:port); records request bodies; optionally tampers responses."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.bodies: list[bytes] = []
        self.tamper: Callable[[bytes], bytes] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.bodies.append(body)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                answer = requests.request(self.command, proxy.target + self.path, data=body, headers=headers, timeout=120)
                content = answer.content
                if proxy.tamper is not None and self.command == "POST" and answer.status_code == 200:
                    content = proxy.tamper(content)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/score"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
