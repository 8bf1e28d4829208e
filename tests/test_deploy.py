"""The deploy command: every subcommand's dry run (exactly the calls it would make), and the runner
against a stand-in ``az`` on PATH (the real Azure CLI needs a subscription; this checks the order,
the substitution of looked-up values, and that secrets are never printed)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from scripts.deploy.__main__ import main
from scripts.deploy.plan import PlanError, Target

SUB = "00000000-1111-2222-3333-444444444444"
ENDPOINT_ARGS = ["--subscription", SUB, "--resource-group", "rg-demo", "--workspace", "ws-demo",
                 "--storage-account", "demokeys"]
ACI_ARGS = ["--target", "aci", "--subscription", SUB, "--resource-group", "rg-demo", "--storage-account",
            "demokeys", "--registry", "demoacr"]


def dry(capsys: pytest.CaptureFixture[str], command: str, args: list[str]) -> list[str]:
    assert main([command, "--dry-run", *args]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("(dry run: nothing was called)")
    return [line.strip() for line in out.splitlines() if line.startswith("    ")]


@pytest.fixture(autouse=True)
def no_real_calls(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    if "fake_az" in request.fixturenames:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dry run called a program")

    monkeypatch.setattr(subprocess, "run", refuse)


def test_deploy_endpoint_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    scope = f"--subscription {SUB} --resource-group rg-demo --workspace-name ws-demo"
    assert dry(capsys, "deploy", ENDPOINT_ARGS) == [
        f"az storage container create --name public-keys --account-name demokeys --subscription {SUB} --auth-mode login",
        f"az ml environment create --file deploy/azureml/environment.yml {scope}",
        f"az ml online-endpoint create --file deploy/azureml/endpoint.yml --name encrypted-mnist {scope}",
        ("az ml online-deployment create --file deploy/azureml/blue-deployment.yml --endpoint-name encrypted-mnist "
        f"--all-traffic --set environment_variables.ALLOWED_STORAGE_ACCOUNT=demokeys {scope}"),
    ]


def test_deploy_aci_dry_run_never_shows_the_registry_password(capsys: pytest.CaptureFixture[str]) -> None:
    lines = dry(capsys, "deploy", ACI_ARGS)
    assert lines[1] == (f"az acr build --registry demoacr --image encrypted-mnist-scoring:1 --file service/Dockerfile "
                        f"--subscription {SUB} service")
    assert lines[3].endswith("-> {registry_password}")
    create = lines[4]
    assert create.startswith("az container create --subscription")
    for part in ("--image demoacr.azurecr.io/encrypted-mnist-scoring:1", "--ports 5001",
                 "--environment-variables ALLOWED_STORAGE_ACCOUNT=demokeys", "--registry-password {registry_password}"):
        assert part in create


def test_status_dry_runs(capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = dry(capsys, "status", ENDPOINT_ARGS)
    assert endpoint[0].startswith("az ml online-endpoint show --name encrypted-mnist")
    assert endpoint[1].startswith("az ml online-deployment get-logs --name blue --endpoint-name encrypted-mnist")
    aci = dry(capsys, "status", ACI_ARGS)
    assert [line.split(" --")[0] for line in aci] == ["az container show", "az container logs"]


def test_smoke_dry_runs_use_the_apps_client_and_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = dry(capsys, "smoke", ENDPOINT_ARGS)
    assert "get-credentials" in endpoint[2] and endpoint[2].endswith("-> {scoring_key}")
    assert endpoint[3] == ("BLOB_CONNECTION_STRING={connection_string} SCORING_URL={scoring_url} "
                           "SCORING_KEY={scoring_key} python -m lib.cli predict --gallery-index 0 --scheme bfv")
    aci = dry(capsys, "smoke", ACI_ARGS)
    assert aci[-1].startswith("BLOB_CONNECTION_STRING={connection_string} SCORING_URL=http://{fqdn}:5001/score python")


def test_teardown_dry_runs_remove_what_runs_and_the_key_blobs(capsys: pytest.CaptureFixture[str]) -> None:
    blobs = (f"az storage blob delete-batch --source public-keys --pattern '*' --account-name demokeys "
             f"--subscription {SUB} --auth-mode login")
    assert dry(capsys, "teardown", ENDPOINT_ARGS) == [
        (f"az ml online-endpoint delete --name encrypted-mnist --subscription {SUB} --resource-group rg-demo "
        "--workspace-name ws-demo --yes"),
        blobs,
    ]
    assert dry(capsys, "teardown", ACI_ARGS) == [
        f"az container delete --subscription {SUB} --resource-group rg-demo --name encrypted-mnist --yes", blobs,
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"subscription": ""}, "--subscription is required"),
        ({"storage_account": "Bad_Name"}, "--storage-account"),
        ({"workspace": ""}, "--workspace"),
        ({"kind": "aci", "registry": ""}, "--registry"),
        ({"name": "x"}, "--name"),
    ],
)
def test_missing_or_bad_options_are_named(change: dict[str, str], message: str) -> None:
    fields = {"kind": "endpoint", "subscription": SUB, "resource_group": "rg", "storage_account": "demokeys",
              "workspace": "ws", "registry": "demoacr", **change}
    with pytest.raises(PlanError, match=message):
        Target(**fields)


def test_the_cli_says_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "--dry-run", "--resource-group", "rg", "--storage-account", "demokeys",
                 "--subscription", ""]) == 2
    assert "--subscription is required" in capsys.readouterr().err


@pytest.fixture
def fake_az(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``az`` on PATH that records its arguments and answers look-ups with stand-in values."""
    log = tmp_path / "calls.txt"
    script = tmp_path / "az"
    script.write_text(f"""#!/bin/sh
printf '%s\\n' "$*" >> {log}
case "$*" in
  *passwords*) echo REGISTRY-PASSWORD-xyz ;;
  *username*) echo registry-user ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return log


def test_running_passes_looked_up_values_on_and_never_prints_them(
    fake_az: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", *ACI_ARGS]) == 0
    calls = fake_az.read_text().splitlines()
    assert [call.split(" --")[0] for call in calls] == [
        "storage container create", "acr build", "acr credential show", "acr credential show", "container create",
    ]
    assert "--registry-username registry-user --registry-password REGISTRY-PASSWORD-xyz" in calls[-1]
    out = capsys.readouterr().out
    assert "REGISTRY-PASSWORD-xyz" not in out and "{registry_password}" in out


def test_running_stops_at_the_first_failure(fake_az: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failing = tmp_path / "az"
    failing.write_text(failing.read_text() + 'case "$*" in *"online-endpoint delete"*) exit 3 ;; esac\n')
    assert main(["teardown", *ENDPOINT_ARGS]) == 3
    assert len(fake_az.read_text().splitlines()) == 1  # the key blobs were not touched after the failure
    assert "step 1 failed (exit 3)" in capsys.readouterr().err


def test_running_without_the_azure_cli_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["status", *ENDPOINT_ARGS]) == 2
    assert "Azure CLI (az) is not installed" in capsys.readouterr().err


def test_with_app_the_app_goes_to_container_apps_with_sticky_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    lines = dry(capsys, "deploy", [*ENDPOINT_ARGS, "--with-app", "--registry", "demoacr"])
    app_build = f"az acr build --registry demoacr --image encrypted-mnist-app:1 --file app.Dockerfile --subscription {SUB} ."
    assert app_build in lines
    create = next(line for line in lines if line.startswith("az containerapp create"))
    for part in ("--environment encrypted-mnist-env", "--image demoacr.azurecr.io/encrypted-mnist-app:1",
                 "--target-port 8501", "--secrets blob-connection={connection_string} scoring-key={scoring_key}",
                 ("--env-vars BLOB_CONNECTION_STRING=secretref:blob-connection SCORING_URL={scoring_url} "
                 "SCORING_KEY=secretref:scoring-key"), "--registry-password {registry_password}"):
        assert part in create
    assert lines[-1] == (f"az containerapp ingress sticky-sessions set --subscription {SUB} --resource-group rg-demo "
                         "--name encrypted-mnist-app --affinity sticky")
    # Every value the app needs is looked up before the app is created.
    captured = [line.rsplit("-> ", 1)[1] for line in lines[: lines.index(create)] if "-> {" in line]
    assert {"{registry_user}", "{registry_password}", "{connection_string}", "{scoring_url}", "{scoring_key}"} <= set(
        captured
    )


def test_with_app_status_and_teardown_cover_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    args = [*ACI_ARGS, "--with-app"]
    assert any("az containerapp show" in line and "stickySessions" in line for line in dry(capsys, "status", args))
    teardown = [line.split(" --")[0] for line in dry(capsys, "teardown", args)]
    assert teardown == ["az container delete", "az containerapp delete", "az containerapp env delete",
                        "az storage blob delete-batch"]


def test_with_app_needs_a_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "--dry-run", *ENDPOINT_ARGS, "--with-app"]) == 2
    assert "--with-app" in capsys.readouterr().err
