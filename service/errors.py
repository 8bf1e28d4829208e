"""The contract's errors: the one error type the scoring service answers, and the WSGI layer that
puts every other error response in the same JSON shape (docs/contract.md, "Errors").
"""
from __future__ import annotations

import io
import json
import logging
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger("encrypted_mnist.service")

StartResponse = Callable[..., Callable[[bytes], object]]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class RequestRejected(Exception):
    """A request the service refuses, with the HTTP status and the contract's error code.

    The message is shown to the client, so it says what is wrong and what to do, and never holds
    a secret (no connection string, no SAS signature).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def as_body(self) -> dict[str, str]:
        """The JSON error body of docs/contract.md."""
        return {"error": self.code, "message": self.message}


_SECRETS = re.compile(r"(?i)\b(sig|accountkey|sharedaccesssignature)(=|%3d)[^&;\s'\"]*")


def redacted_traceback(error: BaseException) -> str:
    """The error's traceback for the log: SAS signatures and account keys cut out, always encodable.

    Exception messages from the storage SDK or urllib can quote the key URL or the connection string.
    """
    text = "".join(traceback.format_exception(error))
    text = _SECRETS.sub(lambda match: f"{match.group(1)}{match.group(2)}<redacted>", text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# What the AzureML server answers by itself, in the contract's words: (code, message) per status.
SERVER_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed."),
    404: ("not_found", "No such path: the service answers GET / (health) and POST /score."),
    405: ("method_not_allowed", "Method not allowed: score with POST /score; GET / is the health check."),
    408: ("request_timeout", "The request took too long to arrive."),
    413: ("too_large", "The request is too large."),
    415: ("bad_request", "The request's content type is not supported: send JSON."),
    431: ("bad_request", "A request header is too long."),
    500: ("internal_error", "The scoring service failed on this request (a bug in the service, logged there)."),
    502: ("upstream_unavailable", "An upstream service could not be reached."),
    503: ("not_ready", "The service is not ready yet: try again shortly."),
    504: ("upstream_timeout", "An upstream service did not answer in time."),
}
_REASONS = {400: "BAD REQUEST", 405: "METHOD NOT ALLOWED", 413: "REQUEST ENTITY TOO LARGE"}
_NOT_UTF8 = "The request body is not UTF-8 text; send JSON in UTF-8."
# The server's own messages that it words better than we would (its header limits), kept as they are.
_KEEP_SERVER_MESSAGE = {415, 431}
_ALLOW = {"/score": "POST, OPTIONS", "/": "GET, HEAD, OPTIONS", "/swagger.json": "GET, HEAD, OPTIONS"}
MAX_ERROR_BODY = 256 * 1024


def contract_error(status: int, server_body: bytes = b"", method: str = "GET") -> dict[str, str]:
    """The contract's {"error", "message"} for an error response the AzureML server made itself."""
    code, message = SERVER_ERRORS.get(status, ("bad_request" if status < 500 else "internal_error", ""))
    server_message = _message_of(server_body)
    if status == 400 and server_message.startswith("Input cannot be decoded as UTF-8"):
        code, message = "bad_json", _NOT_UTF8  # azureml-inference-server-http's JsonStringInput
    elif status == 405:
        message = f"Method {method[:20]} is not allowed here: score with POST /score; GET / is the health check."
    elif (status in _KEEP_SERVER_MESSAGE or not message) and server_message:
        message = server_message[:300]
    return {"error": code, "message": message or f"The request failed (HTTP {status})."}


