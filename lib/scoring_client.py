"""HTTP client of the scoring service (``POST /score``, ``GET /`` answers ``Healthy``).

The only module that talks to the service. It sends JSON, measures the round trip and the bytes
each way, and turns every failure into a domain error: unreachable or slow -> ServiceUnavailable,
a refusal (the contract's ``{"error", "message"}`` body) or an unusable answer -> ServiceRejected.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import requests

from lib.errors import ServiceRejected, ServiceUnavailable

__all__ = ["ScoreCall", "ScoringClient"]

START_HINT = "start the local stack with `.venv/bin/python -m scripts.local_stack up`"
_MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a real response is about 3 MB
_CONNECT_TIMEOUT_S = 5.0
_HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ScoreCall:
    """One successful call: the parsed JSON body and what it cost.

    ``body`` is a dict for our contract; the seed's request shape gets a bare list back.
    """

    body: Any
    request_bytes: int
    response_bytes: int
    round_trip_s: float


class ScoringClient:
    """Calls one scoring URL over a kept-alive ``requests.Session``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = float(timeout_s)
        self._http = requests.Session()
        parts = urlsplit(url)
        self.base_url = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))

    def __repr__(self) -> str:
        return f"ScoringClient(url={self.url!r}, timeout_s={self.timeout_s})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._http.close()

    def _unreachable(self, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"The scoring service at {self.url} is not reachable ({why}): {START_HINT}."
        )

    def score(self, request: dict[str, Any]) -> ScoreCall:
        """POST ``request`` as JSON and return the parsed 200 body with sizes and round-trip time."""
        payload = json.dumps(request, separators=(",", ":")).encode("utf-8")
        started = time.perf_counter()
        try:
            response = self._http.post(
                self.url,
                data=payload,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=(min(_CONNECT_TIMEOUT_S, self.timeout_s), self.timeout_s),
                allow_redirects=False,
                stream=True,
            )
            try:
                content = self._read_capped(response)
            finally:
                response.close()
        except requests.Timeout:
            raise ServiceUnavailable(
                f"The scoring service at {self.url} did not answer within {self.timeout_s:g} s: check that it "
                f"is running ({START_HINT}) or raise SCORING_TIMEOUT_S."
            ) from None
        except requests.ConnectionError:
            raise self._unreachable("connection failed") from None
        except requests.RequestException as exc:
            raise self._unreachable(type(exc).__name__) from None
        round_trip = time.perf_counter() - started

        status = response.status_code
        if status != 200:
            raise self._rejection(status, content)
        try:
            body = json.loads(content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ServiceRejected(
                200, "bad_response", "the service answered 200 with a body that is not JSON."
            ) from None
        return ScoreCall(
            body=body, request_bytes=len(payload), response_bytes=len(content), round_trip_s=round_trip
        )

    def _read_capped(self, response: requests.Response) -> bytes:
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_content(chunk_size=1 << 20):
            total += len(chunk)
            if total > _MAX_RESPONSE_BYTES:
                raise ServiceRejected(
                    response.status_code, "too_large", f"the response exceeds {_MAX_RESPONSE_BYTES >> 20} MB."
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _rejection(status: int, content: bytes) -> ServiceRejected:
        """The contract's ``{"error", "message"}`` body, or a generic rejection if there is none."""
        try:
            body = json.loads(content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        if (
            isinstance(body, dict)
            and isinstance(body.get("error"), str)
            and isinstance(body.get("message"), str)
        ):
            return ServiceRejected(status, body["error"], body["message"])
        text = content[:200].decode("utf-8", "replace").strip() or "no body"
        code = "server_error" if status >= 500 else "http_error"
        return ServiceRejected(status, code, f"HTTP {status} without a JSON error body ({text!r}).")

    def is_healthy(self) -> bool:
        """True if ``GET /`` on the service's base URL answers 200 ``Healthy`` within two seconds."""
        try:
            response = self._http.get(self.base_url, timeout=_HEALTH_TIMEOUT_S, allow_redirects=False)
        except requests.RequestException:
            return False
        return response.status_code == 200 and "healthy" in response.text.lower()
