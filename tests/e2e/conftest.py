"""End-to-end tests against the local stack: LocalStack on the host with the project's plugins.

Run with ``make e2e`` (or ``.venv/bin/python -m pytest tests/e2e``). LocalStack is started by
the launcher when it is not running already, and stopped afterwards only if these tests
started it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts import stack

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "localstack" / "launcher.py"
MINI_APP = Path(__file__).with_name("fixtures") / "mini_app" / "template.yaml"
MINI_STACK = "siprems-e2e-mini"
MINI_WORKER_REPOSITORY = "000000000000.dkr.ecr.us-east-1.amazonaws.com/mini-worker"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


def wait_for(
    condition: Callable[[], object],
    timeout_s: float,
    interval_s: float = 1.0,
    what: str = "condition",
):
    """Polls until ``condition()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class HttpAnswer:
    status: int
    body: dict | list | str | None
    headers: dict[str, str]


def http(
    method: str,
    url: str,
    token: str | None = None,
    body: object = None,
    headers: dict[str, str] | None = None,
    raw_body: bytes | None = None,
) -> HttpAnswer:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    data = (
        raw_body
        if raw_body is not None
        else (json.dumps(body).encode() if body is not None else None)
    )
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            status, text, answer_headers = answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        status, text, answer_headers = error.code, error.read(), dict(error.headers)
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text.decode(errors="replace")
    return HttpAnswer(status, parsed, answer_headers)


@pytest.fixture(scope="session")
def local_stack():
    """LocalStack on 127.0.0.1:4566 (started here if it is not running)."""
    was_running = (
        subprocess.run(  # noqa: S603
            [sys.executable, str(LAUNCHER), "status"],
            capture_output=True,
        ).returncode
        == 0
    )
    if not was_running:
        subprocess.run([sys.executable, str(LAUNCHER), "start"], check=True)  # noqa: S603
    yield stack.ENDPOINT
    if not was_running:
        subprocess.run([sys.executable, str(LAUNCHER), "stop"], check=True)  # noqa: S603


@pytest.fixture(scope="session")
def mini_app(local_stack) -> dict[str, str]:
    """The mini SAM app (every AWS feature the service uses), built and deployed by samlocal."""
    outputs = stack.deploy(
        MINI_APP,
        MINI_STACK,
        parameters={"ScheduleExpression": "rate(1 minute)"},
        images={"WorkerFunction": MINI_WORKER_REPOSITORY},
        state_dir=ROOT / ".state" / "stacks" / MINI_STACK,
    )
    outputs["ApiBase"] = f"{local_stack}/_aws/execute-api/{outputs['ApiId']}/test"
    return outputs


SERVICE_STACK = "siprems-e2e"


@dataclass
class Service:
    outputs: dict[str, str]
    base: str
    user_token: str
    admin_token: str
    secret: str
    database_password: str  # in the database URL the functions get (the local cluster ignores it)


@contextmanager
def deployed_service(
    stack_name: str, schedule: str | None, parameters: dict[str, str] | None = None
) -> Iterator[Service]:
    """template.yaml deployed into the local stack as its own stack (the one `make up` deploys
    is left alone), with tokens for a user and an admin. The embedded PostgreSQL is stopped
    afterwards if it was started here."""
    from siprems.auth import mint_token

    from tests.fixtures.tokens import with_password

    postgres_was_running = stack.postgres_running()
    # A password in the URL, as on AWS, so the log checks can look for it.
    database_password = "e2e-" + secrets.token_hex(12)
    database_url = with_password(stack.start_services(record=False), database_password)
    secret = stack.ensure_jwt_secret()
    outputs = stack.deploy_service(stack_name, database_url, schedule, parameters)
    yield Service(
        outputs=outputs,
        base=stack.api_base(outputs),
        user_token=mint_token(secret, user_id=7, email="e2e@siprems.local"),
        admin_token=mint_token(secret, user_id=8, email="admin@siprems.local", role="admin"),
        secret=secret,
        database_password=database_password,
    )
    if not postgres_was_running:
        stack.stop_postgres()


