"""LocalStack: Azurite and/or the scoring service, started in order and ready, stopped together.

The scoring service is one plain gunicorn on SCORING_PORT (``replicas`` 0, the default), or the
local twin of a managed endpoint (``replicas`` N >= 1): N replicas, each a gunicorn on its own free
port, behind nginx on SCORING_PORT (scripts/local_stack/twin.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from .config import (
    Settings,
    StackError,
    app_env,
    azurite_blob_endpoint,
    azurite_connection_string,
    scoring_base_url,
    scoring_url,
)
from .net import ensure_port_free, free_port
from .pidfile import remove_pid_file, write_pid_file
from .process import Service, ServiceProcess, spawn, spawn_and_wait, stop, wait_ready
from .services import azurite_service, scoring_service
from .twin import NGINX_DIR, TwinLimits, check_scoring_key, nginx_service, replica_name


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
        replicas: int | None = None,
        scoring_key: str | None = None,
        twin_limits: TwinLimits | None = None,
    ) -> None:
        settings = settings or Settings.from_env(os.environ if env is None else env)
        self.run_azurite = azurite
        self.run_scoring = scoring
        self.stack_dir = Path(stack_dir or settings.stack_dir)
        self.azurite_port = azurite_port or settings.azurite_port
        self.scoring_port = scoring_port or settings.scoring_port
        self.workers = workers or settings.scoring_workers
        self.replicas = settings.scoring_replicas if replicas is None else replicas
        if self.replicas < 0:
            raise StackError(f"replicas must be 0 (no nginx) or more, got {self.replicas}")
        key = settings.scoring_key if scoring_key is None else scoring_key
        self._scoring_key = check_scoring_key(key) if key and self.replicas else ""
        self.twin_limits = twin_limits
        self._replica_ports: list[int] = []
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
        self.scoring_log_path = self.stack_dir / ("nginx.log" if self.replicas else "scoring.log")

    def __repr__(self) -> str:
        return (f"LocalStack(stack_dir={str(self.stack_dir)!r}, azurite_port={self.azurite_port}, "
                f"scoring_port={self.scoring_port}, replicas={self.replicas}, keyed={self.keyed})")  # fmt: skip

    @property
    def scoring_key(self) -> str:
        """The twin's endpoint key ("" if none, or no twin); never in the repr."""
        return self._scoring_key

    @property
    def keyed(self) -> bool:
        """True if nginx checks an endpoint key."""
        return bool(self._scoring_key)

    def app_env(self) -> dict[str, str]:
        """BLOB_CONNECTION_STRING and SCORING_URL for the app, and SCORING_KEY when the twin checks one."""
        return app_env(self.azurite_port, self.scoring_port, self._scoring_key or None)

    # ---- processes
    @property
    def azurite_proc(self) -> ServiceProcess | None:
        return self._procs.get("azurite")

    @property
    def scoring_proc(self) -> ServiceProcess | None:
        """The process that answers ``scoring_url``: the plain service, or the twin's nginx."""
        return self._procs.get("nginx" if self.replicas else "scoring")

    @property
    def nginx_proc(self) -> ServiceProcess | None:
        return self._procs.get("nginx")

    @property
    def replica_procs(self) -> list[ServiceProcess]:
        """The twin's started replicas, in order (each knows its port: ``proc.service.port``)."""
        return [self._procs[name] for name in self._replica_names() if name in self._procs]

    def _replica_names(self) -> list[str]:
        return [replica_name(i) for i in range(1, self.replicas + 1)]

    @property
    def nginx_dir(self) -> Path:
        """Where the twin's nginx config, nginx's own pid file and its access log are."""
        return self.stack_dir / NGINX_DIR

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
        if self.run_scoring and not self.replicas:
            services["scoring"] = scoring_service(
                self.scoring_port, self.workers, entry_script=self.entry_script, model_dir=self.model_dir,
                log_path=self.scoring_log_path, azurite_port=self.azurite_port, env=self.env,
                timeout=self.scoring_timeout,
            )  # fmt: skip
        elif self.run_scoring:
            if not self._replica_ports:  # chosen once, so that services() describes what start() runs
                self._replica_ports = _distinct_free_ports(self.replicas, avoid={self.azurite_port, self.scoring_port})
            # The replicas never see the endpoint key (nginx checks it and strips the header).
            env = {k: v for k, v in (os.environ if self.env is None else self.env).items() if k != "SCORING_KEY"}
            # The replicas share this machine's cores (in Azure each has its own): split the ei pools.
            env.setdefault("EI_POOL_SIZE", str(max(1, (os.cpu_count() or 1) // self.replicas)))
            for name, port in zip(self._replica_names(), self._replica_ports, strict=True):
                replica = scoring_service(
                    port, self.workers, entry_script=self.entry_script, model_dir=self.model_dir,
                    log_path=self.stack_dir / f"{name}.log", azurite_port=self.azurite_port, env=env,
                    timeout=self.scoring_timeout,
                )  # fmt: skip
                services[name] = dataclasses.replace(replica, name=f"scoring {name}", port_env=None)
            limits = self.twin_limits or TwinLimits.from_env(env)
            services["nginx"] = nginx_service(
                self.stack_dir, self.scoring_port, self._replica_ports, self._scoring_key or None, limits=limits,
                log_path=self.scoring_log_path,
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
        replicas = [name for name in services if name in self._replica_names()]
        try:
            for name, service in services.items():
                if name in replicas:
                    continue
                if name == "nginx":  # the replicas start together (each boots in seconds), nginx once they are up
                    for replica in replicas:
                        self._started(replica, spawn(services[replica]))
                    for proc in self.replica_procs:
                        wait_ready(proc)
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
        if self.scoring_proc is not None and not self.replicas:
            lines += [
                f"Scoring service   {self.scoring_url}   [SCORING_PORT={self.scoring_port}, {self.workers} workers]",
                f"  SCORING_URL={self.scoring_url}",
                f"  log: {self.scoring_log_path}",
            ]
        elif self.scoring_proc is not None:
            key = "checks SCORING_KEY (Authorization: Bearer)" if self.keyed else "no key (SCORING_KEY unset)"
            lines += [
                (f"Scoring (twin)    {self.scoring_url}   [SCORING_PORT={self.scoring_port}, nginx in front of "
                f"{len(self.replica_procs)} replicas x {self.workers} worker{'s' if self.workers != 1 else ''}; {key}]"),
                f"  SCORING_URL={self.scoring_url}" + ("   SCORING_KEY=<the key you set>" if self.keyed else ""),
                f"  log: {self.scoring_log_path} (nginx), {self.nginx_dir / 'access.log'} (requests)",
            ]
            lines += [
                f"  {proc.service.name.removeprefix('scoring ')}: {scoring_url(proc.service.port or 0)}   "
                f"log: {proc.log_path}"
                for proc in self.replica_procs
            ]
        return "\n".join(lines)


def _distinct_free_ports(count: int, avoid: set[int]) -> list[int]:
    """``count`` different free ports, none of them in ``avoid``."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in avoid:
            ports.append(port)
    return ports
