"""Whether blob storage and the scoring service answer, and what to do when they do not."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lib.blob_store import PublicKeyStore
from lib.scoring_client import ScoringClient

__all__ = ["START_STACK", "Health", "check_health"]

START_STACK = (
    "`.venv/bin/python -m scripts.local_stack up` (or run the whole demo with `scripts/run_demo.sh`)"
)


@dataclass(frozen=True)
class Health:
    """Whether blob storage and the scoring service answered, and where they are."""

    storage_ok: bool
    scoring_ok: bool
    storage_endpoint: str
    scoring_url: str
    scoring_refuses_key: bool = False
    """The service answered 401/403: it is up, but wants a (different) SCORING_KEY."""

    @property
    def all_ok(self) -> bool:
        """Both answered."""
        return self.storage_ok and self.scoring_ok

    @property
    def stack_down(self) -> bool:
        """A service does not answer at all (starting the stack helps; a refused key it does not)."""
        return not self.storage_ok or not (self.scoring_ok or self.scoring_refuses_key)

    def problems(self) -> list[str]:
        """One message per service that is down, each saying what to do."""
        messages = []
        if not self.storage_ok:
            messages.append(
                f"Blob storage at {self.storage_endpoint} is not reachable, so this session's public keys "
                f"cannot be uploaded. Start it with {START_STACK}, or point BLOB_CONNECTION_STRING at a "
                "storage account. The app notices by itself when it is back."
            )
        if self.scoring_refuses_key:
            messages.append(
                f"The scoring service at {self.scoring_url} answers but refuses this app's requests (HTTP "
                "401/403): set SCORING_KEY to the endpoint's key (`az ml online-endpoint get-credentials -n "
                "<endpoint>`), then reload this page."
            )
        elif not self.scoring_ok:
            messages.append(
                f"The scoring service at {self.scoring_url} is not reachable, so nothing can be classified. "
                f"Start it with {START_STACK}, or check SCORING_URL. The app notices by itself when it is back."
            )
        return messages


def check_health(store: PublicKeyStore, scorer: ScoringClient) -> Health:
    """Probe both services at once; each probe gives up after about two seconds."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="health") as pool:
        storage = pool.submit(store.is_reachable)
        scoring = pool.submit(scorer.probe)
        return Health(
            storage_ok=storage.result(),
            scoring_ok=scoring.result() == "healthy",
            storage_endpoint=store.endpoint,
            scoring_url=scorer.url,
            scoring_refuses_key=scoring.result() == "unauthorized",
        )
