"""The API functions (submit, status) driven by the sample events: every bad input is a 4xx
with {"error": ...} that writes nothing; status, lists, cancel, admin routes, OpenAPI."""

from __future__ import annotations

import pytest

from tests.fixtures.app import api_event, invoke, response_json


def assert_nothing_written(app):
    assert app.items() == []
    assert app.receive(visibility=0) == []


@pytest.mark.parametrize(
    ("event", "status", "type_"),
    [
        ("submit/predict-async-days-0.json", 422, "invalid_input"),
        ("submit/predict-async-days-366.json", 422, "invalid_input"),
        ("submit/predict-async-days-string.json", 422, "invalid_input"),
        ("submit/predict-async-missing-sku.json", 422, "invalid_input"),
        ("submit/predict-async-malformed-json.json", 400, "invalid_json"),
        ("submit/predict-async-unknown-sku.json", 404, "unknown_sku"),
        ("submit/train-product-unknown-sku.json", 404, "unknown_sku"),
        ("submit/predict-async-no-authorizer.json", 401, "unauthorized"),
        ("submit/train-all-non-admin.json", 403, "forbidden"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(app, event, status, type_):
    response = invoke("submit", api_event(event))
    assert response["statusCode"] == status, response["body"]
    body = response_json(response)
    assert body["type"] == type_
    assert isinstance(body["error"], str) and body["error"]
    assert_nothing_written(app)


def test_days_errors_name_the_field(app):
    body = response_json(invoke("submit", api_event("submit/predict-async-days-366.json")))
    assert "days" in body["error"]


def test_train_product_is_queued(app):
    response = invoke("submit", api_event("submit/train-product.json"))
    assert response["statusCode"] == 202
    body = response_json(response)
    assert body["status"] == "submitted" and body["product_sku"] == "BRD-001"
    [item] = app.items()
    assert item["type"] == "train" and item["status"] == "PENDING"
    assert item["requested_by"] == "42"
    [message] = app.receive(visibility=0)
    assert body["task_id"] in message["Body"]


def test_unknown_task_is_404_and_bad_id_is_refused(app):
    unknown = invoke(
        "status",
        api_event(
            "status/task.json", path_parameters={"task_id": "0b7c1d1e-0000-4000-8000-000000000000"}
        ),
    )
    assert unknown["statusCode"] == 404
    assert response_json(unknown)["type"] == "not_found"
    bad = invoke("status", api_event("status/task.json", path_parameters={"task_id": "%20;drop"}))
    assert bad["statusCode"] == 422


def submit_predict(app) -> str:
    response = invoke("submit", api_event("submit/predict-async.json"))
    assert response["statusCode"] == 202
    return response_json(response)["task_id"]


def test_cancel_revokes_once_then_conflicts(app):
    task_id = submit_predict(app)
    cancel = api_event("status/cancel.json", path_parameters={"task_id": task_id})
    first = invoke("status", cancel)
    assert first["statusCode"] == 200
    assert response_json(first) == {"task_id": task_id, "status": "REVOKED"}
    second = invoke("status", cancel)
    assert second["statusCode"] == 409
    assert response_json(second)["type"] == "conflict"

    # The queued message is acknowledged without work.
    assert app.run_worker() == {"batchItemFailures": []}
    status = invoke("status", api_event("status/task.json", path_parameters={"task_id": task_id}))
    assert status["statusCode"] == 200
    assert response_json(status)["status"] == "REVOKED"
    assert "result" not in response_json(status)


def test_cancel_of_a_finished_job_is_409(app):
    task_id = submit_predict(app)
    app.run_worker()
    response = invoke(
        "status", api_event("status/cancel.json", path_parameters={"task_id": task_id})
    )
    assert response["statusCode"] == 409
    status = invoke("status", api_event("status/task.json", path_parameters={"task_id": task_id}))
    assert response_json(status)["status"] == "SUCCESS"


def test_a_job_past_its_expiry_is_gone_before_dynamodb_deletes_it(app):
    """DynamoDB's TTL deletes an expired item up to days later, and a large result in S3
    expires with the job (the bucket's rule): past ``expires_at`` a task is a 404."""
    task_id = submit_predict(app)
    app.run_worker()
    task = api_event("status/task.json", path_parameters={"task_id": task_id})
    assert invoke("status", task)["statusCode"] == 200
    app.dynamodb.Table(app.table_name).update_item(
        Key={"task_id": task_id},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": 1_700_000_000},
    )
    gone = invoke("status", task)
    assert gone["statusCode"] == 404 and response_json(gone)["type"] == "not_found"
    cancel = api_event("status/cancel.json", path_parameters={"task_id": task_id})
    assert invoke("status", cancel)["statusCode"] == 404


def test_active_and_scheduled_lists(app):
    from datetime import timedelta

    from siprems.jobs.model import JobError

    queued = submit_predict(app)
    running = submit_predict(app)
    retrying = submit_predict(app)
    store = app.services.store
    store.mark_started(running, stale_after=timedelta(seconds=60))
    store.mark_started(retrying, stale_after=timedelta(seconds=60))
    store.mark_retry(retrying, attempt=1, error=JobError(type="database_unavailable", message="x"))

    active = response_json(invoke("status", api_event("status/active.json")))
    assert [t["task_id"] for t in active["tasks"]] == [running]
    assert active["tasks"][0]["status"] == "STARTED"
    assert active["active_tasks"] == active["tasks"]  # the original API's key

    scheduled = response_json(invoke("status", api_event("status/scheduled.json")))
    assert {t["task_id"]: t["status"] for t in scheduled["tasks"]} == {
        queued: "PENDING",
        retrying: "RETRY",
    }
    assert scheduled["scheduled_tasks"] == scheduled["tasks"]  # the original API's key
    # a limit holds across both statuses: the newest waiting job (the RETRY one)
    event = api_event("status/scheduled.json")
    event["queryStringParameters"] = {"limit": "1"}
    one = response_json(invoke("status", event))
    assert [t["task_id"] for t in one["tasks"]] == [retrying] and one["count"] == 1
    assert scheduled["nightly"]["schedule"] == "cron(0 2 * * ? *)"
    assert scheduled["nightly"]["next_run"].endswith("T02:00:00.000Z")
    assert scheduled["queue"]["visible"] == 3


def test_a_switched_off_nightly_rule_shows_no_next_run(app, monkeypatch):
    """NightlyScheduleEnabled false: the rule is DISABLED, and the status routes say so
    instead of announcing a run that will not come."""
    from siprems.config import load_settings
    from siprems.jobs.services import get_services

    monkeypatch.setenv("NIGHTLY_ENABLED", "false")
    load_settings.cache_clear()
    get_services.cache_clear()
    off = {"schedule": "cron(0 2 * * ? *)", "enabled": False, "next_run": None}
    scheduled = response_json(invoke("status", api_event("status/scheduled.json")))
    assert scheduled["nightly"] == off
    overview = invoke("status", api_event("status/status-data.json"))
    assert response_json(overview)["nightly"] == off


def test_an_unusable_nightly_schedule_is_a_server_error_not_the_clients(app, monkeypatch):
    from siprems.config import load_settings
    from siprems.jobs.services import get_services

    monkeypatch.setenv("NIGHTLY_SCHEDULE", "every night")
    load_settings.cache_clear()
    get_services.cache_clear()
    response = invoke("status", api_event("status/scheduled.json"))
    assert response["statusCode"] == 500
    assert response_json(response)["type"] == "configuration_error"


def test_admin_dlq_view_and_redrive_need_the_admin_role(app):
    forbidden = invoke("status", api_event("status/dlq-non-admin.json"))
    assert forbidden["statusCode"] == 403
    app.sqs.send_message(QueueUrl=app.dlq_url, MessageBody='{"task_id": "lost-one"}')
    view = invoke("status", api_event("status/dlq.json"))
    assert view["statusCode"] == 200
    body = response_json(view)
    assert [m["body"] for m in body["messages"]] == [{"task_id": "lost-one"}]
    assert body["queue"]["visible"] == 1


def test_redrive_starts_a_move_task_from_the_dlq_to_the_jobs_queue(app):
    """moto does not implement StartMessageMoveTask: the route runs for real down to the SQS
    client, whose calls are answered by a Stubber (LocalStack runs the real move). The jobs
    queue is named as the destination: what Lambda dead-lettered has no source queue."""
    from botocore.stub import Stubber

    dlq = app.services.dead_letters
    arn = "arn:aws:sqs:us-east-1:123456789012:siprems-jobs-dlq-test"
    jobs_arn = "arn:aws:sqs:us-east-1:123456789012:siprems-jobs-test"
    with Stubber(dlq._sqs) as stub:
        stub.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": jobs_arn}},
            {"QueueUrl": app.queue_url, "AttributeNames": ["QueueArn"]},
        )
        stub.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": arn}},
            {"QueueUrl": app.dlq_url, "AttributeNames": ["QueueArn"]},
        )
        stub.add_response(
            "start_message_move_task",
            {"TaskHandle": "move-1"},
            {"SourceArn": arn, "DestinationArn": jobs_arn},
        )
        response = invoke("status", api_event("status/dlq-redrive.json"))
        stub.assert_no_pending_responses()
    assert response["statusCode"] == 202
    assert response_json(response) == {"task_handle": "move-1", "status": "started"}


def test_openapi_document_covers_both_functions(app):
    response = invoke("status", api_event("status/openapi.json"))
    assert response["statusCode"] == 200
    paths = response_json(response)["paths"]
    assert "/api/predict/async" in paths and "/api/tasks/{task_id}" in paths
    assert "/api/admin/dlq/redrive" in paths
    schema = response_json(response)["components"]["schemas"]["PredictRequest"]
    number, text = schema["properties"]["days"]["anyOf"]
    assert number == {"type": "integer", "minimum": 1, "maximum": 365}
    assert text["type"] == "string" and text["pattern"]


def test_unknown_route_is_a_json_404(app):
    event = api_event("status/active.json")
    event["path"] = "/api/nothing-here"
    response = invoke("status", event)
    assert response["statusCode"] == 404
    assert response_json(response)["type"] == "not_found"


def test_training_all_invokes_train_all_asynchronously():
    """The real adapter's call, checked at the boto3 boundary (moto runs no Lambda code)."""
    import json

    import boto3
    from botocore.stub import Stubber
    from siprems.jobs.services import AsyncInvoker, InvokeFailedError

    client = boto3.client("lambda", region_name="us-east-1")
    invoker = AsyncInvoker(client, "siprems-train-all")
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {
                "FunctionName": "siprems-train-all",
                "InvocationType": "Event",
                "Payload": json.dumps({"parent_id": "p-1"}).encode(),
            },
        )
        invoker.invoke({"parent_id": "p-1"})
        stub.add_client_error("invoke", "TooManyRequestsException", http_status_code=429)
        with pytest.raises(InvokeFailedError):
            invoker.invoke({"parent_id": "p-2"})


