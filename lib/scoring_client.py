"""HTTP client of the scoring service (``POST /score``, ``GET /`` answers ``Healthy``).

The only module that talks to the service. It sends JSON, measures the round trip and the bytes
each way, and turns every failure into a domain error: unreachable or slow -> ServiceUnavailable,
a refusal (the contract's ``{"error", "message"}`` body) or an unusable answer -> ServiceRejected.
With an endpoint key (``SCORING_KEY``) every call carries ``Authorization: Bearer <key>``, as Azure
ML managed endpoints require; the key appears in no message, ``repr`` or log, and redirects are
never followed, so it goes to the configured host only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import requests

from lib.errors import ServiceRejected, ServiceUnavailable
from lib.settings import AppSettings

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

    def __init__(self, url: str, timeout_s: float, key: str = "") -> None:
        self.url = url
        self.timeout_s = float(timeout_s)
        self._http = requests.Session()
        self._auth = {"Authorization": f"Bearer {key}"} if key else {}
        parts = urlsplit(url)
        self.base_url = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))

    @classmethod
    def from_settings(cls, settings: AppSettings) -> ScoringClient:
        """The client for the app's SCORING_URL, SCORING_TIMEOUT_S and SCORING_KEY."""
        return cls(settings.scoring_url, settings.scoring_timeout_s, settings.scoring_key)

    @property
    def sends_key(self) -> bool:
        """Whether calls carry an endpoint key (never the key itself)."""
        return bool(self._auth)

    def __repr__(self) -> str:
        return f"ScoringClient(url={self.url!r}, timeout_s={self.timeout_s}, sends_key={self.sends_key})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._http.close()

    def _unreachable(self, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"The scoring service at {self.url} is not reachable ({why}): {START_HINT}.", transient=True
        )

    def score(self, request: dict[str, Any]) -> ScoreCall:
        """POST ``request`` as JSON and return the parsed 200 body with sizes and round-trip time."""
        payload = json.dumps(request, separators=(",", ":")).encode("utf-8")
        started = time.perf_counter()
        try:
            response = self._http.post(
                self.url,
                data=payload,
                headers={"Content-Type": "application/json", "Accept": "application/json", **self._auth},
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
        if status in (401, 403):
            raise self._unauthorized(status)
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

    def _unauthorized(self, status: int) -> ServiceRejected:
        """A 401/403: say what to set (the gateway's body is not quoted; the key never is)."""
        if self.sends_key:
            why = (
                "it refused the endpoint key in SCORING_KEY. Set SCORING_KEY to the endpoint's current key "
                "(`az ml online-endpoint get-credentials -n <endpoint>`; keys change when regenerated)."
            )
        else:
            why = (
                "it needs an endpoint key. Set SCORING_KEY (environment or .streamlit/secrets.toml) to the "
                "endpoint's key (`az ml online-endpoint get-credentials -n <endpoint>`)."
            )
        return ServiceRejected(status, "unauthorized", why)

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

    def probe(self) -> Literal["healthy", "unauthorized", "down"]:
        """``GET /`` on the service's base URL within two seconds: 200 ``Healthy``, a 401/403, or neither."""
        try:
            response = self._http.get(
                self.base_url, headers=self._auth, timeout=_HEALTH_TIMEOUT_S, allow_redirects=False
            )
        except requests.RequestException:
            return "down"
        if response.status_code in (401, 403):
            return "unauthorized"
        return "healthy" if response.status_code == 200 and "healthy" in response.text.lower() else "down"

    def is_healthy(self) -> bool:
        """True if ``GET /`` on the service's base URL answers 200 ``Healthy`` within two seconds."""
        return self.probe() == "healthy"