@pytest.fixture(scope="session")
def service(local_stack) -> Iterator[Service]:
    """The service with the nightly rule at rate(1 minute), so a test can watch it fire."""
    with deployed_service(SERVICE_STACK, schedule="rate(1 minute)") as deployed:
        yield deployed


TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


def task(service: Service, task_id: str) -> dict:
    answer = http("GET", f"{service.base}/api/tasks/{task_id}", token=service.user_token)
    assert answer.status in (200, 202), answer.body
    return answer.body


def wait_task(
    service: Service, task_id: str, timeout_s: float = 180, statuses: set[str] = TERMINAL
) -> dict:
    """Polls the task through the API until its status is one of ``statuses``."""

    def reached():
        body = task(service, task_id)
        return body if body["status"] in statuses else None

    return wait_for(reached, timeout_s, interval_s=1, what=f"task {task_id} in {statuses}")


# -- the reliability tests' own stack ---------------------------------------------------------
FAULT_STACK = "siprems-e2e-faults"
# The template's shortest worker timeout: a STARTED job older than this belongs to a dead worker.
FAULT_WORKER_TIMEOUT_S = 30
# The queue's visibility timeout is six times the worker timeout (three minutes here): the
# reliability tests shorten it on their own queue, so a message of a dead worker comes back within
# a minute. It stays above the worker timeout, so no live worker loses its message.
FAULT_VISIBILITY_S = FAULT_WORKER_TIMEOUT_S + 5


@pytest.fixture(scope="session")
def fault_service(local_stack) -> Iterator[Service]:
    """The service as a stack of its own for the fault, duplicate and load tests: a 30 s
    worker timeout, the nightly rule off (nothing but the tests queues work)."""
    parameters = {
        "WorkerTimeout": str(FAULT_WORKER_TIMEOUT_S),
        "NightlyScheduleEnabled": "false",
    }
    with deployed_service(FAULT_STACK, schedule=None, parameters=parameters) as deployed:
        stack.client("sqs").set_queue_attributes(
            QueueUrl=deployed.outputs["JobsQueueUrl"],
            Attributes={"VisibilityTimeout": str(FAULT_VISIBILITY_S)},
        )
        yield deployed


class Faults:
    """Fault rules of LocalStack's fault-injection plugin (``/_siprems/faults``): AWS requests
    that match a rule fail with an AWS error before they reach the service."""

    def __init__(self, endpoint: str) -> None:
        self.url = f"{endpoint}/_siprems/faults"

    def add(self, service: str, operation: str | None = None, **fields) -> dict:
        answer = http("POST", self.url, body={"service": service, "operation": operation, **fields})
        assert answer.status == 201, answer.body
        return answer.body

    def rule(self, rule_id: int) -> dict:
        rules = http("GET", self.url).body["rules"]
        return next(r for r in rules if r["id"] == rule_id)

    def clear(self) -> None:
        assert http("DELETE", self.url).status == 200


@pytest.fixture
def faults(local_stack) -> Iterator[Faults]:
    injector = Faults(local_stack)
    injector.clear()
    yield injector
    injector.clear()


