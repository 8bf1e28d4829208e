"""Domain errors that the app shows with ``st.error`` and the CLI prints, never as a traceback.

Every message is for the person running the demo: it says what went wrong and what to do next.
No message ever holds a secret (no secret key, no account key, no SAS signature).
"""

from __future__ import annotations

__all__ = [
    "DemoError",
    "InvalidInput",
    "ServiceRejected",
    "ServiceUnavailable",
    "SettingsError",
    "StorageUnavailable",
]


class DemoError(Exception):
    """Base class: ``message`` is user-facing and says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SettingsError(DemoError):
    """A setting is missing or malformed; the message names the setting."""


class StorageUnavailable(DemoError):
    """Blob storage (Azurite or Azure) could not be reached or refused the operation."""


class ServiceUnavailable(DemoError):
    """The scoring service could not be reached or did not answer in time.

    ``transient`` is true when the connection failed or broke (a restarting worker or replica), so
    trying once more is worth it; a request that timed out is not tried again.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ServiceRejected(DemoError):
    """The scoring service answered with an error (or with a response we cannot use).

    ``status`` is the HTTP status, ``code`` the contract's machine-readable ``error`` field and
    ``detail`` the service's own message.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.detail = message
        super().__init__(f"The scoring service refused the request (HTTP {status}, {code}): {message}")

    @property
    def transient(self) -> bool:
        """A 502 or 503 from the service's front (a replica died or is not ready): worth one more try.

        Storage being down (``storage_unavailable``) and timeouts (504) are not: retrying only doubles the wait.
        """
        return self.status in (502, 503) and self.code != "storage_unavailable"


class InvalidInput(DemoError):
    """The input (a drawing, an image, a ciphertext) cannot be used; the message says why."""
