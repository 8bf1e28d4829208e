"""The one error type the scoring service turns into a 4xx/5xx JSON answer."""
from __future__ import annotations


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
