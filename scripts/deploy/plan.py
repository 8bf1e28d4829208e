"""What each deploy subcommand does, as Azure CLI calls: pure data, printed by --dry-run.

A ``Step`` is one ``az`` call with a line saying why. ``capture`` names a value the step's output
provides to later steps (written ``{name}`` in their arguments), such as the endpoint's scoring URI
and key for ``smoke``; a dry run shows the placeholder, never a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AZUREML = "deploy/azureml"
KEY_CONTAINER = "public-keys"
IMAGE = "encrypted-mnist-scoring"
APP_IMAGE = "encrypted-mnist-app"
APP_PORT = 8501
SERVICE_PORT = 5001
SMOKE_COMMAND = ("python", "-m", "lib.cli", "predict", "--gallery-index", "0", "--scheme", "bfv")
"""The app's own client, classifying one held-out real digit end to end (it ships with the app)."""

_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


class PlanError(ValueError):
    """A missing or malformed option; the message names it."""


@dataclass(frozen=True)
class Target:
    """Where the scoring service goes, and the Azure names around it."""

    kind: str  # "endpoint" (Azure ML managed online endpoint) or "aci"
    subscription: str
    resource_group: str
    storage_account: str
    name: str = "encrypted-mnist"  # the endpoint, or the container group
    workspace: str = ""  # endpoint target
    registry: str = ""  # aci target
    location: str = "westeurope"
    image_tag: str = "1"
    with_app: bool = False  # also the Streamlit app, on Azure Container Apps with sticky sessions

    def __post_init__(self) -> None:
        if self.kind not in ("endpoint", "aci"):
            raise PlanError(f"--target must be endpoint or aci, got {self.kind!r}")
        for option, value in (("--subscription", self.subscription), ("--resource-group", self.resource_group)):
            if not value:
                raise PlanError(f"{option} is required")
        if not _ACCOUNT.match(self.storage_account):
            raise PlanError("--storage-account must be 3-24 lowercase letters and digits")
        if not _NAME.match(self.name):
            raise PlanError("--name must be 3-32 lowercase letters, digits and hyphens, starting with a letter")
        if self.kind == "endpoint" and not self.workspace:
            raise PlanError("--workspace (the Azure ML workspace) is required for --target endpoint")
        if (self.kind == "aci" or self.with_app) and not _ACCOUNT.match(self.registry):
            raise PlanError("--registry (the Azure Container Registry's name) is required for --target aci "
                            "and for --with-app")

    def scope(self) -> list[str]:
        """The arguments every ``az ml`` call repeats."""
        return ["--subscription", self.subscription, "--resource-group", self.resource_group,
                "--workspace-name", self.workspace]

    def group(self) -> list[str]:
        return ["--subscription", self.subscription, "--resource-group", self.resource_group]


@dataclass(frozen=True)
class Step:
    """One Azure CLI call."""

    why: str
    argv: tuple[str, ...]
    capture: str = ""

    def line(self) -> str:
        """The call as a shell line (placeholders such as ``{key}`` stay as they are)."""
        return " ".join(_quote(arg) for arg in self.argv)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./{}-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def _storage(target: Target, why: str, *az_args: str) -> Step:
    """An ``az storage`` call on the key account, with the caller's Azure AD login (no account key)."""
    return Step(why, ("az", "storage", *az_args, "--account-name", target.storage_account,
                      "--subscription", target.subscription, "--auth-mode", "login"))


def _registry_credentials(target: Target) -> list[Step]:
    registry = ("--name", target.registry, "--subscription", target.subscription)
    return [
        Step("The registry's pull user (needs the registry's admin user enabled; kept in memory, never printed)",
             ("az", "acr", "credential", "show", *registry, "--query", "username", "--output", "tsv"),
             capture="registry_user"),
        Step("Its password (kept in memory, never printed)",
             ("az", "acr", "credential", "show", *registry, "--query", "passwords[0].value", "--output", "tsv"),
             capture="registry_password"),
    ]


