"""The command line's pure parts: the progress line, task summaries, event spans, argument
parsing and the exit codes of errors."""

from __future__ import annotations

import io
import json
from datetime import date

import pytest
from siprems_client import api
from siprems_client.chart import event_spans
from siprems_client.cli import main, parser, progress_text, task_lines


def test_progress_of_a_train_all_parent_shows_the_children():
    task = {
        "status": "STARTED",
        "message": "Task is running",
        "progress": {"total": 6, "done": 3, "succeeded": 2, "failed": 1, "revoked": 0},
    }
    text = progress_text(task, 4.25)
    assert "4.2 s" in text or "4.3 s" in text
    assert "[##########..........] 3/6 products (2 trained, 1 failed, 0 cancelled)" in text


def test_progress_of_a_retry_names_the_attempt_and_error():
    task = {
        "status": "RETRY",
        "message": "Task failed and will be retried",
        "attempts": 2,
        "error": {"type": "database_unavailable", "message": "connection refused"},
    }
    text = progress_text(task, 1.0)
    assert "(attempt 2)" in text and text.endswith(": connection refused")


def test_failed_task_summary_shows_the_error():
    lines = task_lines(
        {
            "task_id": "t1",
            "status": "FAILURE",
            "message": "Task failed",
            "product_sku": "BRD-001",
            "error": {"type": "insufficient_data", "message": "only 3 days"},
        }
    )
    assert lines[0] == "task t1: FAILURE - Task failed"
    assert "  error        insufficient_data: only 3 days" in lines


def test_event_days_become_one_span_per_event():
    events = [
        (date(2018, 6, 16), "Kieler Woche"),
        (date(2018, 6, 17), "Kieler Woche"),
        (date(2018, 6, 18), "Kieler Woche"),
        (date(2018, 12, 24), "Christmas Eve"),
        (date(2018, 12, 25), "Christmas"),
    ]
    assert event_spans(events) == [
        (date(2018, 6, 16), date(2018, 6, 18), "Kieler Woche"),
        (date(2018, 12, 24), date(2018, 12, 24), "Christmas Eve"),
        (date(2018, 12, 25), date(2018, 12, 25), "Christmas"),
    ]


def test_flags_and_environment_and_json_after_the_command():
    args = parser().parse_args(["predict", "BRD-001", "--days", "30", "--async", "--json"])
    assert (args.sku, args.days, args.async_, args.json) == ("BRD-001", 30, True, True)
    args = parser().parse_args(["--api-url", "http://x", "dlq", "redrive"])
    assert args.api_url == "http://x" and args.action == "redrive"


def test_usage_errors_exit_2():
    err = io.StringIO()
    assert main(["predict"], stdout=io.StringIO(), stderr=err, environ={}) == 2
    assert main(["tasks", "everything"], stdout=io.StringIO(), stderr=err, environ={}) == 2


def test_api_error_json_carries_the_exit_code():
    error = api.ApiError("x", exit_code=api.EXIT_NOT_FOUND, status=404, type="unknown_sku")
    assert error.to_dict() == {
        "error": "x",
        "type": "unknown_sku",
        "status": 404,
        "exit_code": api.EXIT_NOT_FOUND,
    }


@pytest.mark.parametrize(
    ("status", "body", "token", "code", "phrase"),
    [
        (401, {"type": "unauthorized"}, None, api.EXIT_AUTH, "no token"),
        (401, {"type": "unauthorized"}, "t", api.EXIT_AUTH, "refused the token"),
        (403, {"type": "forbidden"}, "t", api.EXIT_AUTH, "admin role"),
        (403, {"message": "Missing Authentication Token"}, "t", 3, "no such route"),
        (404, {"error": "no such route", "type": "not_found"}, "t", 3, "is the API URL right"),
        # LocalStack's answer for an API id that `make down` + `make up` replaced
        (404, {"message": "The API id 'x' does not correspond"}, "t", 3, "token --env"),
        (404, {"error": "unknown SKU 'X'", "type": "unknown_sku"}, "t", 5, "unknown SKU 'X'"),
        (409, {"error": "already finished", "type": "conflict"}, "t", 1, "already finished"),
        (503, {"error": "db down", "type": "database_unavailable"}, "t", 1, "try again"),
    ],
)
def test_http_errors_become_messages_and_exit_codes(status, body, token, code, phrase):
    error = api._error(status, body, api.Client("http://api", token), "GET", "/api/x")
    assert error.exit_code == code and phrase in error.message
    assert json.dumps(error.to_dict())


