"""``python -m scripts.deploy {deploy,status,smoke,teardown} [--dry-run] ...``: see scripts/deploy/__init__.py."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from scripts.deploy import plan
from scripts.deploy.plan import PlanError, Step, Target


def build_parser() -> argparse.ArgumentParser:
    """The options every subcommand takes; environment variables give the defaults."""
    parser = argparse.ArgumentParser(prog="python -m scripts.deploy", description=__doc__)
    parser.add_argument("command", choices=("deploy", "status", "smoke", "teardown"))
    parser.add_argument("--dry-run", action="store_true", help="print every call it would make, and do nothing")
    parser.add_argument("--target", choices=("endpoint", "aci"), default="endpoint")
    env = os.environ.get
    parser.add_argument("--subscription", default=env("AZURE_SUBSCRIPTION_ID", ""))
    parser.add_argument("--resource-group", default=env("AZURE_RESOURCE_GROUP", ""))
    parser.add_argument("--workspace", default=env("AZUREML_WORKSPACE", ""), help="the Azure ML workspace")
    parser.add_argument("--storage-account", default=env("STORAGE_ACCOUNT", ""), help="for the public keys")
    parser.add_argument("--registry", default=env("ACR_NAME", ""), help="the container registry (--target aci)")
    parser.add_argument("--name", default="encrypted-mnist", help="the endpoint or container group")
    parser.add_argument("--location", default="westeurope")
    parser.add_argument("--image-tag", default="1")
    parser.add_argument("--with-app", action="store_true",
                        help="also the Streamlit app, on Azure Container Apps with session affinity (needs --registry)")
    return parser


def steps_for(command: str, target: Target) -> list[Step]:
    """The Azure CLI calls of ``command``; smoke's lookups come before its prediction."""
    builders = {"deploy": plan.deploy, "status": plan.status, "smoke": plan.smoke_lookups, "teardown": plan.teardown}
    return builders[command](target)


def _print_step(number: int, step: Step) -> None:
    print(f"[{number}] {step.why}")
    print(f"    {step.line()}" + (f"    -> {{{step.capture}}}" if step.capture else ""))


def dry_run(command: str, target: Target) -> None:
    """Print every call, with placeholders for what earlier calls would return."""
    steps = steps_for(command, target)
    for number, step in enumerate(steps, 1):
        _print_step(number, step)
    if command == "smoke":
        print(f"[{len(steps) + 1}] One real encrypted prediction through the app's client")
        print(f"    {_smoke_env_line(target)} {' '.join(plan.SMOKE_COMMAND)}")
    print("(dry run: nothing was called)")


def _smoke_env_line(target: Target) -> str:
    url = "{scoring_url}" if target.kind == "endpoint" else f"http://{{fqdn}}:{plan.SERVICE_PORT}/score"
    key = " SCORING_KEY={scoring_key}" if target.kind == "endpoint" else ""
    return f"BLOB_CONNECTION_STRING={{connection_string}} SCORING_URL={url}{key}"


def execute(command: str, target: Target) -> int:
    """Run the calls in order; stop at the first that fails. Captured values are never printed."""
    if shutil.which("az") is None:
        print("deploy: the Azure CLI (az) is not installed: https://aka.ms/installazurecli, then "
              "`az extension add -n ml` and `az login`.", file=sys.stderr)
        return 2
    values: dict[str, str] = {}
    for number, step in enumerate(steps_for(command, target), 1):
        _print_step(number, step)
        argv = [arg.format(**values) if "{" in arg else arg for arg in step.argv]
        result = subprocess.run(argv, capture_output=bool(step.capture), text=True, check=False)
        if result.returncode != 0:
            print(f"deploy: step {number} failed (exit {result.returncode}); nothing after it ran.", file=sys.stderr)
            return result.returncode
        if step.capture:
            values[step.capture] = result.stdout.strip()
    if command == "smoke":
        env = dict(os.environ, BLOB_CONNECTION_STRING=values["connection_string"])
        if target.kind == "endpoint":
            env.update(SCORING_URL=values["scoring_url"], SCORING_KEY=values["scoring_key"])
        else:
            env["SCORING_URL"] = f"http://{values['fqdn']}:{plan.SERVICE_PORT}/score"
        argv = [sys.executable, *plan.SMOKE_COMMAND[1:]]
        return subprocess.run(argv, cwd=plan.ROOT, env=env, check=False).returncode
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, plan, then print (--dry-run) or run."""
    args = build_parser().parse_args(argv)
    try:
        target = Target(kind=args.target, subscription=args.subscription, resource_group=args.resource_group,
                        storage_account=args.storage_account, name=args.name, workspace=args.workspace,
                        registry=args.registry, location=args.location, image_tag=args.image_tag,
                        with_app=args.with_app)
    except PlanError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        dry_run(args.command, target)
        return 0
    return execute(args.command, target)


if __name__ == "__main__":
    raise SystemExit(main())
