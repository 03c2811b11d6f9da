"""End-to-end tests against the local stack: LocalStack on the host with the project's plugins.

Run with ``make e2e`` (or ``.venv/bin/python -m pytest tests/e2e``). LocalStack is started by
the launcher when it is not running already, and stopped afterwards only if these tests
started it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="session")
def service(local_stack) -> Iterator[Service]:
    """template.yaml deployed into the local stack as its own stack (the one `make up` deploys
    is left alone), the nightly rule at rate(1 minute) so a test can watch it fire. The embedded
    PostgreSQL is stopped afterwards if it was started here."""
    from siprems.auth import mint_token

    from tests.fixtures.tokens import with_password

    postgres_was_running = stack.postgres_running()
    # A password in the URL, as on AWS, so the log checks can look for it.
    database_password = "e2e-" + secrets.token_hex(12)
    database_url = with_password(stack.start_services(record=False), database_password)
    secret = stack.ensure_jwt_secret()
    outputs = stack.deploy_service(SERVICE_STACK, database_url, schedule="rate(1 minute)")
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
