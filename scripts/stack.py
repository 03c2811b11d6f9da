"""Builds and deploys a SAM template into the local stack (LocalStack on 127.0.0.1:4566).

    .venv/bin/python -m scripts.stack deploy --template template.yaml --stack-name NAME \
        --image WorkerFunction=000000000000.dkr.ecr.us-east-1.amazonaws.com/siprems-worker \
        --parameter StageName=local ...
    .venv/bin/python -m scripts.stack outputs --stack-name NAME

``samlocal build`` needs Docker for container-image functions, and nothing can be pushed anyway:
LocalStack's local-process executor runs an image function from its source folders
(``localstack/image-sources.json``). So the image functions are left out of the build
(``--exclude``) and given the ImageUri that ``sam build`` would have written into the built
template, ``<repository>:source``; every other resource is built and deployed from the template
as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import yaml
from botocore.exceptions import WaiterError

ROOT = Path(__file__).resolve().parent.parent
SAMLOCAL = ROOT / ".venv-sam" / "bin" / "samlocal"
ENDPOINT = "http://127.0.0.1:4566"
REGION = "us-east-1"
IMAGE_TAG = "source"


def aws_env() -> dict[str, str]:
    """Credentials and endpoint for talking to LocalStack (it accepts any credentials)."""
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",  # noqa: S105 (LocalStack's documented dummy key)
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": ENDPOINT,
    }


def client(service: str):
    env = aws_env()
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def sam_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(aws_env())
    env["SAM_CLI_TELEMETRY"] = "0"
    env.pop("AWS_PROFILE", None)
    # sam build of a python3.13 function needs a python3.13 on PATH.
    python_dir = str(Path(os.path.realpath(sys.executable)).parent)
    env["PATH"] = os.pathsep.join([python_dir, env.get("PATH", "")])
    return env


class _AnyTagLoader(yaml.SafeLoader):
    """Reads a CloudFormation template whatever its short-form tags (!Ref, !If, ...)."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def image_functions(template: Path) -> list[str]:
    resources = yaml.load(template.read_text(), Loader=_AnyTagLoader).get("Resources", {})  # noqa: S506
    return [
        name
        for name, resource in resources.items()
        if resource.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function")
        and (resource.get("Properties") or {}).get("PackageType") == "Image"
    ]


def run(command: list[str], log: Path) -> None:
    """Runs a samlocal command in the log's folder (sam keeps its .aws-sam/deps cache in the
    working directory: one per stack, away from any other build of the project)."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        result = subprocess.run(  # noqa: S603
            command, env=sam_env(), stdout=out, stderr=subprocess.STDOUT, cwd=log.parent
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        sys.exit(
            f"{command[1]} failed (exit {result.returncode}); last lines of {log}:\n"
            + "\n".join(tail)
        )


def build(template: Path, build_dir: Path, images: dict[str, str], log: Path) -> Path:
    """samlocal build without the image functions; returns the built template."""
    excluded = image_functions(template)
    missing = [name for name in excluded if name not in images]
    if missing:
        sys.exit(f"image functions without a repository (--image NAME=URI): {missing}")
    command = [
        str(SAMLOCAL),
        "build",
        "--template-file",
        str(template),
        "--build-dir",
        str(build_dir),
        "--cached",
        "--cache-dir",
        str(build_dir) + ".cache",
    ]
    for name in excluded:
        command += ["--exclude", name]
    run(command, log)
    built = build_dir / "template.yaml"
    document = yaml.safe_load(built.read_text())
    for name in excluded:
        properties = document["Resources"][name].setdefault("Properties", {})
        properties["ImageUri"] = f"{images[name]}:{IMAGE_TAG}"
    built.write_text(yaml.safe_dump(document, sort_keys=False))
    return built


def deploy(
    template: Path,
    stack_name: str,
    parameters: dict[str, str],
    images: dict[str, str],
    state_dir: Path,
) -> dict[str, str]:
    """Builds and deploys; returns the stack's outputs."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "deploy.log"
    started = time.monotonic()
    delete_if_failed(stack_name)
    built = build(template, state_dir / "build", images, log)
    command = [
        str(SAMLOCAL),
        "deploy",
        "--template-file",
        str(built),
        "--stack-name",
        stack_name,
        "--resolve-s3",
        "--capabilities",
        "CAPABILITY_IAM",
        "CAPABILITY_AUTO_EXPAND",
        "--no-confirm-changeset",
        "--no-fail-on-empty-changeset",
        "--region",
        REGION,
    ]
    for name, repository in images.items():
        command += ["--image-repositories", f"{name}={repository}"]
    if parameters:
        # One string of Key="Value" pairs: SAM splits it on spaces outside quotes.
        command += [
            "--parameter-overrides",
            " ".join(f'{key}="{value}"' for key, value in parameters.items()),
        ]
    run(command, log)
    print(f"[stack] {stack_name} deployed in {time.monotonic() - started:.0f} s", flush=True)
    return outputs(stack_name)


def outputs(stack_name: str) -> dict[str, str]:
    stack = client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def delete_if_failed(stack_name: str) -> None:
    """A stack whose creation rolled back cannot be updated: remove it first."""
    try:
        stack = client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    except client("cloudformation").exceptions.ClientError:
        return
    if stack["StackStatus"] in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"):
        print(f"[stack] removing {stack_name} ({stack['StackStatus']})", flush=True)
        try:
            delete(stack_name)
        except WaiterError as exc:  # LocalStack cannot always delete what never got created
            print(f"[stack] {stack_name} not fully deleted ({exc}); deploying anyway", flush=True)


def delete(stack_name: str) -> None:
    cloudformation = client("cloudformation")
    cloudformation.delete_stack(StackName=stack_name)
    cloudformation.get_waiter("stack_delete_complete").wait(StackName=stack_name)


def _pairs(values: list[str]) -> dict[str, str]:
    return dict(value.split("=", 1) for value in values)


def main() -> None:
    parser = argparse.ArgumentParser(description="Deploy a SAM template into the local stack")
    sub = parser.add_subparsers(dest="command", required=True)
    deploy_cmd = sub.add_parser("deploy")
    deploy_cmd.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    deploy_cmd.add_argument("--stack-name", required=True)
    deploy_cmd.add_argument("--parameter", action="append", default=[], help="KEY=VALUE")
    deploy_cmd.add_argument("--image", action="append", default=[], help="FUNCTION=REPOSITORY_URI")
    deploy_cmd.add_argument("--state-dir", type=Path, default=None)
    out_cmd = sub.add_parser("outputs")
    out_cmd.add_argument("--stack-name", required=True)
    args = parser.parse_args()
    if args.command == "deploy":
        if not shutil.which(str(SAMLOCAL)):
            sys.exit(f"{SAMLOCAL} missing: run scripts/bootstrap.sh sam")
        state_dir = args.state_dir or ROOT / ".state" / "stacks" / args.stack_name
        result = deploy(
            args.template.resolve(),
            args.stack_name,
            _pairs(args.parameter),
            _pairs(args.image),
            state_dir,
        )
    else:
        result = outputs(args.stack_name)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