def function_processes(function_name: str) -> list[int]:
    """Process ids of the function's execution environments (local processes started by the
    local-process executor, each leading its own process group)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        if f"AWS_LAMBDA_FUNCTION_NAME={function_name}".encode() in variables and any(
            v.startswith(b"LOCAL_RUNTIME_HANDLER=") for v in variables
        ):
            pid = int(environ.parent.name)
            try:
                if os.getpgid(pid) == pid:  # the runtime itself, not a child inheriting its env
                    found.append(pid)
            except ProcessLookupError:
                continue
    return found


class ChildWatch:
    """Watches for a new process below ``ancestors`` whose command name starts with
    ``command_prefix``: processes that exist when the watch is made are left out, and a poll
    reads only the new ones (cheap enough, every few milliseconds, to catch a process that
    lives a few tens of milliseconds)."""

    def __init__(self, ancestors: set[int], command_prefix: str) -> None:
        self.below = set(ancestors)
        self.prefix = command_prefix
        self.seen = set(os.listdir("/proc"))
        self.candidates: set[str] = set()  # new processes below the ancestors, until they exit

    def poll(self) -> int | None:
        proc = Path("/proc")
        for name in os.listdir(proc):
            if name in self.seen or not name.isdigit():
                continue
            self.seen.add(name)
            try:
                parent = int((proc / name / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent in self.below:
                self.below.add(int(name))
                self.candidates.add(name)
        for name in list(self.candidates):
            try:
                command = (proc / name / "comm").read_text()
            except OSError:
                self.candidates.discard(name)
                continue
            if command.startswith(self.prefix):  # after the fork's exec
                return int(name)
        return None

    def wait(self, timeout_s: float, given_up: Callable[[], bool]) -> int | None:
        """The process once seen; None when ``given_up()`` (checked about once a second) turns
        true or the time is up."""
        deadline = time.monotonic() + timeout_s
        next_check = time.monotonic() + 1
        while time.monotonic() < deadline:
            if (pid := self.poll()) is not None:
                return pid
            if time.monotonic() >= next_check:
                if given_up():
                    return None
                next_check = time.monotonic() + 1
            time.sleep(0.002)
        return None


# -- helpers of the reliability tests ----------------------------------------------------------
def submit_train(service: Service, sku: str) -> str:
    answer = http(
        "POST", f"{service.base}/api/tasks/training/product/{sku}", token=service.user_token
    )
    assert answer.status == 202, answer.body
    return answer.body["task_id"]


def submit_predict(service: Service, sku: str, days: int = 7) -> str:
    answer = http(
        "POST",
        f"{service.base}/api/predict/async",
        token=service.user_token,
        body={"product_sku": sku, "days": days},
    )
    assert answer.status == 202, answer.body
    return answer.body["task_id"]


def model_versions(service: Service, sku: str) -> int:
    """How many versions of the SKU's model artefact the (versioned) bucket holds."""
    key = f"models/{sku}/model.json"
    listing = stack.client("s3").list_object_versions(
        Bucket=service.outputs["ModelsBucketName"], Prefix=key
    )
    return sum(1 for v in listing.get("Versions", []) if v["Key"] == key)


def worker_mapping(service: Service) -> str:
    mappings = stack.client("lambda").list_event_source_mappings(
        FunctionName=service.outputs["WorkerFunctionName"]
    )["EventSourceMappings"]
    assert len(mappings) == 1, mappings
    return mappings[0]["UUID"]


def set_worker_mapping(service: Service, enabled: bool) -> None:
    """Turns the worker's SQS event source mapping on or off (messages wait in the queue)."""
    client = stack.client("lambda")
    uuid = worker_mapping(service)
    client.update_event_source_mapping(UUID=uuid, Enabled=enabled)
    wanted = "Enabled" if enabled else "Disabled"
    wait_for(
        lambda: client.get_event_source_mapping(UUID=uuid)["State"] == wanted,
        30,
        interval_s=0.5,
        what=f"the worker's event source mapping {wanted}",
    )


KIEL_SKUS = ("BRD-001", "CKE-001", "CNF-001", "CRS-001", "RLL-001", "SEA-001")


@pytest.fixture(scope="session")
def trained_models(fault_service) -> Service:
    """Every seeded product has a stored model in the reliability stack (one train-all if not)."""
    missing = [sku for sku in KIEL_SKUS if model_versions(fault_service, sku) == 0]
    if missing:
        answer = http(
            "POST", f"{fault_service.base}/api/tasks/training/all", token=fault_service.admin_token
        )
        assert answer.status == 202, answer.body
        done = wait_task(fault_service, answer.body["task_id"], timeout_s=300)
        assert done["status"] == "SUCCESS", done
    return fault_service