def _message_of(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return message if isinstance(message, str) else ""


def is_contract_error(headers: list[tuple[str, str]], body: bytes) -> bool:
    """Whether an error response already is the contract's JSON {"error": str, "message": str}."""
    content_type = next((value for name, value in headers if name.lower() == "content-type"), "")
    if not content_type.lower().startswith("application/json"):
        return False
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return (isinstance(parsed, dict) and isinstance(parsed.get("error"), str)
            and isinstance(parsed.get("message"), str))


class ContractErrors:
    """WSGI middleware: every error response (status >= 400) leaves in the contract's JSON shape.

    Responses below 400 are passed through untouched: the same status, headers and body iterable
    (streamed or not), byte for byte. An error response is read (error bodies are small) and, if it
    is not already ``{"error": ..., "message": ...}`` with a JSON content type, replaced by one, with
    the same status and the other headers kept (request ids, x-ms-run-function-failed). A HEAD
    request's error gets the headers of that body (its Content-Length) and no body. An exception
    that escapes the wrapped app is logged and answered 500 ``internal_error``.

    Two kinds of input would make the AzureML server itself fail (500), so they are answered here
    before it sees them: ``GET``/``HEAD /score`` (the server would parse the query string as JSON,
    and a deeply nested one raises; the contract scores with POST only) is 405, and a chunked body
    is read here first, so that broken chunked framing is 400 ``bad_request`` and a chunked body over
    ``max_body_bytes`` is 413 ``too_large`` (the app then reads it from memory).
    """

    def __init__(self, app: WsgiApp, max_body_bytes: int = 4 * 1024 * 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started: list[Any] = []  # [status, headers, exc_info] once the app has called start_response
        written: list[bytes] = []  # bytes passed to the legacy write() callable

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            started[:] = [status, headers, exc_info]
            return written.append

        method = str(environ.get("REQUEST_METHOD", "GET"))
        refused = self._refused_before_the_app(environ, method)
        if refused is not None:
            log.info("%s %s %d error=%s (answered before the AzureML server)", method,
                     str(environ.get("PATH_INFO", ""))[:100], refused.status, refused.code)
            status, headers = f"{refused.status} {_REASONS.get(refused.status, 'ERROR')}", []
            if refused.status == 405:
                headers = [("Allow", _ALLOW["/score"])]
            return self._send(start_response, status, headers, refused.as_body(), method)
        try:
            body: Iterable[bytes] = self.app(environ, capture)
            if not started:  # an app may call start_response only when its body is first iterated
                body = _Peeked(iter(body), body)
        except Exception as failure:  # noqa: BLE001 (logged with its redacted traceback)
            log.error("the WSGI app raised; answered 500 internal_error\n%s", redacted_traceback(failure))
            return self._send(start_response, "500 INTERNAL SERVER ERROR", [], contract_error(500), method)
        if not started:
            log.error("the WSGI app answered without a status; answered 500 internal_error")
            return self._send(start_response, "500 INTERNAL SERVER ERROR", [], contract_error(500), method)
        status, headers, exc_info = started
        code = int(status.split()[0])
        if code < 400:
            start_response(status, headers, exc_info)
            return _Chained(written, body) if written else body
        try:
            data = b"".join(written) + _read(body, MAX_ERROR_BODY)
        except Exception as failure:  # noqa: BLE001 (logged with its redacted traceback)
            log.error("reading an error response failed; answered 500 internal_error\n%s",
                      redacted_traceback(failure))
            return self._send(start_response, "500 INTERNAL SERVER ERROR", [], contract_error(500), method)
        if method != "HEAD" and is_contract_error(headers, data):
            start_response(status, headers, exc_info)
            return [data]
        if method == "HEAD":  # the body was dropped: answer the headers of the contract's body
            data = b""
        error = contract_error(code, data, method)
        if code == 405 and not any(name.lower() == "allow" for name, _ in headers):
            allow = _ALLOW.get(str(environ.get("PATH_INFO", "")))
            headers = [*headers, ("Allow", allow)] if allow else headers
        return self._send(start_response, status, headers, error, method, exc_info)

    def _refused_before_the_app(self, environ: dict[str, Any], method: str) -> RequestRejected | None:
        if method in ("GET", "HEAD") and environ.get("PATH_INFO") == "/score":
            refused = contract_error(405, b"", method)
            return RequestRejected(405, refused["error"], refused["message"])
        if "chunked" not in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
            return None
        chunks, size = [], 0
        try:
            while chunk := environ["wsgi.input"].read(64 * 1024):
                size += len(chunk)
                if size > self.max_body_bytes:
                    return RequestRejected(413, "too_large", f"The request body is over {self.max_body_bytes} bytes.")
                chunks.append(chunk)
        except Exception as error:  # noqa: BLE001 (the server's reader: any error means the framing is broken)
            log.info("a chunked request body could not be read (%s): answered 400", type(error).__name__)
            return RequestRejected(400, "bad_request", "The request body's chunked encoding is malformed.")
        data = b"".join(chunks)
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(data), str(len(data))
        return None

    @staticmethod
    def _send(start_response: StartResponse, status: str, headers: list[tuple[str, str]], error: dict[str, str],
              method: str, exc_info: Any = None) -> list[bytes]:
        payload = json.dumps(error).encode("utf-8")
        kept = [(name, value) for name, value in headers
                if name.lower() not in ("content-type", "content-length", "transfer-encoding")]
        start_response(status, [*kept, ("Content-Type", "application/json"),
                                ("Content-Length", str(len(payload)))], exc_info)
        return [] if method == "HEAD" else [payload]


def _read(body: Iterable[bytes], limit: int) -> bytes:
    """The whole body (up to ``limit`` bytes; the rest is dropped), then the iterable closed."""
    chunks, size = [], 0
    try:
        for chunk in body:
            if size < limit:
                chunks.append(chunk[: limit - size])
                size += len(chunks[-1])
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return b"".join(chunks)


class _Peeked:
    """An iterable whose first chunk was taken early (to see the status), with the original's close()."""

    def __init__(self, iterator: Iterator[bytes], original: Iterable[bytes]) -> None:
        self._original = original
        self._first = next(iterator, None)
        self._rest = iterator

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            yield self._first
        yield from self._rest

    def close(self) -> None:
        close = getattr(self._original, "close", None)
        if close is not None:
            close()


class _Chained(_Peeked):
    """The bytes given to write() first, then the body (WSGI's order)."""

    def __init__(self, written: list[bytes], body: Iterable[bytes]) -> None:
        self._original = body
        self._first = b"".join(written)
        self._rest = iter(body)
