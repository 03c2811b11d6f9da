"""The local stack: LocalStack on 127.0.0.1:4566, the embedded PostgreSQL, the template deployed.

    .venv/bin/python -m scripts.stack up       # what `make up` runs after bootstrapping
    .venv/bin/python -m scripts.stack down     # what `make down` runs
    .venv/bin/python -m scripts.stack token    # a fresh access token for curl
    .venv/bin/python -m scripts.stack deploy --template T --stack-name NAME \
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
import hashlib
import json
import os
import secrets
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
LAUNCHER = ROOT / "localstack" / "launcher.py"
LOCAL_STATE = ROOT / ".state" / "local"
POSTGRES_STATE = ROOT / ".state" / "postgres"
SECRET_FILE = LOCAL_STATE / "jwt-secret"
TOKEN_FILE = LOCAL_STATE / "token"
STARTED_FILE = LOCAL_STATE / "started.json"
STACK_NAME = "siprems-forecast"
STAGE = "local"
JWT_PARAMETER = "/siprems/jwt-secret"  # the template's JwtSecretParameterName default
WORKER_REPOSITORY = "000000000000.dkr.ecr.us-east-1.amazonaws.com/siprems-worker"
ENDPOINT = f"http://127.0.0.1:{os.environ.get('SIPREMS_LOCALSTACK_PORT', '4566')}"
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


class _TaglessLoader(yaml.SafeLoader):
    """Reads a CloudFormation template's plain structure (intrinsic-function tags as None)."""


_TaglessLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def run(command: list[str], log: Path, hidden: tuple[str, ...] = ()) -> None:
    """Runs a samlocal command in the log's folder (sam keeps its .aws-sam/deps cache in the
    working directory: one per stack, away from any other build of the project). ``hidden``
    values (secrets among the arguments) are masked in the log's copy of the command."""
    shown = " ".join(command)
    for value in hidden:
        shown = shown.replace(value, "****")
    with open(log, "ab") as out:
        out.write(f"\n$ {shown}\n".encode())
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


def build_cache_dir(base: Path) -> Path:
    """sam build's cache for ``--cached``, one per version of requirements/lock.txt: the cache
    is keyed by each function's and layer's own folder and requirements file, and the lock
    the layer's requirements constrain with lies outside both."""
    lock = hashlib.sha256((ROOT / "requirements" / "lock.txt").read_bytes()).hexdigest()[:12]
    return base.with_name(f"{base.name}-{lock}")


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
        str(build_cache_dir(build_dir.with_name(build_dir.name + ".cache"))),
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
    built_at = time.monotonic()
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
    # NoEcho parameters (the local database URL) stay out of the log, as CloudFormation
    # keeps them out of its answers.
    declared = yaml.load(template.read_text(), Loader=_TaglessLoader).get("Parameters", {})  # noqa: S506
    hidden = tuple(v for k, v in parameters.items() if v and declared.get(k, {}).get("NoEcho"))
    run(command, log, hidden)
    print(
        f"[stack] {stack_name} deployed in {time.monotonic() - started:.0f} s "
        f"(build {built_at - started:.0f} s, deploy {time.monotonic() - built_at:.0f} s)",
        flush=True,
    )
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


# -- the whole local stack ---------------------------------------------------------------------
def _python() -> str:
    return str(ROOT / ".venv" / "bin" / "python")


def _postgres(command: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "layers" / "common" / "python"))
    return subprocess.run(  # noqa: S603
        [
            _python(),
            "-m",
            "siprems.sales.embedded",
            command,
            "--state-dir",
            str(POSTGRES_STATE),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
    )


def _launcher(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAUNCHER), command])  # noqa: S603


def ensure_jwt_secret(parameter_name: str = JWT_PARAMETER) -> str:
    """The HS256 key: random once, kept in .state (0600) and put into LocalStack's SSM."""
    LOCAL_STATE.mkdir(parents=True, exist_ok=True)
    if not SECRET_FILE.exists():
        SECRET_FILE.touch(mode=0o600)
        SECRET_FILE.write_text(secrets.token_urlsafe(48))
    key = SECRET_FILE.read_text().strip()
    client("ssm").put_parameter(Name=parameter_name, Value=key, Type="SecureString", Overwrite=True)
    return key


def api_base(stack_outputs: dict[str, str], stage: str = STAGE) -> str:
    return f"{ENDPOINT}/_aws/execute-api/{stack_outputs['ApiId']}/{stage}"


def deploy_service(
    stack_name: str,
    database_url: str,
    schedule: str | None,
    parameters: dict[str, str] | None = None,
) -> dict[str, str]:
    """template.yaml deployed as the local service (stage ``local``); ``parameters``: more
    template parameters (e.g. a short ``WorkerTimeout`` for the reliability tests)."""
    parameters = {"StageName": STAGE, "LocalDatabaseUrl": database_url, **(parameters or {})}
    if schedule:
        parameters["NightlySchedule"] = schedule
    return deploy(
        ROOT / "template.yaml",
        stack_name,
        parameters,
        {"WorkerFunction": WORKER_REPOSITORY},
        ROOT / ".state" / "stacks" / stack_name,
    )


def postgres_running() -> bool:
    return _postgres("status").returncode == 0


def stop_postgres() -> str:
    result = _postgres("stop")
    return (result.stderr or result.stdout).strip()