def test_training_all_that_cannot_start_records_nothing_and_answers_503(app, monkeypatch):
    """train_all is invoked before its parent is recorded: an invoke that fails (here one
    that hung until its read timeout) leaves no parent that nothing would run."""
    from botocore.exceptions import ReadTimeoutError

    def hung(**kwargs):
        raise ReadTimeoutError(endpoint_url="http://lambda")

    monkeypatch.setattr(app.services.invoker._lambda, "invoke", hung)
    response = invoke("submit", api_event("submit/train-all.json"))
    assert response["statusCode"] == 503
    assert response_json(response)["type"] == "invoke_failed"
    assert app.invoked == []
    assert_nothing_written(app)


@pytest.mark.parametrize("history_days", [-1, 36501, "ALL", "60", True, 1.5])
def test_a_bad_history_window_is_refused_and_changes_nothing(app, history_days):
    body = {"product_sku": "BRD-001", "days": 7, "history_days": history_days}
    response = invoke("submit", api_event("submit/predict-async.json", body=body))
    assert response["statusCode"] == 422, response["body"]
    assert "history_days" in response_json(response)["error"]
    assert_nothing_written(app)


def test_the_forecast_answers_the_history_window_asked_for(app):
    """chartData holds the last 60 days of sales by default (a small answer), none with
    ``history_days`` 0, and the whole history with "all" (a large answer, kept in S3)."""
    asked = {"default": None, "none": 0, "all": "all"}
    task_ids = {}
    for name, history_days in asked.items():
        body = {"product_sku": "BRD-001", "days": 7}
        if history_days is not None:
            body["history_days"] = history_days
        response = invoke("submit", api_event("submit/predict-async.json", body=body))
        assert response["statusCode"] == 202, response["body"]
        task_ids[name] = response_json(response)["task_id"]
    app.drain()

    history = {}
    for name, task_id in task_ids.items():
        status = invoke(
            "status", api_event("status/task.json", path_parameters={"task_id": task_id})
        )
        result = response_json(status)["result"]
        history[name] = [row for row in result["chartData"] if row["historical"] is not None]
        assert len(result["chartData"]) - len(history[name]) == 7
    assert 50 <= len(history["default"]) <= 60 and history["none"] == []
    assert len(history["all"]) > 1_500  # BRD-001 sold on about 1,800 days
    assert history["all"][-len(history["default"]) :] == history["default"]
    job = app.services.store.get(task_ids["all"])
    assert job.result_key is not None and job.params["history_days"] == "all"


