"""Fixtures for the `sam local` checks: the Docker engine, the Lambda base images, `sam` itself,
host services that containers reach, and a running `sam local start-api`.

These checks need Docker and are not part of the default test run; `make sam-local` runs them
(it starts the engine and stops it afterwards). The engine and base-image scripts are idempotent,
so running `pytest tests/sam_local` directly also works; the engine then keeps running
(`scripts/docker/engine.sh stop`).

How containers reach the host: `sam local` runs every function on Docker's default bridge (its
`--docker-network host` does not share the host's network namespace), so host services are
reached at the bridge gateway address. Services that listen on loopback only (the embedded
PostgreSQL) are relayed there with socat.
"""

# Drives fixed local tools (sam, docker, socat, the project's scripts) and local HTTP endpoints.
# ruff: noqa: S603, S607, S310

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAM = ROOT / ".venv-sam" / "bin" / "sam"
ENGINE = ROOT / "scripts" / "docker" / "engine.sh"
BASE_IMAGE = ROOT / "scripts" / "docker" / "base-image.sh"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode} before listening"
            )
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM (sam local start-api cleans its containers up on it), then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Docker:
    env: dict[str, str]  # the environment for docker and sam: DOCKER_HOST, fake AWS credentials
    gateway: str  # the host's address on the default bridge, as containers see it


@pytest.fixture(scope="session")
def docker() -> Docker:
    """A running engine (started if needed) with the Lambda Python base images present."""
    started = subprocess.run([str(ENGINE), "start"], capture_output=True, text=True, check=False)
    assert started.returncode == 0, f"engine.sh start failed:\n{started.stderr}"
    docker_host = started.stdout.strip().removeprefix("export DOCKER_HOST=")
    env = {
        **os.environ,
        "DOCKER_HOST": docker_host,
        "SAM_CLI_TELEMETRY": "0",
        # Containers get these through sam: never real credentials.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_ENDPOINT_URL", None)
    images = subprocess.run([str(BASE_IMAGE)], env=env, capture_output=True, text=True, check=False)
    assert images.returncode == 0, f"base-image.sh failed:\n{images.stderr[-4000:]}"
    gateway = subprocess.run(
        [str(ENGINE), "gateway"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert gateway, "no address on the docker0 bridge"
    return Docker(env=env, gateway=gateway)


def run_sam(
    docker: Docker, *args: str, cwd: Path = ROOT, timeout: float = 900
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SAM), *args],
        cwd=cwd,
        env=docker.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Invocation:
    """One `sam local invoke`: the function's response (stdout) and the container's log (stderr)."""

    returncode: int
    response: object
    log: str


def sam_invoke(
    docker: Docker,
    template: Path,
    function: str,
    event: Path,
    env_vars: Path | None = None,
    extra: tuple[str, ...] = (),
) -> Invocation:
    args = ["local", "invoke", "-t", str(template), "--skip-pull-image", "-e", str(event)]
    if env_vars is not None:
        args += ["--env-vars", str(env_vars)]
    result = run_sam(docker, *args, *extra, function)
    try:
        response = json.loads(result.stdout)
    except json.JSONDecodeError:
        response = result.stdout
    return Invocation(result.returncode, response, result.stderr)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: object
    headers: dict[str, str]


def http(
    method: str,
    url: str,
    body: object | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> HttpAnswer:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            **({"Content-Type": "application/json"} if data is not None else {}),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw, answer_headers = answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        status, raw, answer_headers = error.code, error.read(), dict(error.headers)
    try:
        parsed: object = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        parsed = raw.decode(errors="replace")
    return HttpAnswer(status, parsed, answer_headers)


class SamLocalServer:
    """A `sam local start-*` server on a loopback port (free unless given); stopped with
    SIGTERM."""

    command = ""

    def __init__(
        self,
        docker: Docker,
        template: Path,
        env_vars: Path | None,
        log_path: Path,
        extra: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            str(SAM),
            "local",
            self.command,
            "-t",
            str(template),
            "--skip-pull-image",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *extra,
        ]
        if env_vars is not None:
            args += ["--env-vars", str(env_vars)]
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=docker.env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def __enter__(self) -> Self:
        try:
            wait_for_port("127.0.0.1", self.port, timeout=120, process=self.process)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class StartApi(SamLocalServer):
    """`sam local start-api`: the API's routes, each running its function in a container."""

    command = "start-api"


class StartLambda(SamLocalServer):
    """`sam local start-lambda`: Lambda's Invoke API for the template's functions (by logical
    id), RequestResponse and Event."""

    command = "start-lambda"


@pytest.fixture(scope="session")
def relay(docker: Docker) -> Iterator[callable]:
    """relay(port) makes a loopback-only host port reachable at docker.gateway:<returned port>."""
    assert shutil.which("socat"), "socat is missing (scripts/docker/engine.sh start installs it)"
    processes: list[subprocess.Popen] = []

    def open_relay(loopback_port: int) -> int:
        port = free_port()
        process = subprocess.Popen(
            [
                "socat",
                f"TCP-LISTEN:{port},bind={docker.gateway},reuseaddr,fork",
                f"TCP:127.0.0.1:{loopback_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        wait_for_port(docker.gateway, port, timeout=10, process=process)
        return port

    yield open_relay
    for process in processes:
        stop_process(process, timeout=5)
