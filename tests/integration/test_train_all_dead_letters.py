"""A train_all run whose asynchronous invocation failed on every attempt: Lambda puts its
payload in the jobs DLQ (with the error as message attributes), the admin view shows it as a
train_all trigger, and the redrive brings it to the jobs queue, where the worker invokes
train_all again with the same payload (moto for AWS; train_all runs in-process)."""

from __future__ import annotations

import json

import pytest
from siprems.jobs.model import Job, JobType, scheduled_parent_id

from tests.fixtures.app import ADMIN_CALLER, api_event, invoke, load_event, response_json

KIEL_SKUS = 6


def dead_letter_as_lambda_does(app, payload, error="Task timed out after 120.00 seconds"):
    """What Lambda sends to a function's DLQ once every attempt of an event failed: the
    payload as the body, the error in message attributes."""
    app.sqs.send_message(
        QueueUrl=app.dlq_url,
        MessageBody=json.dumps(payload),
        MessageAttributes={
            "RequestID": {"DataType": "String", "StringValue": "4f1d5c1e-req"},
            "ErrorCode": {"DataType": "Number", "StringValue": "200"},
            "ErrorMessage": {"DataType": "String", "StringValue": error},
        },
    )


def pending_api_parent(app) -> str:
    """A training-all parent the API recorded PENDING whose train_all never ran."""
    parent = Job.new(JobType.TRAIN_ALL, requested_by="admin")
    app.services.store.create(parent)
    return parent.task_id


def queued_children(app) -> list[str]:
    return [json.loads(m["Body"])["task_id"] for m in app.receive(visibility=0)]


def test_the_dlq_view_shows_a_train_all_trigger_with_its_parent_and_lambdas_error(app):
    parent_id = pending_api_parent(app)
    schedule = load_event("train_all/schedule.json")
    dead_letter_as_lambda_does(app, {"parent_id": parent_id})
    dead_letter_as_lambda_does(app, schedule, error="database unavailable")
    app.sqs.send_message(QueueUrl=app.dlq_url, MessageBody='{"task_id": "lost-one"}')

    view = invoke("status", api_event("status/dlq.json"))
    assert view["statusCode"] == 200
    messages = response_json(view)["messages"]
    by_kind = {}
    for message in messages:
        by_kind.setdefault(message["kind"], []).append(message)
    assert sorted(by_kind) == ["job", "train_all"]
    assert by_kind["job"][0]["error"] is None  # SQS moved it: no Lambda error attached
    triggers = {m["train_all"]["parent_id"]: m for m in by_kind["train_all"]}
    api = triggers[parent_id]
    assert api["train_all"] == {"parent_id": parent_id, "scheduled_time": None}
    assert api["body"] == {"parent_id": parent_id}
    assert api["error"] == {
        "message": "Task timed out after 120.00 seconds",
        "code": "200",
        "request_id": "4f1d5c1e-req",
    }
    nightly = triggers[scheduled_parent_id(schedule["time"])]
    assert nightly["train_all"]["scheduled_time"] == schedule["time"]
    assert nightly["error"]["message"] == "database unavailable"


@pytest.mark.parametrize("trigger", ["api", "schedule"])
def test_a_redriven_trigger_invokes_train_all_once_with_its_payload_and_is_safe_twice(app, trigger):
    if trigger == "api":
        payload = {"parent_id": pending_api_parent(app)}
        parent_id = payload["parent_id"]
    else:
        payload = load_event("train_all/schedule.json")
        parent_id = scheduled_parent_id(payload["time"])
    dead_letter_as_lambda_does(app, payload)
    assert app.redrive_dead_letters() == 1

    [message] = app.receive()
    event = app.sqs_event([message])
    assert invoke("worker", event) == {"batchItemFailures": []}  # acknowledged
    assert app.invoked == [payload]  # train_all invoked again, with the same payload
    parent = app.services.store.get(parent_id)
    assert parent.status.value == "STARTED"
    app.sqs.delete_message(QueueUrl=app.queue_url, ReceiptHandle=message["ReceiptHandle"])
    children = queued_children(app)
    assert len(children) == len(set(children)) == KIEL_SKUS
    items = len(app.items())

    # The same delivery handled twice: train_all runs again on the same parent and, its
    # fan-out done, creates and queues nothing.
    assert invoke("worker", event) == {"batchItemFailures": []}
    assert app.invoked == [payload, payload]
    assert len(app.items()) == items == 1 + KIEL_SKUS + 1  # parent, children, SKU list shard
    assert queued_children(app) == children


def test_a_stale_trigger_of_a_finished_parent_runs_nothing(app):
    parent_id = pending_api_parent(app)
    cancel = api_event(
        "status/cancel.json", path_parameters={"task_id": parent_id}, caller=ADMIN_CALLER
    )
    assert invoke("status", cancel)["statusCode"] == 200
    dead_letter_as_lambda_does(app, {"parent_id": parent_id})
    app.redrive_dead_letters()

    assert app.run_worker() == {"batchItemFailures": []}
    assert app.invoked == [{"parent_id": parent_id}]
    assert app.services.store.get(parent_id).status.value == "REVOKED"
    assert app.receive(visibility=0) == []  # no child created or queued
    assert len(app.items()) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"parent_id": ""},
        {"parent_id": 7},
        {"detail-type": "Scheduled Event"},  # no time: no parent to derive
        {"detail-type": "Object Created", "time": "2026-11-29T02:00:00Z"},
    ],
)
def test_a_body_that_is_neither_a_job_nor_a_trigger_still_fails_as_before(app, body):
    app.sqs.send_message(QueueUrl=app.queue_url, MessageBody=json.dumps(body))
    [message] = app.receive()
    response = invoke("worker", app.sqs_event([message]))
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert app.invoked == []
    assert app.items() == []


def test_a_trigger_whose_invoke_fails_stays_in_the_queue(app, monkeypatch):
    from siprems.jobs.services import InvokeFailedError

    parent_id = pending_api_parent(app)

    def refuse(payload):
        raise InvokeFailedError("could not start siprems-train-all-test: TooManyRequests")

    monkeypatch.setattr(app.services.invoker, "invoke", refuse)
    app.sqs.send_message(QueueUrl=app.queue_url, MessageBody=json.dumps({"parent_id": parent_id}))
    [message] = app.receive()
    response = invoke("worker", app.sqs_event([message]))
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert app.services.store.get(parent_id).status.value == "PENDING"