def _registry_login(target: Target) -> tuple[str, ...]:
    return ("--registry-username", "{registry_user}", "--registry-password", "{registry_password}")


def deploy(target: Target) -> list[Step]:
    """The key container and the service; with ``with_app``, the app too."""
    steps = _deploy_service(target)
    if target.with_app:
        steps += _deploy_app(target)
    return steps


def _deploy_service(target: Target) -> list[Step]:
    """The key container, then the endpoint and its deployment, or the image on ACI."""
    steps = [_storage(target, "The container for the public keys (private; the app writes, the service reads by SAS)",
                      "container", "create", "--name", KEY_CONTAINER)]
    allowed = f"ALLOWED_STORAGE_ACCOUNT={target.storage_account}"
    if target.kind == "endpoint":
        steps += [
            Step("The scoring environment: the service image, built by Azure ML from service/Dockerfile",
                 ("az", "ml", "environment", "create", "--file", f"{AZUREML}/environment.yml", *target.scope())),
            Step("The managed online endpoint (key auth)",
                 ("az", "ml", "online-endpoint", "create", "--file", f"{AZUREML}/endpoint.yml",
                  "--name", target.name, *target.scope())),
            Step("The blue deployment, with the one storage account it may fetch keys from, and all traffic",
                 ("az", "ml", "online-deployment", "create", "--file", f"{AZUREML}/blue-deployment.yml",
                  "--endpoint-name", target.name, "--all-traffic",
                  "--set", f"environment_variables.{allowed}", *target.scope())),
        ]
        return steps
    server = f"{target.registry}.azurecr.io"
    steps += [
        Step("Build the service image in Azure from service/ (no local Docker needed)",
             ("az", "acr", "build", "--registry", target.registry, "--image", f"{IMAGE}:{target.image_tag}",
              "--file", "service/Dockerfile", "--subscription", target.subscription, "service")),
        *_registry_credentials(target),
        Step("Run it on Azure Container Instances (public address, plain http on port 5001, as in the seed)",
             ("az", "container", "create", *target.group(), "--name", target.name,
              "--image", f"{server}/{IMAGE}:{target.image_tag}", "--location", target.location,
              "--cpu", "2", "--memory", "4", "--ports", str(SERVICE_PORT), "--ip-address", "Public",
              "--dns-name-label", target.name, "--os-type", "Linux", "--environment-variables", allowed,
              "--registry-login-server", server, *_registry_login(target))),
    ]
    return steps


def _app_names(target: Target) -> tuple[str, str]:
    return f"{target.name}-app", f"{target.name}-env"


def _deploy_app(target: Target) -> list[Step]:
    """The app on Azure Container Apps: its image, where the service and the keys are, sticky sessions."""
    app, environment = _app_names(target)
    server = f"{target.registry}.azurecr.io"
    scoring_url = "{scoring_url}" if target.kind == "endpoint" else f"http://{{fqdn}}:{SERVICE_PORT}/score"
    secrets = ["blob-connection={connection_string}"]
    env_vars = ["BLOB_CONNECTION_STRING=secretref:blob-connection", f"SCORING_URL={scoring_url}"]
    if target.kind == "endpoint":
        secrets.append("scoring-key={scoring_key}")
        env_vars.append("SCORING_KEY=secretref:scoring-key")
    steps = [
        Step("Build the app image in Azure (app.Dockerfile, the repository as context)",
             ("az", "acr", "build", "--registry", target.registry, "--image", f"{APP_IMAGE}:{target.image_tag}",
              "--file", "app.Dockerfile", "--subscription", target.subscription, ".")),
        *([] if target.kind == "aci" else _registry_credentials(target)),
        *smoke_lookups(target),
        Step("The Container Apps environment",
             ("az", "containerapp", "env", "create", *target.group(), "--name", environment,
              "--location", target.location)),
        Step("The app: storage connection string and endpoint key as Container Apps secrets, 1 to 3 replicas",
             ("az", "containerapp", "create", *target.group(), "--name", app, "--environment", environment,
              "--image", f"{server}/{APP_IMAGE}:{target.image_tag}", "--registry-server", server,
              *_registry_login(target), "--target-port", str(APP_PORT), "--ingress", "external",
              "--min-replicas", "1", "--max-replicas", "3", "--secrets", *secrets, "--env-vars", *env_vars)),
        Step("Session affinity: a browser session (and its secret key) lives in one replica, so pin it there",
             ("az", "containerapp", "ingress", "sticky-sessions", "set", *target.group(), "--name", app,
              "--affinity", "sticky")),
    ]
    return steps


