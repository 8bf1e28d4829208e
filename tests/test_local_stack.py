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
