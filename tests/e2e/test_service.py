"""The service end to end: template.yaml deployed into the local stack, called through its
API Gateway URL with real tokens, Prophet fits on the Kiel bakery data in the worker, sales from
the embedded PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scripts import stack
from tests.e2e.conftest import Service, http, wait_for, wait_task


# -- auth and bad input -------------------------------------------------------------------------
def test_no_token_is_401(service):
    assert http("GET", f"{service.base}/api/tasks/active").status == 401


def test_token_signed_with_another_key_is_401(service):
    from siprems.auth import mint_token

    forged = mint_token("not-the-key-" * 4, user_id=7, email="x@example.com")
    assert http("GET", f"{service.base}/api/tasks/active", token=forged).status == 401


def test_expired_token_is_401(service):
    from siprems.auth import mint_token

    expired = mint_token(
        service.secret, user_id=7, email="x@example.com", ttl=timedelta(seconds=-60)
    )
    assert http("GET", f"{service.base}/api/tasks/active", token=expired).status == 401


def test_admin_route_with_a_user_token_is_403(service):
    answer = http("GET", f"{service.base}/api/admin/dlq", token=service.user_token)
    assert answer.status == 403


@pytest.mark.parametrize(
    "body",
    [
        {"product_sku": "BRD-001", "days": 0},
        {"product_sku": "BRD-001", "days": 366},
        {"days": 7},
        {"product_sku": "NOPE-999", "days": 7},
    ],
)
def test_bad_input_is_4xx_with_an_error_and_queues_nothing(service, body):
    answer = http("POST", f"{service.base}/api/predict/async", token=service.user_token, body=body)
    assert 400 <= answer.status < 500, answer.body
    assert "error" in answer.body
    assert "task_id" not in answer.body


def test_malformed_json_is_400(service):
    answer = http(
        "POST", f"{service.base}/api/predict/async", token=service.user_token, raw_body=b"{not json"
    )
    assert 400 <= answer.status < 500


def test_unknown_task_is_404(service):
    answer = http("GET", f"{service.base}/api/tasks/{uuid.uuid4()}", token=service.user_token)
    assert answer.status == 404


def test_a_route_that_does_not_exist_is_a_json_404_a_browser_can_read(service):
    """API Gateway answers it before any function runs: the template's gateway response (the
    error body, CORS), not its own 403 "Missing Authentication Token"; also a method a
    route does not have."""
    for method, path in (("GET", "/api/nothing-here"), ("DELETE", "/api/tasks/active")):
        answer = http(method, f"{service.base}{path}", token=service.user_token)
        assert answer.status == 404, (method, path, answer.body)
        assert answer.body == {"error": "no such route", "type": "not_found"}
        assert answer.headers.get("Access-Control-Allow-Origin") == "*"


# -- forecasts and training ---------------------------------------------------------------------
def test_days_as_text_and_the_whole_history_on_request(service):
    """The original API's clients may send days as text; "history_days": "all" answers the
    whole history in chartData (a large result, kept in S3 and read back by the status)."""
    answer = http(
        "POST",
        f"{service.base}/api/predict/async",
        token=service.user_token,
        body={"product_sku": "CKE-001", "days": "14", "history_days": "all"},
    )
    assert answer.status == 202, answer.body
    assert answer.body["forecast_days"] == 14
    done = wait_task(service, answer.body["task_id"])
    assert done["status"] == "SUCCESS", done
    chart = done["result"]["chartData"]
    assert len([row for row in chart if row["historical"] is None]) == 14
    assert len(chart) - 14 > 1_000


def test_async_predict_30_days(service):
    answer = http(
        "POST",
        f"{service.base}/api/predict/async",
        token=service.user_token,
        body={"product_sku": "BRD-001", "days": 30},
    )
    assert answer.status == 202, answer.body
    assert answer.body["status"] == "submitted"
    task = wait_task(service, answer.body["task_id"])
    assert task["status"] == "SUCCESS", task
    result = task["result"]
    future = [row for row in result["chartData"] if row.get("historical") is None]
    assert len(future) == 30
    assert all(row["predicted"] is not None for row in future)
    assert len(result["quantiles"]) == 30
    assert result["recommendations"][0]["recommendedRestock"] >= 0
    assert 0 <= result["accuracy"] <= 100


def test_sync_predict_answers_with_the_forecast(service):
    answer = http(
        "POST",
        f"{service.base}/api/predict",
        token=service.user_token,
        body={"product_sku": "RLL-001", "days": 7},
    )
    assert answer.status in (200, 202), answer.body
    if answer.status == 202:  # not done within the sync bound: the task finishes anyway
        result = wait_task(service, answer.body["task_id"])["result"]
    else:
        result = answer.body
    assert len([r for r in result["chartData"] if r.get("historical") is None]) == 7
    assert result["recommendations"]


def test_train_one_product(service):
    answer = http(
        "POST", f"{service.base}/api/tasks/training/product/CRS-001", token=service.user_token
    )
    assert answer.status == 202, answer.body
    task = wait_task(service, answer.body["task_id"])
    assert task["status"] == "SUCCESS", task
    assert task["type"] == "train"


def test_train_unknown_product_is_404(service):
    answer = http(
        "POST", f"{service.base}/api/tasks/training/product/NOPE-999", token=service.user_token
    )
    assert answer.status == 404


def test_cancel_a_queued_task_then_cancel_again_is_409(service):
    for _ in range(3):  # the worker may win the race and finish first: then try again
        submitted = http(
            "POST",
            f"{service.base}/api/predict/async",
            token=service.user_token,
            body={"product_sku": "CKE-001", "days": 14},
        )
        task_id = submitted.body["task_id"]
        cancelled = http(
            "POST", f"{service.base}/api/tasks/{task_id}/cancel", token=service.user_token
        )
        if cancelled.status == 200:
            break
        assert cancelled.status == 409
    assert cancelled.body == {"task_id": task_id, "status": "REVOKED"}
    assert wait_task(service, task_id)["status"] == "REVOKED"
    again = http("POST", f"{service.base}/api/tasks/{task_id}/cancel", token=service.user_token)
    assert again.status == 409


# -- the nightly rule, fired by EventBridge -----------------------------------------------------
def test_schedule_fires_train_all_which_trains_every_product(service):
    table = stack.client("dynamodb")

    def scheduled_parents():
        items = table.scan(
            TableName=service.outputs["JobsTableName"],
            FilterExpression="#t = :t",
            ExpressionAttributeNames={"#t": "type"},
            ExpressionAttributeValues={":t": {"S": "train_all"}},
        )["Items"]
        # the rule fires every minute from the deploy on: a run fired before this test may
        # have been cancelled, or a child of it, by another (the admin fuzzer cancels what
        # the listings show); only runs fired since this test began count
        return [
            item["task_id"]["S"]
            for item in items
            if item.get("requested_by", {}).get("S") == "schedule"
            and item["created_at"]["S"] >= began
        ]

    began = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    events = stack.client("events")
    rules = [
        rule["Name"]
        for rule in events.list_rules()["Rules"]
        if rule["Name"].startswith(stack_prefix(service))
    ]
    assert rules, "the template's schedule rule is missing"
    for rule in rules:  # a previous run may have disabled it
        events.enable_rule(Name=rule)

    try:
        parents = wait_for(
            scheduled_parents, 150, interval_s=3, what="a train_all started by the schedule"
        )
        task = wait_task(service, parents[0], timeout_s=140)  # within the 300 s test timeout
    finally:
        # Once is enough: stop the per-minute rule so it does not load the machine.
        for rule in rules:
            events.disable_rule(Name=rule)
    assert task["status"] == "SUCCESS", task
    assert task["progress"]["total"] == 6
    assert task["progress"]["succeeded"] == 6


def stack_prefix(service: Service) -> str:
    return service.outputs["JobsTableName"].split("-JobsTable")[0]


# -- a failing job message: DLQ, then back by redrive -------------------------------------------
def test_poison_message_goes_to_the_dlq_and_comes_back_by_redrive(service):
    sqs = stack.client("sqs")
    queue_url = service.outputs["JobsQueueUrl"]
    visibility = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
    original = visibility["Attributes"]["VisibilityTimeout"]
    body = json.dumps({"not_a_job": uuid.uuid4().hex})
    # The worker keeps a failed message invisible for the queue's visibility timeout (minutes):
    # shortened for this test so maxReceiveCount is reached in seconds.
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "2"})
    admin = service.admin_token
    # Only this message in the DLQ: the view shows at most 10, and the redrive moves them all.
    # Others may be there: nightly runs (this stack's rule fires every minute) that failed on
    # every attempt while another test had PostgreSQL stopped are dead-lettered too.
    sqs.purge_queue(QueueUrl=service.outputs["JobsDeadLetterQueueUrl"])

    def in_dlq():
        answer = http("GET", f"{service.base}/api/admin/dlq", token=admin)
        assert answer.status == 200, answer.body
        # The view shows a JSON body parsed.
        return any(m.get("body") in (body, json.loads(body)) for m in answer.body["messages"])

    try:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
        wait_for(in_dlq, 120, interval_s=2, what="the poison message in the DLQ")
        redrive = http("POST", f"{service.base}/api/admin/dlq/redrive", token=admin)
        assert redrive.status == 202, redrive.body
        dlq_arn = sqs.get_queue_attributes(
            QueueUrl=service.outputs["JobsDeadLetterQueueUrl"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]

        def moved():
            tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
            return any(
                t["Status"] == "COMPLETED" and t["ApproximateNumberOfMessagesMoved"] >= 1
                for t in tasks
            )

        wait_for(moved, 60, what="the redrive to complete")
        # Back in the jobs queue, delivered to the worker again, still poison: dead-lettered again.
        time.sleep(1)
        wait_for(in_dlq, 120, interval_s=2, what="the redriven message back in the DLQ")
    finally:
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": original})
