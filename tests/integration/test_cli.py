"""The `siprems` command line against the API over HTTP: the functions' real handlers behind
an in-process API Gateway (tests/fixtures/gateway.py), moto for AWS, the embedded PostgreSQL
with the Kiel data, real Prophet fits. What a person sees (progress, summaries, errors, exit
codes) and what a script reads (--json)."""

from __future__ import annotations

import io
import json
import socket

import pytest
from siprems.auth import mint_token
from siprems_client import api
from siprems_client.cli import main

from scripts.gen_events import SAMPLE_SIGNING_KEY
from tests.fixtures.gateway import gateway  # noqa: F401 - the fixture

USER_TOKEN = mint_token(SAMPLE_SIGNING_KEY, user_id=7, email="clerk@example.com")
ADMIN_TOKEN = mint_token(SAMPLE_SIGNING_KEY, user_id=1, email="ops@example.com", role="admin")


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


def siprems(url: str, *argv: str, token: str | None = USER_TOKEN) -> Run:
    out, err = io.StringIO(), io.StringIO()
    environ = {"SIPREMS_API_URL": url}
    if token:
        environ["SIPREMS_TOKEN"] = token
    code = main(list(argv), stdout=out, stderr=err, environ=environ)
    return Run(code, out.getvalue(), err.getvalue())


def test_predict_waits_with_progress_and_prints_the_forecast(gateway):  # noqa: F811
    run = siprems(gateway.url, "predict", "BRD-001", "--days", "7")
    assert run.code == 0, run.err
    assert "PENDING" in run.err and "SUCCESS" in run.err  # the statuses it went through
    assert "forecast BRD-001: 7 days" in run.out
    assert "restock" in run.out and "accuracy" in run.out


def test_predict_json_is_the_task_document(gateway):  # noqa: F811
    run = siprems(gateway.url, "predict", "BRD-001", "--days", "5", "--json")
    assert run.code == 0, run.err
    task = run.json()
    assert task["status"] == "SUCCESS"
    future = [r for r in task["result"]["chartData"] if r.get("historical") is None]
    assert len(future) == 5 and all(r["predicted"] is not None for r in future)


def test_async_returns_the_id_and_status_reads_it(gateway):  # noqa: F811
    submitted = siprems(gateway.url, "predict", "BRD-001", "--async")
    assert submitted.code == 0, submitted.err
    task_id = submitted.out.strip()
    assert len(task_id) == 36
    as_json = siprems(gateway.url, "predict", "BRD-001", "--async", "--json").json()
    assert as_json["status"] == "submitted" and as_json["forecast_days"] == 7
    waited = siprems(gateway.url, "status", task_id, "--wait", "--json")
    assert waited.code == 0 and waited.json()["status"] == "SUCCESS"
    shown = siprems(gateway.url, "status", task_id)
    assert f"task {task_id}: SUCCESS" in shown.out and "forecast BRD-001" in shown.out


def test_unknown_sku_is_explained_with_exit_code_5(gateway):  # noqa: F811
    run = siprems(gateway.url, "predict", "NOPE-999")
    assert run.code == api.EXIT_NOT_FOUND
    assert "NOPE-999" in run.err
    unknown_task = siprems(gateway.url, "status", "0b7c1d1e-0000-4000-8000-000000000000")
    assert unknown_task.code == api.EXIT_NOT_FOUND and "no task" in unknown_task.err


def test_token_problems_are_explained_with_exit_code_4(gateway):  # noqa: F811
    missing = siprems(gateway.url, "tasks", "active", token=None)
    assert missing.code == api.EXIT_AUTH and "SIPREMS_TOKEN" in missing.err
    forged = mint_token("another-key", user_id=7, email="x@example.com")
    refused = siprems(gateway.url, "tasks", "active", token=forged)
    assert refused.code == api.EXIT_AUTH and "refused the token" in refused.err
    not_admin = siprems(gateway.url, "dlq", "list")
    assert not_admin.code == api.EXIT_AUTH and "admin role" in not_admin.err
    as_json = siprems(gateway.url, "dlq", "list", "--json")
    assert as_json.json()["type"] == "forbidden"


def test_unreachable_api_is_explained_with_exit_code_3():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = siprems(f"http://127.0.0.1:{port}/test", "tasks", "active")
    assert run.code == api.EXIT_UNREACHABLE
    assert "cannot reach the API" in run.err and "make up" in run.err
    no_url = io.StringIO()
    assert main(["tasks", "active"], stdout=io.StringIO(), stderr=no_url, environ={}) == 2
    assert "SIPREMS_API_URL" in no_url.getvalue()


def test_wrong_path_is_reported_as_a_wrong_url(gateway):  # noqa: F811
    run = siprems(gateway.url.rsplit("/", 1)[0] + "/wrongstage", "tasks", "active")
    assert run.code == api.EXIT_UNREACHABLE and "is the API URL right" in run.err


