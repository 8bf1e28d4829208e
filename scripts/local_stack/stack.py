"""LocalStack: Azurite and/or the scoring service, started in order and ready, stopped together."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from .config import (
    Settings,
    app_env,
    azurite_blob_endpoint,
    azurite_connection_string,
    scoring_base_url,
    scoring_url,
)
from .net import ensure_port_free
from .pidfile import remove_pid_file, write_pid_file
from .process import Service, ServiceProcess, spawn_and_wait, stop
from .services import azurite_service, scoring_service


class LocalStack:
    """Start Azurite and/or the scoring service, wait until they are ready, stop them on exit.

    >>> with LocalStack(scoring=False, azurite_port=free_port(), stack_dir=tmp) as stack:
    ...     stack.connection_string
    """

    def __init__(
        self,
        *,
        azurite: bool = True,
        scoring: bool = True,
        settings: Settings | None = None,
        stack_dir: Path | None = None,
        azurite_port: int | None = None,
        scoring_port: int | None = None,
        workers: int | None = None,
        in_memory: bool = False,
        entry_script: Path | None = None,
        model_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        pid_files: bool = False,
        azurite_timeout: float = 60.0,
        scoring_timeout: float = 300.0,
    ) -> None:
        settings = settings or Settings.from_env(os.environ if env is None else env)
        self.run_azurite = azurite
        self.run_scoring = scoring
        self.stack_dir = Path(stack_dir or settings.stack_dir)
        self.azurite_port = azurite_port or settings.azurite_port
        self.scoring_port = scoring_port or settings.scoring_port
        self.workers = workers or settings.scoring_workers
        self.in_memory = in_memory
        self.entry_script = entry_script
        self.model_dir = model_dir
        self.env = env
        self.pid_files = pid_files
        self.azurite_timeout = azurite_timeout
        self.scoring_timeout = scoring_timeout
        self._procs: dict[str, ServiceProcess] = {}
        # Addresses and logs
        self.connection_string = azurite_connection_string(self.azurite_port)
        self.blob_endpoint = azurite_blob_endpoint(self.azurite_port)
        self.scoring_base_url = scoring_base_url(self.scoring_port)
        self.scoring_url = scoring_url(self.scoring_port)
        self.azurite_log_path = self.stack_dir / "azurite.log"
        self.scoring_log_path = self.stack_dir / "scoring.log"

    def app_env(self) -> dict[str, str]:
        """BLOB_CONNECTION_STRING and SCORING_URL for the app."""
        return app_env(self.azurite_port, self.scoring_port)

    # ---- processes
    @property
    def azurite_proc(self) -> ServiceProcess | None:
        return self._procs.get("azurite")

    @property
    def scoring_proc(self) -> ServiceProcess | None:
        return self._procs.get("scoring")

    def processes(self) -> dict[str, ServiceProcess]:
        """The started services by name."""
        return dict(self._procs)

    def services(self) -> dict[str, Service]:
        """What :meth:`start` runs, in order (checks that Azurite and the entry script exist)."""
        services = {}
        if self.run_azurite:
            services["azurite"] = azurite_service(
                self.azurite_port, self.stack_dir / "azurite-data", self.in_memory, self.azurite_log_path,
                self.azurite_timeout,
            )  # fmt: skip
        if self.run_scoring:
            services["scoring"] = scoring_service(
                self.scoring_port, self.workers, entry_script=self.entry_script, model_dir=self.model_dir,
                log_path=self.scoring_log_path, azurite_port=self.azurite_port, env=self.env,
                timeout=self.scoring_timeout,
            )  # fmt: skip
        return services

    # ---- lifecycle
    def start(self) -> Self:
        """Start the selected services and wait until each is ready; on any failure stop them all."""
        services = self.services()
        for service in services.values():  # every port before anything starts
            if service.port is not None:
                ensure_port_free(service.port, service.port_env)
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name, service in services.items():
                spawn_and_wait(service, on_spawn=functools.partial(self._started, name))
        except BaseException:
            self.stop()
            raise
        return self

    def _started(self, name: str, proc: ServiceProcess) -> None:
        self._procs[name] = proc
        if self.pid_files and proc.service.port is not None:
            write_pid_file(self.stack_dir, name, proc, proc.service.port)

    def stop(self) -> None:
        """Stop whatever was started (in reverse order), no orphans; idempotent."""
        for name, proc in reversed(list(self._procs.items())):
            stop(proc)
            if self.pid_files:
                remove_pid_file(self.stack_dir, name)
            del self._procs[name]

    def dead(self) -> dict[str, ServiceProcess]:
        """Services that were started and have exited since."""
        return {name: proc for name, proc in self._procs.items() if proc.poll() is not None}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def describe(self) -> str:
        """Human-readable addresses of the started services."""
        lines = []
        if self.azurite_proc is not None:
            lines += [
                f"Azurite (blob)    {self.blob_endpoint}   [AZURITE_PORT={self.azurite_port}]",
                f"  BLOB_CONNECTION_STRING={self.connection_string}",
                f"  log: {self.azurite_log_path}",
            ]
        if self.scoring_proc is not None:
            lines += [
                f"Scoring service   {self.scoring_url}   [SCORING_PORT={self.scoring_port}, {self.workers} workers]",
                f"  SCORING_URL={self.scoring_url}",
                f"  log: {self.scoring_log_path}",
            ]
        return "\n".join(lines)