def status(target: Target) -> list[Step]:
    """What is deployed, and the last log lines."""
    steps = _status_service(target)
    if target.with_app:
        steps.append(Step("The app: its address, replicas and session affinity",
                          ("az", "containerapp", "show", *target.group(), "--name", _app_names(target)[0],
                           "--query", ("{fqdn:properties.configuration.ingress.fqdn, "
                           "affinity:properties.configuration.ingress.stickySessions.affinity}"))))
    return steps


def _status_service(target: Target) -> list[Step]:
    if target.kind == "endpoint":
        return [
            Step("The endpoint: provisioning state, scoring URI, traffic",
                 ("az", "ml", "online-endpoint", "show", "--name", target.name, *target.scope(),
                  "--query", "{state:provisioning_state, uri:scoring_uri, traffic:traffic}")),
            Step("The blue deployment's last 50 log lines",
                 ("az", "ml", "online-deployment", "get-logs", "--name", "blue", "--endpoint-name", target.name,
                  "--lines", "50", *target.scope())),
        ]
    return [
        Step("The container group: state and address",
             ("az", "container", "show", *target.group(), "--name", target.name,
              "--query", "{state:instanceView.state, fqdn:ipAddress.fqdn}")),
        Step("Its last log lines", ("az", "container", "logs", *target.group(), "--name", target.name)),
    ]


def smoke_lookups(target: Target) -> list[Step]:
    """Where to send the smoke prediction (and, for an endpoint, its key): captured, never printed."""
    steps = [Step("The storage account's connection string, for the app's key upload and SAS",
                  ("az", "storage", "account", "show-connection-string", "--name", target.storage_account,
                   *target.group(), "--query", "connectionString", "--output", "tsv"), capture="connection_string")]
    if target.kind == "endpoint":
        steps += [
            Step("The scoring URI", ("az", "ml", "online-endpoint", "show", "--name", target.name, *target.scope(),
                                     "--query", "scoring_uri", "--output", "tsv"), capture="scoring_url"),
            Step("The endpoint key (kept in memory, passed as SCORING_KEY, never printed)",
                 ("az", "ml", "online-endpoint", "get-credentials", "--name", target.name, *target.scope(),
                  "--query", "primaryKey", "--output", "tsv"), capture="scoring_key"),
        ]
    else:
        steps.append(Step("The container group's address", ("az", "container", "show", *target.group(), "--name",
                          target.name, "--query", "ipAddress.fqdn", "--output", "tsv"), capture="fqdn"))
    return steps




def teardown(target: Target) -> list[Step]:
    """The seed's clean-up: what runs the service (and the app), then every key blob (the container stays)."""
    if target.kind == "endpoint":
        runs = Step("Delete the endpoint and its deployments",
                    ("az", "ml", "online-endpoint", "delete", "--name", target.name, *target.scope(), "--yes"))
    else:
        runs = Step("Delete the container group",
                    ("az", "container", "delete", *target.group(), "--name", target.name, "--yes"))
    steps = [runs]
    if target.with_app:
        app, environment = _app_names(target)
        steps += [
            Step("Delete the app", ("az", "containerapp", "delete", *target.group(), "--name", app, "--yes")),
            Step("Delete its Container Apps environment",
                 ("az", "containerapp", "env", "delete", *target.group(), "--name", environment, "--yes")),
        ]
    return [*steps, _storage(target, "Delete every public-key blob", "blob", "delete-batch",
                             "--source", KEY_CONTAINER, "--pattern", "*")]