def start_postgres() -> str:
    """Starts the embedded PostgreSQL (its data kept); returns the database URL."""
    result = _postgres("start")
    if result.returncode != 0:
        raise RuntimeError(f"embedded PostgreSQL failed to start: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def start_services(record: bool = True) -> str:
    """Starts the embedded PostgreSQL (seeded) and LocalStack; returns the database URL.
    With ``record``, remembers which of them it started, for ``down``."""
    LOCAL_STATE.mkdir(parents=True, exist_ok=True)
    started = json.loads(STARTED_FILE.read_text()) if STARTED_FILE.exists() else {}
    postgres_was_running = _postgres("status").returncode == 0
    pg = _postgres("start", "--seed")
    if pg.returncode != 0:
        sys.exit(f"embedded PostgreSQL failed to start: {pg.stderr.strip()}")
    print(f"[up] PostgreSQL: {pg.stderr.strip().splitlines()[-1] if pg.stderr.strip() else 'ok'}")
    started["postgres"] = started.get("postgres", False) or not postgres_was_running
    localstack_was_running = (
        subprocess.run(  # noqa: S603
            [sys.executable, str(LAUNCHER), "status"], capture_output=True
        ).returncode
        == 0
    )
    if _launcher("start").returncode != 0:
        sys.exit("LocalStack failed to start (see .state/localstack/localstack.log)")
    started["localstack"] = started.get("localstack", False) or not localstack_was_running
    if record:
        STARTED_FILE.write_text(json.dumps(started))
    return pg.stdout.strip().splitlines()[-1]


def up(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    database_url = start_services()
    ensure_jwt_secret()
    stack_outputs = deploy_service(args.stack_name, database_url, args.schedule)
    base = api_base(stack_outputs)
    print(f"[up] API: {base}  ({time.monotonic() - t0:.0f} s so far)", flush=True)
    if not args.no_demo:
        demo = subprocess.run(  # noqa: S603
            [
                _python(),
                "-m",
                "scripts.local_demo",
                "--api-base",
                base,
                "--secret-file",
                str(SECRET_FILE),
                "--token-file",
                str(TOKEN_FILE),
                "--sku",
                args.sku,
                "--days",
                str(args.days),
                "--chart",
                str(LOCAL_STATE / f"forecast-{args.sku}.png"),
            ],
            env=dict(
                os.environ,
                PYTHONPATH=os.pathsep.join([str(ROOT / "layers" / "common" / "python"), str(ROOT)]),
            ),
            cwd=ROOT,
        )
        if demo.returncode != 0:
            sys.exit("the demo forecast failed (function logs: .state/localstack/functions/)")
        print(f"[up] first forecast after {time.monotonic() - t0:.0f} s", flush=True)
    else:
        token(argparse.Namespace(quiet=True))
    rel_token = TOKEN_FILE.relative_to(ROOT)
    print(f"""
The local stack is running (LocalStack {ENDPOINT}, stack {args.stack_name}, stage {STAGE}).
Call it (the token is valid for an hour; a new one: make token):
  TOKEN=$(cat {rel_token})
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"product_sku": "BRD-001", "days": 7}}' {base}/api/predict/async
  curl -s -H "Authorization: Bearer $TOKEN" {base}/api/tasks/<task_id>
or with the command line (README, "The command line"):
  eval "$(.venv/bin/siprems token --env)"   # this stack's URL and a token
  .venv/bin/siprems predict BRD-001 --days 14
Function logs: .state/localstack/functions/   LocalStack log: .state/localstack/localstack.log
Stop it: make down""")


def down(_args: argparse.Namespace) -> None:
    started = json.loads(STARTED_FILE.read_text()) if STARTED_FILE.exists() else {}
    _launcher("stop")
    if started.get("postgres"):
        print(f"[down] PostgreSQL: {stop_postgres()}")
    elif postgres_running():
        print("[down] PostgreSQL left running: it was running before `up` started")
    STARTED_FILE.unlink(missing_ok=True)
    print("""[down] kept:
  .state/postgres/        the sales database (Kiel bakery seed): the next `make up` reuses it
  .state/local/           the JWT signing key (0600), the last token, the demo charts
  .state/localstack/      LocalStack's log and the functions' logs
  .venv*/                 the installed environments
  not kept: what lived in LocalStack (jobs table, queues, models bucket): the next `make up`
  deploys the stack again. Remove everything with `make clean`.""")


def token(args: argparse.Namespace) -> None:
    from siprems.auth import mint_token

    if not SECRET_FILE.exists():
        sys.exit("no JWT key yet: run `make up` first")
    value = mint_token(
        SECRET_FILE.read_text().strip(),
        user_id=1,
        email="demo@siprems.local",
        role=getattr(args, "role", None),
    )
    TOKEN_FILE.touch(mode=0o600)
    TOKEN_FILE.write_text(value)
    if not getattr(args, "quiet", False):
        print(value)


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
    out_cmd.add_argument("--stack-name", default=STACK_NAME)
    up_cmd = sub.add_parser("up", help="start everything, deploy template.yaml, run the demo")
    up_cmd.add_argument("--stack-name", default=STACK_NAME)
    up_cmd.add_argument("--schedule", default=None, help="NightlySchedule, e.g. 'rate(1 minute)'")
    up_cmd.add_argument("--sku", default="BRD-001")
    up_cmd.add_argument("--days", type=int, default=30)
    up_cmd.add_argument("--no-demo", action="store_true")
    sub.add_parser("down", help="stop what `up` started")
    token_cmd = sub.add_parser("token", help="mint an access token (written to .state/local/token)")
    token_cmd.add_argument("--role", default=None, help="e.g. admin")
    args = parser.parse_args()
    if args.command in ("up", "down", "token"):
        {"up": up, "down": down, "token": token}[args.command](args)
        return
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
