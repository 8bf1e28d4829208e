"""The local stack (scripts/local_stack/): real Azurite and gunicorn processes, started and stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scripts import local_stack as ls

pytestmark = pytest.mark.slow  # process start-ups: seconds per test

FAKE_SCORE = textwrap.dedent(
    """
    import json
    import os
    import time

    from azureml_inference_server_http.api.aml_response import AMLResponse

    INIT_SECONDS = {init_seconds}


    def init():
        if INIT_SECONDS < 0:
            raise RuntimeError("fake init failed on purpose")
        time.sleep(INIT_SECONDS)


    def run(raw_data):
        data = json.loads(raw_data)
        if not data:
            return AMLResponse({{"error": "bad_request", "message": "empty request"}}, 400, json_str=True)
        return {{"allowed_blob_hosts": os.environ.get("ALLOWED_BLOB_HOSTS"), "pid": os.getpid()}}
    """
)


def write_fake_score(directory: Path, init_seconds: float) -> Path:
    """A throwaway AzureML entry script: init() sleeps (or fails if negative), run({}) is a JSON 400."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "score.py"
    script.write_text(FAKE_SCORE.format(init_seconds=init_seconds))
    return script


def cli(*args: str, stack_dir: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run ``python -m scripts.local_stack ARGS`` with its state in ``stack_dir``."""
    full_env = dict(os.environ, STACK_DIR=str(stack_dir), **env)
    return subprocess.run(
        [sys.executable, "-m", "scripts.local_stack", *args],
        check=False,
        cwd=ls.ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def cli_in_background(*args: str, stack_dir: Path, **env: str) -> Iterator[subprocess.Popen[str]]:
    """``python -m scripts.local_stack ARGS`` in its own session, output piped; killed if it still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.local_stack", *args],
        cwd=ls.ROOT,
        env=dict(os.environ, STACK_DIR=str(stack_dir), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def assert_group_gone(pgid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def detached_sleeper() -> int:
    """The pid of a sleeping process in its own session whose parent has exited (as after ``up``)."""
    code = ("import subprocess as s, sys; print(s.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
            "stdout=s.DEVNULL, stderr=s.DEVNULL, start_new_session=True).pid)")  # fmt: skip
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    members.append(int(entry.name))
            except ProcessLookupError:
                pass
    return members


# ---------------------------------------------------------------------------------------------- Azurite


def test_azurite_fixture_answers_and_stores_blobs(azurite) -> None:
    from azure.storage.blob import BlobServiceClient

    answer = ls.http_request(f"{azurite.blob_endpoint}?comp=list")
    assert answer is not None, "Azurite does not answer HTTP"
    assert azurite.connection_string.startswith("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;")
    assert f"BlobEndpoint=http://127.0.0.1:{azurite.port}/devstoreaccount1;" in azurite.connection_string

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(f"test-{uuid.uuid4().hex[:12]}")
    container.upload_blob("hello.bin", b"\x00hello\xff")
    assert container.download_blob("hello.bin").readall() == b"\x00hello\xff"
    container.delete_container()


def test_starting_azurite_twice_on_one_port_fails_clearly(azurite, tmp_path: Path) -> None:
    with pytest.raises(ls.PortInUseError) as excinfo:
        ls.spawn(ls.azurite_service(azurite.port, tmp_path / "data"))
    message = str(excinfo.value)
    assert str(azurite.port) in message and "AZURITE_PORT" in message

    result = cli("up", "--only", "azurite", stack_dir=tmp_path, AZURITE_PORT=str(azurite.port))
    assert result.returncode == 1
    assert f"port {azurite.port}" in result.stderr and "AZURITE_PORT" in result.stderr
    assert not ls.pid_file(tmp_path, "azurite").exists()


@pytest.mark.integration
def test_stop_leaves_no_process_of_the_group(tmp_path: Path) -> None:
    port = ls.free_port()
    proc = ls.spawn(ls.azurite_service(port, tmp_path / "data", in_memory=True, log_path=tmp_path / "azurite.log"))
    try:
        ls.wait_ready(proc, 60)
        assert os.getpgid(proc.pid) == proc.pid  # its own process group
    finally:
        ls.stop(proc)
    assert_group_gone(proc.pid)
    assert proc.returncode is not None
    assert not ls.port_in_use(port)


# ---------------------------------------------------------------------------------------------- CLI


def test_down_is_idempotent_when_nothing_runs(tmp_path: Path) -> None:
    for _ in range(2):
        result = cli("down", stack_dir=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "azurite: not running" in result.stdout and "scoring: not running" in result.stdout

    # A stale pid file (its process is gone) is cleaned up, not an error.
    dead = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    dead.wait()
    ls.pid_file(tmp_path, "azurite").write_text(
        json.dumps({"name": "azurite", "pid": dead.pid, "port": 1, "started_after_boot_s": 1.0, "log_path": ""})
    )
    assert cli("status", stack_dir=tmp_path).returncode == 1  # dead: a stale pid file is a problem
    result = cli("down", stack_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "azurite: not running (stale pid file removed)" in result.stdout
    assert not ls.pid_file(tmp_path, "azurite").exists()
    assert cli("status", stack_dir=tmp_path).returncode == 3

    # A live pid that started at another time is a reused pid, not our service: left alone.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        ls.pid_file(tmp_path, "scoring").write_text(
            json.dumps({"name": "scoring", "pid": other.pid, "port": 1, "started_after_boot_s": 1.0, "log_path": ""})
        )
        result = cli("down", stack_dir=tmp_path)
        assert result.returncode == 0 and "scoring: not running (stale pid file removed)" in result.stdout
        assert not ls.pid_file(tmp_path, "scoring").exists()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()

    # A pid file of the earlier format (start time in /proc clock ticks) still works: stale ...
    ls.pid_file(tmp_path, "azurite").write_text(
        json.dumps({"name": "azurite", "pid": dead.pid, "port": 1, "start_ticks": 1, "log_path": ""})
    )
    result = cli("down", stack_dir=tmp_path)
    assert result.returncode == 0 and "azurite: not running (stale pid file removed)" in result.stdout
    assert not ls.pid_file(tmp_path, "azurite").exists()

    # ... and live: ``down`` stops what an earlier version's ``up`` started (a detached process).
    earlier = psutil.Process(detached_sleeper())
    try:
        ticks = int(Path(f"/proc/{earlier.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        ls.pid_file(tmp_path, "azurite").write_text(
            json.dumps({"name": "azurite", "pid": earlier.pid, "port": 1, "start_ticks": ticks, "log_path": ""})
        )
        result = cli("down", stack_dir=tmp_path)
        assert result.returncode == 0 and "azurite: stopped" in result.stdout, result.stdout + result.stderr
        assert not earlier.is_running()
    finally:
        with contextlib.suppress(psutil.Error):
            earlier.kill()
    assert not ls.pid_file(tmp_path, "azurite").exists()


@pytest.mark.integration
def test_cli_up_status_down_azurite_only(tmp_path: Path) -> None:
    port = str(ls.free_port())
    up = cli("up", "--only", "azurite", "--in-memory", stack_dir=tmp_path, AZURITE_PORT=port)
    record = ls.read_pid_file(tmp_path, "azurite")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}/devstoreaccount1" in up.stdout
        assert record is not None and record.alive()

        status = cli("status", stack_dir=tmp_path)
        assert status.returncode == 0, status.stdout
        assert "azurite: running, healthy" in status.stdout and "scoring: not running" in status.stdout

        again = cli("up", "--only", "azurite", stack_dir=tmp_path, AZURITE_PORT=port)
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        down = cli("down", stack_dir=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "azurite: stopped" in down.stdout
    assert record is not None
    assert_group_gone(record.pid)
    assert cli("status", stack_dir=tmp_path).returncode == 3
    assert cli("down", stack_dir=tmp_path).returncode == 0


@pytest.mark.integration
def test_cli_run_passes_settings_and_the_exit_code(tmp_path: Path) -> None:
    port = ls.free_port()
    code = (
        "import os, sys\n"
        "cs = os.environ['BLOB_CONNECTION_STRING']\n"
        f"assert 'BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;' in cs, cs\n"
        "assert os.environ['SCORING_URL'].endswith('/score')\n"
        "sys.exit(7)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("BLOB_CONNECTION_STRING", "SCORING_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "scripts.local_stack", "run", "--only", "azurite", "--", sys.executable, "-c", code],
        check=False,
        cwd=ls.ROOT,
        env=dict(env, STACK_DIR=str(tmp_path), AZURITE_PORT=str(port)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 7, result.stdout + result.stderr
    assert not ls.pid_file(tmp_path, "azurite").exists()
    assert not ls.port_in_use(port)


@pytest.mark.integration
def test_cli_run_stops_everything_on_sigterm(tmp_path: Path) -> None:
    port = ls.free_port()
    marker = tmp_path / "command-started"
    code = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(120)"
    args = ("run", "--only", "azurite", "--", sys.executable, "-c", code)
    with cli_in_background(*args, stack_dir=tmp_path, AZURITE_PORT=str(port)) as proc:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.1)
        record = ls.read_pid_file(tmp_path, "azurite")
        assert record is not None and record.alive()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
    assert_group_gone(record.pid)
    assert not ls.pid_file(tmp_path, "azurite").exists()
    assert not ls.port_in_use(port)


# ---------------------------------------------------------------------------------------------- scoring service


@pytest.mark.integration
def test_scoring_service_readiness_waits_for_a_slow_init(tmp_path: Path) -> None:
    script = write_fake_score(tmp_path / "svc", init_seconds=2)
    started = time.monotonic()
    stack = ls.LocalStack(
        azurite=False,
        scoring=True,
        azurite_port=12345,
        scoring_port=ls.free_port(),
        workers=2,
        stack_dir=tmp_path / "run",
        entry_script=script,
        model_dir=script.parent,
        env={k: v for k, v in os.environ.items() if k != "ALLOWED_BLOB_HOSTS"},
        scoring_timeout=120,
    )
    with stack:
        assert time.monotonic() - started >= 2.0  # not "ready" before init() finished
        assert stack.scoring_proc is not None
        pgid = stack.scoring_proc.pid
        assert len(group_members(pgid)) == 3  # gunicorn master + 2 workers, one process group

        health = ls.http_request(stack.scoring_base_url + "/")
        assert health is not None and health.status == 200 and b"Healthy" in health.body
        empty = ls.http_request(stack.scoring_url, "POST", b"{}")
        assert empty is not None and empty.status == 400 and "json" in empty.content_type
        assert empty.json() == {"error": "bad_request", "message": "empty request"}
        ok = ls.http_request(stack.scoring_url, "POST", b'{"x": 1}')
        assert ok is not None and ok.status == 200
        assert ok.json()["allowed_blob_hosts"] == "127.0.0.1:12345"  # defaulted from the Azurite port
    assert_group_gone(pgid)
    assert "Booting worker" in stack.scoring_log_path.read_text()


@pytest.mark.integration
def test_scoring_service_keeps_a_configured_allowed_host_list(tmp_path: Path) -> None:
    script = write_fake_score(tmp_path / "svc", init_seconds=0)
    env = dict(os.environ, ALLOWED_BLOB_HOSTS="myaccount.blob.core.windows.net")
    port = ls.free_port()
    proc = ls.spawn(ls.scoring_service(port, 1, entry_script=script, model_dir=script.parent,
                                       log_path=tmp_path / "scoring.log", azurite_port=12345, env=env))
    try:
        ls.wait_ready(proc, 120)
        answer = ls.http_request(f"http://127.0.0.1:{port}/score", "POST", b'{"x": 1}')
        assert answer is not None and answer.json()["allowed_blob_hosts"] == "myaccount.blob.core.windows.net"
    finally:
        ls.stop(proc)
    assert_group_gone(proc.pid)


@pytest.mark.integration
def test_scoring_service_failing_init_raises_with_the_log_tail(tmp_path: Path) -> None:
    script = write_fake_score(tmp_path / "svc", init_seconds=-1)
    stack = ls.LocalStack(
        azurite=False, scoring=True, scoring_port=ls.free_port(), stack_dir=tmp_path / "run",
        entry_script=script, model_dir=script.parent, scoring_timeout=120,
    )
    with pytest.raises(ls.StackError) as excinfo:
        stack.start()
    assert "exited with code" in str(excinfo.value)
    assert "fake init failed on purpose" in str(excinfo.value)
    assert stack.scoring_proc is None  # start() stopped what it had started


def test_scoring_port_in_use_fails_fast_naming_the_setting(tmp_path: Path) -> None:
    script = write_fake_score(tmp_path / "svc", init_seconds=0)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ls.PortInUseError) as excinfo:
            ls.spawn(ls.scoring_service(port, 1, entry_script=script, model_dir=script.parent,
                                        log_path=tmp_path / "scoring.log"))
    assert str(port) in str(excinfo.value) and "SCORING_PORT" in str(excinfo.value)


def test_settings_from_env(tmp_path: Path) -> None:
    settings = ls.Settings.from_env({})
    assert (settings.azurite_port, settings.scoring_port, settings.streamlit_port, settings.scoring_workers) == (
        10000, 5001, 8501, 2)
    assert settings.stack_dir == ls.ROOT / ".run"
    custom = ls.Settings.from_env({"AZURITE_PORT": "11000", "SCORING_PORT": "6001", "STREAMLIT_PORT": "9000",
                                   "SCORING_WORKERS": "3", "STACK_DIR": str(tmp_path)})
    assert (custom.azurite_port, custom.scoring_port, custom.streamlit_port, custom.scoring_workers) == (
        11000, 6001, 9000, 3)
    assert custom.stack_dir == tmp_path
    with pytest.raises(ls.StackError, match="AZURITE_PORT"):
        ls.Settings.from_env({"AZURITE_PORT": "ten"})


# ---------------------------------------------------------------------------------------------- spawn and wait

# Starts a child in its own process group and a grandchild in a new session that ignores SIGTERM,
# writes their pids to PIDS, then answers HTTP on PORT (501 for a GET) until it is stopped.
FAMILY = textwrap.dedent(
    """
    import http.server, json, pathlib, subprocess, sys
    sleeper = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    away = subprocess.Popen([sys.executable, "-c", sleeper], start_new_session=True)
    pathlib.Path(sys.argv[2]).write_text(json.dumps([child.pid, away.pid]))
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.BaseHTTPRequestHandler).serve_forever()
    """
)


def toy_service(tmp_path: Path, code: str, *args: str, timeout: float = 60.0) -> ls.Service:
    """A Python one-off as a service on a free port, ready when that port answers HTTP."""
    port = ls.free_port()
    return ls.Service(
        name="the toy service",
        command=[sys.executable, "-c", code, str(port), *args],
        log_path=tmp_path / "toy.log",
        port=port,
        port_env="TOY_PORT",
        probes=(ls.HttpProbe(f"http://127.0.0.1:{port}/"),),
        timeout=timeout,
    )


def test_spawn_and_wait_reports_an_early_exit_with_the_log_tail(tmp_path: Path) -> None:
    service = toy_service(tmp_path, "import sys; print('toy: cannot open the model'); sys.exit(3)")
    with pytest.raises(ls.StackError) as excinfo:
        ls.spawn_and_wait(service)
    message = str(excinfo.value)
    assert "the toy service exited with code 3 before it was ready" in message
    assert "toy: cannot open the model" in message and str(service.log_path) in message
    assert not ls.port_in_use(service.port or 0)


def test_spawn_and_wait_times_out_and_stops_what_it_started(tmp_path: Path) -> None:
    code = "import time; print('toy: still loading', flush=True); time.sleep(300)"
    service = toy_service(tmp_path, code, timeout=1.0)
    started: list[ls.ServiceProcess] = []
    with pytest.raises(ls.StackError) as excinfo:
        ls.spawn_and_wait(service, on_spawn=started.append)
    message = str(excinfo.value)
    assert f"the toy service was not ready at http://127.0.0.1:{service.port}/ after 1 s" in message
    assert "(last: no answer)" in message and "toy: still loading" in message
    [proc] = started
    assert proc.returncode is not None
    assert_group_gone(proc.pid)


def test_spawn_refuses_a_busy_port_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        service = dataclasses.replace(toy_service(tmp_path, "pass"), port=busy.getsockname()[1])
        with pytest.raises(ls.PortInUseError, match="set TOY_PORT to a free port"):
            ls.spawn_and_wait(service)
    assert not service.log_path.exists()  # nothing was started


def test_stop_ends_the_group_and_descendants_that_left_it(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    proc = ls.spawn_and_wait(toy_service(tmp_path, FAMILY, str(pids_file)))
    try:
        child_pid, away_pid = json.loads(pids_file.read_text())
        family = [psutil.Process(pid) for pid in (proc.pid, child_pid, away_pid)]
        assert os.getpgid(child_pid) == proc.pid and os.getpgid(away_pid) != proc.pid
        assert sorted(p.pid for p in ls.group_members(proc.pid)) == sorted([proc.pid, child_pid])
    finally:
        assert ls.stop(proc, grace=1.0) is not None  # the grandchild ignores SIGTERM: SIGKILL after 1 s
    assert_group_gone(proc.pid)
    survivors = [p for p in family if p.is_running()]
    for survivor in survivors:  # leave nothing behind when the assertion fails
        survivor.kill()
    assert not survivors


@pytest.mark.integration
def test_cli_run_says_ready_once_the_app_answers(tmp_path: Path) -> None:
    app_port = ls.free_port()
    code = f"import http.server as h; h.HTTPServer(('127.0.0.1', {app_port}), h.BaseHTTPRequestHandler).serve_forever()"
    args = ("run", "--only", "azurite", "--app-port", str(app_port), "--", sys.executable, "-c", code)
    with cli_in_background(*args, stack_dir=tmp_path, AZURITE_PORT=str(ls.free_port())) as proc:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "Ready:" in line:
                break
        assert f"Ready: open http://127.0.0.1:{app_port} in a browser" in "".join(seen), "".join(seen)
        assert ls.http_request(f"http://127.0.0.1:{app_port}/") is not None  # it said so because it answers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
    assert not ls.port_in_use(app_port)


def test_cli_run_refuses_a_busy_app_port_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("run", "--app-port", str(port), "--", sys.executable, "-c", "pass", stack_dir=tmp_path,
                     AZURITE_PORT=str(ls.free_port()), SCORING_PORT=str(ls.free_port()))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "STREAMLIT_PORT" in result.stderr
    assert not ls.pid_file(tmp_path, "azurite").exists() and not (tmp_path / "azurite.log").exists()


# ---------------------------------------------------------------------------------------------- the twin (nginx)

TWIN_KEY = "Twin-Key_0123456789abcdefghijklmnop"


def test_settings_read_replicas_and_the_key_and_hide_it() -> None:
    settings = ls.Settings.from_env({"SCORING_REPLICAS": "2", "SCORING_KEY": TWIN_KEY})
    assert (settings.scoring_replicas, settings.scoring_key) == (2, TWIN_KEY)
    assert TWIN_KEY not in repr(settings)
    assert ls.Settings.from_env({}).scoring_replicas == 0 and ls.Settings.from_env({}).scoring_key == ""
    for bad in ("two", "-1", "99"):
        with pytest.raises(ls.StackError, match="SCORING_REPLICAS"):
            ls.Settings.from_env({"SCORING_REPLICAS": bad})


def test_replicas_zero_is_todays_single_service_and_n_puts_nginx_in_front(tmp_path: Path) -> None:
    ports = {"azurite_port": ls.free_port(), "scoring_port": ls.free_port()}
    env = {k: v for k, v in os.environ.items() if k not in ("SCORING_REPLICAS", "SCORING_KEY")}
    plain = ls.LocalStack(stack_dir=tmp_path / "plain", env=env, scoring_key=TWIN_KEY, **ports)
    assert list(plain.services()) == ["azurite", "scoring"] and plain.services()["scoring"].port == plain.scoring_port
    assert "SCORING_KEY" not in plain.app_env() and not plain.keyed  # no nginx, nothing checks a key
    assert not (tmp_path / "plain" / "nginx").exists()

    twin = ls.LocalStack(stack_dir=tmp_path / "twin", env=env, replicas=3, scoring_key=TWIN_KEY, **ports)
    services = twin.services()
    assert list(services) == ["azurite", "replica-1", "replica-2", "replica-3", "nginx"]
    assert services["nginx"].port == twin.scoring_port and services["nginx"].port_env == "SCORING_PORT"
    replica_ports = [services[f"replica-{i}"].port for i in (1, 2, 3)]
    assert len(set(replica_ports)) == 3 and not set(replica_ports) & set(ports.values())
    assert twin.services()["replica-1"].port == replica_ports[0]  # chosen once
    for i in (1, 2, 3):
        replica = services[f"replica-{i}"]
        assert replica.log_path == tmp_path / "twin" / f"replica-{i}.log"
        assert replica.env is not None and "SCORING_KEY" not in replica.env  # only nginx checks the key
    assert twin.app_env() == {**ls.app_env(twin.azurite_port, twin.scoring_port), "SCORING_KEY": TWIN_KEY}
    assert twin.scoring_url == f"http://127.0.0.1:{twin.scoring_port}/score"
    assert TWIN_KEY not in repr(twin) and TWIN_KEY not in repr(services)
    command = list(services["nginx"].command)
    prefix = tmp_path / "twin" / "nginx"
    assert command == ["/usr/sbin/nginx", "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", "stderr",
                       "-g", "daemon off;"]  # fmt: skip
    with pytest.raises(ls.StackError, match="SCORING_KEY") as info:
        ls.LocalStack(stack_dir=tmp_path, replicas=1, scoring_key="short key; with spaces")
    assert "short key" not in str(info.value)


def test_the_generated_nginx_config(tmp_path: Path) -> None:
    from scripts.local_stack import twin

    prefix = twin.write_nginx_config(tmp_path, 5001, [7001, 7002], TWIN_KEY)
    conf = (prefix / "nginx.conf").read_text()
    auth = (prefix / "auth.conf").read_text()
    assert prefix == tmp_path / "nginx"
    assert (prefix / "nginx.conf").stat().st_mode & 0o777 == 0o600 and (prefix / "auth.conf").stat().st_mode & 0o777 == 0o600
    assert TWIN_KEY in auth and TWIN_KEY not in conf
    assert f'if ($http_authorization != "Bearer {TWIN_KEY}") {{ return 403; }}' in auth
    assert 'if ($http_authorization = "") { return 401; }' in auth
    assert "listen 127.0.0.1:5001;" in conf and conf.count("listen ") == 1
    assert "least_conn;" in conf
    assert "server 127.0.0.1:7001 max_fails=1 fail_timeout=2s;" in conf and "server 127.0.0.1:7002" in conf
    for line in (
        f"client_max_body_size {4 * 2**20};", f"client_body_buffer_size {4 * 2**20};",  # whole bodies, in memory
        "client_header_timeout 10000ms;", "client_body_timeout 10000ms;", "proxy_request_buffering on;",
        "proxy_connect_timeout 2000ms;", "proxy_read_timeout 60000ms;", "proxy_next_upstream error non_idempotent;",
        "proxy_next_upstream_tries 2;", "proxy_max_temp_file_size 0;", 'proxy_set_header Authorization "";',
        "add_header X-Replica $upstream_addr always;", f'include "{prefix / "auth.conf"}";', f'pid "{prefix / "nginx.pid"}";',
        f'access_log "{prefix / "access.log"}" twin;', f'client_body_temp_path "{prefix / "client_body_temp"}";',
    ):  # fmt: skip
        assert line in conf, line
    log_format = conf[conf.index("log_format") : conf.index("access_log")]
    assert "$http_" not in log_format and "authorization" not in log_format.lower()
    # Every error nginx can answer itself has a JSON page in the contract's shape.
    for status, (code, _message) in twin.ERRORS.items():
        assert f"error_page {status} /_twin_error/{status};" in conf
        body = json.loads(twin.error_body(status, twin.TwinLimits()))
        assert set(body) == {"error", "message"} and body["error"] == code and body["message"]
    assert {400, 401, 403, 404, 405, 408, 413, 502, 503, 504} <= set(twin.ERRORS)
    assert "4 MB" in twin.error_body(413, twin.TwinLimits())

    # No key: no check; a bigger MAX_REQUEST_MB is followed; the config is valid for the real nginx,
    # also in a STACK_DIR with a space; one that could break out of nginx's quotes is refused.
    open_prefix = twin.write_nginx_config(tmp_path / "open stack", 5002, [7003], None, twin.TwinLimits.from_env(
        {"MAX_REQUEST_MB": "8"}))  # fmt: skip
    with pytest.raises(ls.StackError, match="STACK_DIR"):
        twin.write_nginx_config(tmp_path / 'a"b', 5003, [7004], None)
    assert "return 40" not in (open_prefix / "auth.conf").read_text()
    assert "include" not in (open_prefix / "nginx.conf").read_text().split("location / {")[1].split("proxy_pass")[0]
    assert f"client_max_body_size {8 * 2**20};" in (open_prefix / "nginx.conf").read_text()
    if not twin.NGINX_BIN.exists():
        pytest.skip("nginx is not installed (scripts/setup.sh installs it)")
    for checked in (prefix, open_prefix):
        result = subprocess.run([str(twin.NGINX_BIN), "-t", "-p", f"{checked}/", "-c", str(checked / "nginx.conf"),
                                 "-e", "stderr"], capture_output=True, text=True, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert TWIN_KEY not in result.stderr


@pytest.mark.parametrize("key", ["short", "has space in it 0123456789", 'quote"0123456789abcdef', "dollar$0123456789abcdef",
                                 "semi;colon0123456789abcd", "x" * 257])  # fmt: skip
def test_keys_nginx_cannot_check_safely_are_refused_without_quoting_them(key: str) -> None:
    from scripts.local_stack import twin

    with pytest.raises(ls.StackError, match="SCORING_KEY") as info:
        twin.check_scoring_key(key)
    assert key not in str(info.value)


def test_cli_replicas_option_is_checked() -> None:
    for bad in ("two", "-1", "17"):
        result = cli("up", "--replicas", bad, stack_dir=Path("/nonexistent"))
        assert result.returncode == 2 and "--replicas" in result.stderr, result.stderr
    assert "--replicas N" in cli("up", "--help", stack_dir=Path("/nonexistent")).stdout
    assert "--replicas N" in cli("run", "--help", stack_dir=Path("/nonexistent")).stdout


@pytest.mark.integration
def test_cli_up_status_down_with_two_replicas_behind_nginx(tmp_path: Path) -> None:
    ports = {"AZURITE_PORT": str(ls.free_port()), "SCORING_PORT": str(ls.free_port()), "SCORING_WORKERS": "1"}
    up = cli("up", "--replicas", "2", "--in-memory", stack_dir=tmp_path, SCORING_KEY=TWIN_KEY, **ports)
    records = {name: ls.read_pid_file(tmp_path, name) for name in ("azurite", "replica-1", "replica-2", "nginx")}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"Scoring (twin)    http://127.0.0.1:{ports['SCORING_PORT']}/score" in up.stdout
        assert "nginx in front of 2 replicas" in up.stdout and TWIN_KEY not in up.stdout + up.stderr
        assert all(record is not None and record.alive() for record in records.values()), records
        assert not ls.pid_file(tmp_path, "scoring").exists()
        base = f"http://127.0.0.1:{ports['SCORING_PORT']}"
        assert ls.http_request(base + "/", headers={"Authorization": f"Bearer {TWIN_KEY}"}).status == 200  # type: ignore[union-attr]
        refused = ls.http_request(base + "/")
        assert refused is not None and refused.status == 401 and "json" in refused.content_type

        status = cli("status", stack_dir=tmp_path)  # from another shell, without the key
        assert status.returncode == 0, status.stdout
        lines = status.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == ["azurite", "replica-1", "replica-2", "nginx"]
        assert all("running, healthy" in line for line in lines), status.stdout

        again = cli("up", "--replicas", "2", stack_dir=tmp_path, **ports)
        assert again.returncode == 0 and "scoring: already running (nginx" in again.stdout
        assert cli("run", "--", "true", stack_dir=tmp_path, **ports).returncode == 1  # refuses: 'up' runs
    finally:
        down = cli("down", stack_dir=tmp_path)
    assert down.returncode == 0, down.stderr
    assert [line.split(":")[0] for line in down.stdout.splitlines()] == ["nginx", "replica-1", "replica-2", "azurite"]
    for record in records.values():
        assert record is not None
        assert_group_gone(record.pid)
    assert not list(tmp_path.glob("*.pid"))
    assert not ls.port_in_use(int(ports["SCORING_PORT"]))
    assert cli("status", stack_dir=tmp_path).returncode == 3


@pytest.mark.integration
def test_cli_run_with_replicas_gives_the_command_the_key_and_the_twins_url(tmp_path: Path) -> None:
    code = (
        "import os, urllib.request\n"
        f"assert os.environ['SCORING_KEY'] == {TWIN_KEY!r}\n"
        "base = os.environ['SCORING_URL'].removesuffix('/score')\n"
        "req = urllib.request.Request(base + '/', headers={'Authorization': 'Bearer ' + os.environ['SCORING_KEY']})\n"
        "with urllib.request.urlopen(req, timeout=10) as answer:\n"
        "    assert answer.status == 200 and answer.headers['X-Replica'].startswith('127.0.0.1:')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("BLOB_CONNECTION_STRING", "SCORING_URL", "SCORING_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "scripts.local_stack", "run", "--replicas", "1", "--in-memory", "--", sys.executable,
         "-c", code],
        check=False, cwd=ls.ROOT, capture_output=True, text=True, timeout=300,
        env=dict(env, STACK_DIR=str(tmp_path), AZURITE_PORT=str(ls.free_port()), SCORING_PORT=str(ls.free_port()),
                 SCORING_KEY=TWIN_KEY, SCORING_WORKERS="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(tmp_path.glob("*.pid"))


@pytest.mark.integration
def test_run_survives_a_dead_replica_and_stops_when_none_is_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.local_stack import cli as local_cli

    script = write_fake_score(tmp_path / "svc", init_seconds=0)
    stack = ls.LocalStack(azurite=False, azurite_port=12345, scoring_port=ls.free_port(), workers=1, replicas=2,
                          stack_dir=tmp_path / "run", entry_script=script, model_dir=script.parent)  # fmt: skip
    with stack:
        fg = local_cli._Foreground()
        fg.starting = False
        fg.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        result: list[int] = []
        supervisor = threading.Thread(target=lambda: result.append(local_cli._supervise(stack, fg, None)), daemon=True)
        try:
            first, second = stack.replica_procs
            supervisor.start()
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
            answer = ls.http_request(stack.scoring_url, "POST", b'{"x": 1}')  # the other replica serves
            assert answer is not None and answer.status == 200
            supervisor.join(1.0)  # it polls every 0.2 s: it has seen the death by now, and goes on
            assert supervisor.is_alive() and not result
            os.killpg(second.pid, signal.SIGKILL)
            supervisor.join(30)
            assert result == [1]  # none left: run stops
        finally:
            fg.child.kill()
            fg.child.wait()
            supervisor.join(30)
    err = capsys.readouterr().err
    assert "replica-1 exited unexpectedly (code -9); the other replicas go on serving" in err
    assert "replica-2 exited unexpectedly (code -9); last lines" in err
