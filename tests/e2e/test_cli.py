"""The installed `siprems` command against the service deployed in the local stack (through its
API Gateway URL, the authorizer, the queue and the worker): what a person runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.conftest import Service

SIPREMS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "siprems"


def siprems(service: Service, *argv: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, SIPREMS_API_URL=service.base)
    env["SIPREMS_TOKEN"] = token if token is not None else service.user_token
    return subprocess.run(  # noqa: S603
        [str(SIPREMS), *argv], env=env, capture_output=True, text=True, timeout=400
    )


def test_predict_shows_progress_and_the_forecast(service):
    run = siprems(service, "predict", "BRD-001", "--days", "14")
    assert run.returncode == 0, run.stderr
    assert "SUCCESS" in run.stderr
    assert "forecast BRD-001: 14 days" in run.stdout and "restock" in run.stdout


def test_async_then_status_wait_as_json(service):
    run = siprems(service, "predict", "RLL-001", "--async")
    assert run.returncode == 0, run.stderr
    task_id = run.stdout.strip()
    waited = siprems(service, "status", task_id, "--wait", "--json")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["status"] == "SUCCESS"


def test_errors_a_person_understands(service):
    unknown = siprems(service, "predict", "NOPE-999")
    assert unknown.returncode == 5 and "NOPE-999" in unknown.stderr
    forged = siprems(service, "tasks", "active", token="not.a.token")  # noqa: S106
    assert forged.returncode == 4 and "refused the token" in forged.stderr
    not_admin = siprems(service, "dlq", "list")
    assert not_admin.returncode == 4 and "admin role" in not_admin.stderr


def test_train_all_shows_the_children_and_dlq_list(service):
    run = siprems(service, "train", "--all", token=service.admin_token)
    assert run.returncode == 0, run.stderr
    assert "products" in run.stderr and "0 failed" in run.stdout
    dlq = siprems(service, "dlq", "list", "--json", token=service.admin_token)
    assert dlq.returncode == 0, dlq.stderr
    assert "messages" in json.loads(dlq.stdout)
    scheduled = siprems(service, "tasks", "scheduled")
    assert scheduled.returncode == 0 and "nightly retraining: rate(1 minute)" in scheduled.stdout


def test_chart(service, tmp_path):
    target = tmp_path / "BRD-001.png"
    run = siprems(service, "chart", "BRD-001", "-o", str(target))
    assert run.returncode == 0, run.stderr
    assert target.read_bytes()[:4] == b"\x89PNG"