def test_train_one_product_then_every_product_with_children_progress(gateway):  # noqa: F811
    one = siprems(gateway.url, "train", "BRD-001", "--json")
    assert one.code == 0, one.err
    assert one.json()["result"]["product_sku"] == "BRD-001"
    everything = siprems(gateway.url, "train", "--all", token=ADMIN_TOKEN)
    assert everything.code == 0, everything.err
    assert "products" in everything.err  # the children's progress line
    assert "6/6 done: 6 trained, 0 failed" in everything.out
    usage = siprems(gateway.url, "train")
    assert usage.code == 2 and "--all" in usage.err


def test_cancel_then_cancel_again(gateway):  # noqa: F811
    last = siprems(gateway.url, "predict", "BRD-001", "--async").out.strip()
    cancelled = siprems(gateway.url, "cancel", last, "--json")
    assert cancelled.code == 0, cancelled.err
    assert cancelled.json() == {"task_id": last, "status": "REVOKED"}
    again = siprems(gateway.url, "cancel", last)
    assert again.code == api.EXIT_ERROR and "already finished" in again.err


def test_tasks_scheduled_shows_the_queue_and_the_next_nightly_run(gateway):  # noqa: F811
    siprems(gateway.url, "predict", "BRD-001", "--async")
    run = siprems(gateway.url, "tasks", "scheduled")
    assert run.code == 0, run.err
    assert "nightly retraining: cron(0 2 * * ? *), next run 20" in run.out
    body = siprems(gateway.url, "tasks", "scheduled", "--json").json()
    assert set(body) >= {"tasks", "count", "nightly", "queue"}
    active = siprems(gateway.url, "tasks", "active", "--json")
    assert active.code == 0 and active.json()["count"] == 0


def test_dlq_list_as_admin(gateway, app):  # noqa: F811
    app.sqs.send_message(QueueUrl=app.dlq_url, MessageBody=json.dumps({"task_id": "poison"}))
    run = siprems(gateway.url, "dlq", "list", token=ADMIN_TOKEN)
    assert run.code == 0, run.err
    assert "dead-letter queue: 1 message(s)" in run.out and "task_id=poison" in run.out
    assert "siprems dlq redrive" in run.out


def test_dlq_list_names_a_dead_lettered_nightly_run_and_its_error(gateway, app):  # noqa: F811
    app.sqs.send_message(
        QueueUrl=app.dlq_url,
        MessageBody=json.dumps({"detail-type": "Scheduled Event", "time": "2026-11-29T02:00:00Z"}),
        MessageAttributes={
            "ErrorMessage": {"DataType": "String", "StringValue": "database unavailable"}
        },
    )
    run = siprems(gateway.url, "dlq", "list", token=ADMIN_TOKEN)
    assert run.code == 0, run.err
    assert "train_all trigger: parent " in run.out
    assert "(nightly run of 2026-11-29T02:00:00Z)  error: database unavailable" in run.out


def test_chart_writes_a_png(gateway, tmp_path):  # noqa: F811
    target = tmp_path / "chart.png"
    run = siprems(gateway.url, "chart", "BRD-001", "-o", str(target), "--days", "30")
    assert run.code == 0, run.err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart: {target}" in run.out


def test_token_from_the_local_key_is_accepted(gateway, tmp_path):  # noqa: F811
    key = tmp_path / "jwt-secret"
    key.write_text(SAMPLE_SIGNING_KEY)
    minted = siprems(gateway.url, "token", "--secret-file", str(key), "--role", "admin", "--json")
    assert minted.code == 0, minted.err
    assert minted.json()["role"] == "admin"
    run = siprems(gateway.url, "dlq", "list", "--json", token=minted.json()["token"])
    assert run.code == 0, run.err
    missing = siprems(gateway.url, "token", "--secret-file", str(tmp_path / "none"))
    assert missing.code == api.EXIT_ERROR and "none" in missing.err


@pytest.mark.parametrize("command", [["tasks", "active"], ["cancel", "x"], ["dlq", "list"]])
def test_every_command_takes_json(command):
    # usage is parsed before any call: --json is accepted in every position of every command
    out, err = io.StringIO(), io.StringIO()
    code = main([*command, "--json"], stdout=out, stderr=err, environ={})
    assert code == 2 and json.loads(out.getvalue())["type"] == "no_api_url"


def test_redriving_an_empty_dlq_says_so(gateway):  # noqa: F811
    run = siprems(gateway.url, "dlq", "redrive", token=ADMIN_TOKEN)
    assert run.code == 0, run.err
    assert run.out.strip() == "the dead-letter queue is empty: nothing to move"
    assert siprems(gateway.url, "dlq", "redrive", "--json", token=ADMIN_TOKEN).json() == {
        "status": "empty",
        "count": 0,
    }