def test_content_types_are_case_insensitive_and_a_form_body_is_415(app):
    """Found in a review: "APPLICATION/JSON" was refused as unsupported (415) although media
    types are case-insensitive, and a form body (curl -d without -H, carrying JSON or
    fields) was parsed as a form: 422 "field required" for the JSON one, a job for the
    other. Now JSON in any case is JSON, and a form body is 415 saying what to send."""

    def submit_as(content_type, body):
        event = api_event("submit/predict-async.json")
        event["headers"] = {**event["headers"], "Content-Type": content_type}
        event["multiValueHeaders"] = {
            **event.get("multiValueHeaders", {}),
            "Content-Type": [content_type],
        }
        event["body"] = body
        return invoke("submit", event)

    form = "application/x-www-form-urlencoded"
    for body in ('{"product_sku": "BRD-001", "days": 7}', "product_sku=BRD-001&days=7"):
        refused = submit_as(form, body)
        assert refused["statusCode"] == 415, refused["body"]
        assert response_json(refused)["type"] == "unsupported_media_type"
        assert "application/json" in response_json(refused)["error"]
    assert_nothing_written(app)

    accepted = submit_as("APPLICATION/JSON; charset=UTF-8", '{"product_sku": "BRD-001"}')
    assert accepted["statusCode"] == 202, accepted["body"]


