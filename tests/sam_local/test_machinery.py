"""The sam local machinery on a minimal app (tests/sam_local/fixtures/app): the offline-built base
image runs zip functions with a layer and serves as the base of an image function, containers reach
a host service through the bridge gateway, and start-api applies a Lambda REQUEST authorizer."""

# Drives fixed local tools (sam, docker, socat, the project's scripts) and local HTTP endpoints.
# ruff: noqa: S603, S607, S310

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.sam_local.harness import Docker, StartApi, http, run_sam, sam_invoke

APP = Path(__file__).parent / "fixtures" / "app"
TOKEN = "fixture-token"  # noqa: S105 - the fixture authorizer's test value


@pytest.fixture(scope="module")
def built(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_dir = tmp_path_factory.mktemp("fixture-build")
    result = run_sam(docker, "build", "--build-dir", str(build_dir), cwd=APP)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build_dir / "template.yaml"


@pytest.fixture(scope="module")
def host_service(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server on the bridge gateway address that answers /ping with 'pong'."""
    root = tmp_path_factory.mktemp("www")
    (root / "ping").write_text("pong")
    server = ThreadingHTTPServer(
        (docker.gateway, 0), partial(SimpleHTTPRequestHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{docker.gateway}:{server.server_address[1]}/ping"
    server.shutdown()


@pytest.fixture(scope="module")
def env_vars(host_service: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("env") / "env.json"
    path.write_text(
        json.dumps(
            {
                "HelloFunction": {"SERVICE_URL": host_service},
                "ImageFunction": {"SERVICE_URL": host_service},
                "AuthorizerFunction": {"EXPECTED_TOKEN": TOKEN},
            }
        )
    )
    return path


def test_base_images_are_tagged_as_sam_expects(docker: Docker) -> None:
    for tag in ("public.ecr.aws/lambda/python:3.13-x86_64", "public.ecr.aws/lambda/python:3.13"):
        inspected = subprocess.run(
            ["docker", "image", "inspect", tag],
            env=docker.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert inspected.returncode == 0, f"{tag} missing"
        config = json.loads(inspected.stdout)[0]["Config"]
        assert config["Entrypoint"] == ["/lambda-entrypoint.sh"]
        assert config["WorkingDir"] == "/var/task"
        assert "LAMBDA_TASK_ROOT=/var/task" in config["Env"]


def test_zip_function_with_layer_reaches_the_host(
    docker: Docker, built: Path, env_vars: Path
) -> None:
    invocation = sam_invoke(docker, built, "HelloFunction", APP / "events" / "hello.json", env_vars)
    assert invocation.returncode == 0, invocation.log
    assert invocation.response["statusCode"] == 200, invocation.response
    body = json.loads(invocation.response["body"])
    assert body == {
        "greeting": "hello kiel",
        "python": "3.13",
        "principal": "event-file",
        "function": "HelloFunction",
        "service": "pong",
    }


def test_image_function_built_from_the_base_image(
    docker: Docker, built: Path, env_vars: Path
) -> None:
    invocation = sam_invoke(docker, built, "ImageFunction", APP / "events" / "image.json", env_vars)
    assert invocation.returncode == 0, invocation.log
    body = json.loads(invocation.response["body"])
    assert body == {
        "echo": {"sku": "bread"},
        "python": "3.13",
        "cwd": "/var/task",
        "service": "pong",
    }


def test_handler_errors_come_back_as_lambda_errors(
    docker: Docker, built: Path, tmp_path: Path
) -> None:
    """Without SERVICE_URL's server the call fails: the error reaches the caller, not a hang."""
    env = tmp_path / "env.json"
    env.write_text(
        json.dumps({"HelloFunction": {"SERVICE_URL": f"http://{docker.gateway}:9/nothing"}})
    )
    invocation = sam_invoke(docker, built, "HelloFunction", APP / "events" / "hello.json", env)
    assert invocation.response["errorType"] == "URLError", invocation.response


def test_start_api_applies_the_authorizer(
    docker: Docker, built: Path, env_vars: Path, tmp_path: Path
) -> None:
    with StartApi(docker, built, env_vars, tmp_path / "start-api.log") as api:
        url = f"{api.url}/hello/anna"
        assert http("GET", url).status == 401, (
            api.log()
        )  # no identity source: 401 before the authorizer
        assert http("GET", url, headers={"Authorization": "Bearer wrong"}).status == 403, (
            api.log()
        )  # Deny
        allowed = http("GET", url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status == 200, (allowed, api.log())
        assert allowed.body["greeting"] == "hello anna"
        assert allowed.body["principal"] == "tester"
        # Unknown routes answer as API Gateway does.
        assert http("GET", f"{api.url}/nowhere").status == 403