def test_a_url_without_a_scheme_or_a_timeout_below_a_second_is_a_usage_error(capsys):
    for value in ("-1", "0.5", "nan", "soon"):
        argv = ["status", "x", "--timeout", value]
        assert main(argv, stdout=io.StringIO(), stderr=io.StringIO(), environ={}) == 2
        assert "at least 1" in capsys.readouterr().err  # argparse's own message
    err = io.StringIO()
    assert main(["--api-url", "foo", "tasks", "active"], stdout=io.StringIO(), stderr=err) == 2
    assert "must start with http:// or https://" in err.getvalue()


def test_token_env_without_a_local_stack_says_the_url_is_missing(monkeypatch, tmp_path):
    from siprems_client import cli

    secret = tmp_path / "jwt-secret"
    secret.write_text("k" * 32)
    monkeypatch.setattr(cli, "local_api_url", lambda: None)
    out, err = io.StringIO(), io.StringIO()
    assert main(["token", "--env", "--secret-file", str(secret)], stdout=out, stderr=err) == 0
    assert out.getvalue().startswith("export SIPREMS_TOKEN=") and "SIPREMS_API_URL" not in (
        out.getvalue()
    )
    assert "no local stack is running" in err.getvalue()


def test_the_status_page_link_of_a_plain_token_says_the_page_needs_an_admin():
    from siprems.auth import mint_token

    for role, warned in ((None, True), ("admin", False)):
        token = mint_token("k" * 32, user_id="1", email="a@b.c", role=role)
        out, err = io.StringIO(), io.StringIO()
        argv = ["--api-url", "http://api", "--token", token, "status-page", "--with-token"]
        assert main(argv, stdout=out, stderr=err) == 0
        assert out.getvalue().strip() == f"http://api/api/status#token={token}"
        assert ("admin token only" in err.getvalue()) is warned


def test_tasks_scheduled_says_when_the_nightly_rule_is_switched_off():
    from types import SimpleNamespace

    from siprems_client.cli import Output, cmd_tasks

    for enabled, shown in ((False, "switched off"), (True, "next run 2026-12-01T02:00:00.000Z")):
        nightly = {"schedule": "cron(0 2 * * ? *)", "enabled": enabled}
        nightly["next_run"] = "2026-12-01T02:00:00.000Z" if enabled else None
        client = SimpleNamespace(scheduled=lambda limit, n=nightly: {"tasks": [], "nightly": n})
        out = io.StringIO()
        args = SimpleNamespace(which="scheduled", limit=50)
        assert cmd_tasks(args, client, Output(as_json=False, out=out, err=io.StringIO())) == 0
        assert f"nightly retraining: cron(0 2 * * ? *), {shown}" in out.getvalue()


def test_a_throttled_request_is_sent_again_a_little_later():
    """The API stage answers 429 above its rate, having done nothing: the client waits and
    sends the same request again, a few times, then reports the refusal."""
    from types import SimpleNamespace

    def answer(status, body):
        return SimpleNamespace(status_code=status, content=b"x", json=lambda: body, text="")

    def client_answering(*answers):
        replies, sent, slept = iter(answers), [], []

        def request(*args, **kwargs):
            sent.append(args)
            return next(replies)

        session = SimpleNamespace(request=request)
        return api.Client("http://api", "t", session=session, sleep=slept.append), sent, slept

    throttled = answer(429, {"error": "Too Many Requests", "type": "gateway_refused"})
    client, sent, slept = client_answering(throttled, throttled, answer(200, {"count": 0}))
    assert client.active() == {"count": 0}
    assert slept == [1.0, 2.0] and len(sent) == 3

    client, sent, slept = client_answering(*[throttled] * 4)
    with pytest.raises(api.ApiError) as refused:
        client.active()
    assert refused.value.status == 429 and slept == [1.0, 2.0, 4.0] and len(sent) == 4