def test_a_job_waiting_for_its_retry_can_be_cancelled(app):
    from datetime import timedelta

    from siprems.jobs.model import JobError

    task_id = submit_predict(app)
    store = app.services.store
    store.mark_started(task_id, stale_after=timedelta(seconds=60))
    store.mark_retry(task_id, attempt=1, error=JobError(type="database_unavailable", message="x"))
    cancel = api_event("status/cancel.json", path_parameters={"task_id": task_id})
    response = invoke("status", cancel)
    assert response["statusCode"] == 200, response["body"]
    assert store.get(task_id).status.value == "REVOKED"


def test_a_job_that_cannot_be_queued_is_not_recorded_and_answers_503(app, monkeypatch):
    """A job is queued before it is recorded: when SQS does not answer (a call that hung
    until its read timeout) the client gets a 503 and nothing is left, no PENDING job that
    nothing would run."""
    from botocore.exceptions import ReadTimeoutError

    def hung(**kwargs):
        raise ReadTimeoutError(endpoint_url=app.queue_url)

    monkeypatch.setattr(app.services.queue._sqs, "send_message", hung)
    response = invoke("submit", api_event("submit/predict-async.json"))
    assert response["statusCode"] == 503
    assert response_json(response)["type"] == "queue_unavailable"
    assert_nothing_written(app)
