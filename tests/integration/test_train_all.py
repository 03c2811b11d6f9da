"""Training every product: the API route (admin) and the nightly schedule share the
train_all function; children run in the worker; the parent reports their progress."""

from __future__ import annotations

import json

from siprems.jobs.model import child_task_id, scheduled_parent_id

from tests.fixtures.app import api_event, invoke, load_event, response_json

KIEL_SKUS = ["BRD-001", "CKE-001", "CNF-001", "CRS-001", "RLL-001", "SEA-001"]


def status(task_id):
    return invoke("status", api_event("status/task.json", path_parameters={"task_id": task_id}))


def test_training_all_from_the_api_trains_every_product(app):
    response = invoke("submit", api_event("submit/train-all.json"))
    assert response["statusCode"] == 202
    parent_id = response_json(response)["task_id"]
    assert app.invoked == [{"parent_id": parent_id}]  # train_all started asynchronously

    queued = app.receive(visibility=0)
    assert len(queued) == len(KIEL_SKUS)
    children = {child_task_id(parent_id, sku) for sku in KIEL_SKUS}
    assert {m["Body"] for m in queued} == {
        f'{{"product_sku":"{sku}","task_id":"{child_task_id(parent_id, sku)}","type":"train"}}'
        for sku in KIEL_SKUS
    }

    running = status(parent_id)
    assert running["statusCode"] == 202
    assert response_json(running)["progress"] == {
        "total": 6,
        "done": 0,
        "succeeded": 0,
        "failed": 0,
        "revoked": 0,
        "pending": 6,
    }

    # Half of the children run: the parent shows partial progress.
    messages = app.receive(max_messages=3)
    invoke("worker", app.sqs_event(messages))
    for m in messages:
        app.sqs.delete_message(QueueUrl=app.queue_url, ReceiptHandle=m["ReceiptHandle"])
    partial = response_json(status(parent_id))
    assert partial["status"] == "STARTED"
    assert partial["progress"]["done"] == 3 and partial["progress"]["pending"] == 3

    app.drain()
    done = status(parent_id)
    assert done["statusCode"] == 200
    body = response_json(done)
    assert body["status"] == "SUCCESS"
    assert body["progress"] == {
        "total": 6,
        "done": 6,
        "succeeded": 6,
        "failed": 0,
        "revoked": 0,
        "pending": 0,
    }
    for child in children:
        assert app.services.store.get(child).status.value == "SUCCESS"
    for sku in KIEL_SKUS:
        assert app.services.models.load_metadata(sku)["sku"] == sku


def test_nightly_schedule_is_idempotent(app):
    event = load_event("train_all/schedule.json")
    first = invoke("train_all", event)
    parent_id = scheduled_parent_id(event["time"])
    assert first == {
        "parent_id": parent_id,
        "status": "STARTED",
        "total": 6,
        "created": 6,
        "queued": 6,
    }
    items_before = len(app.items())

    # EventBridge/Lambda deliver the same event again: nothing new is created; the children
    # still waiting are queued again (the worker acknowledges duplicates without work).
    again = invoke("train_all", event)
    assert again["parent_id"] == parent_id and again["created"] == 0
    assert len(app.items()) == items_before == 7

    app.drain()
    parent = app.services.store.get(parent_id)
    assert parent.status.value == "SUCCESS"
    assert parent.children.succeeded == 6
    assert parent.requested_by == "schedule"
    # One model version per product despite the duplicate messages.
    for sku in KIEL_SKUS:
        key = f"models/{sku}/model.json"
        versions = app.s3.list_object_versions(Bucket=app.bucket, Prefix=key)["Versions"]
        assert len(versions) == 1, sku


def test_a_finished_parent_is_not_fanned_out_again(app):
    event = load_event("train_all/schedule.json")
    invoke("train_all", event)
    parent_id = scheduled_parent_id(event["time"])
    invoke("status", api_event("status/cancel.json", path_parameters={"task_id": parent_id}))
    for m in app.receive():
        app.sqs.delete_message(QueueUrl=app.queue_url, ReceiptHandle=m["ReceiptHandle"])
    again = invoke("train_all", event)
    assert again["status"] == "REVOKED" and again["queued"] == 0
    assert app.receive(visibility=0) == []


def test_cancelling_the_parent_revokes_the_waiting_children(app):
    response = invoke("submit", api_event("submit/train-all.json"))
    parent_id = response_json(response)["task_id"]
    cancel = invoke(
        "status", api_event("status/cancel.json", path_parameters={"task_id": parent_id})
    )
    assert cancel["statusCode"] == 200
    app.drain()
    for sku in KIEL_SKUS:
        child = app.services.store.get(child_task_id(parent_id, sku))
        assert child.status.value == "REVOKED"
    parent = response_json(status(parent_id))
    assert parent["status"] == "REVOKED"
    assert parent["progress"]["revoked"] == 6
    assert app.s3.list_objects_v2(Bucket=app.bucket).get("KeyCount", 0) == 0


def test_training_all_event_without_parent_or_schedule_is_refused(app):
    import pytest
    from siprems.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        invoke("train_all", {"hello": "world"})


def test_fan_out_queues_each_child_once_and_a_rerun_only_those_still_waiting(app):
    """Children are written and queued in batches from threads: each exactly once."""
    from datetime import timedelta

    from siprems.jobs.fanout import train_all
    from siprems.jobs.model import Job, JobType

    from bench.perf_enqueue import DerivedSkus

    services = app.services
    services.sales = DerivedSkus(23)  # three SQS batches, the last one partial
    parent = Job.new(JobType.TRAIN_ALL)
    services.store.create(parent)
    expected = {child_task_id(parent.task_id, f"DRV-{i:05d}") for i in range(23)}

    def queued_ids():
        ids = []
        while messages := app.receive():
            ids += [json.loads(m["Body"])["task_id"] for m in messages]
        return ids

    first = train_all(services, parent.task_id)
    assert (first.total, first.created, first.queued) == (23, 23, 23)
    ids = queued_ids()
    assert len(ids) == 23 and set(ids) == expected

    running, finished = sorted(expected)[:2]
    services.store.mark_started(running, stale_after=timedelta(minutes=5))
    started = services.store.mark_started(finished, stale_after=timedelta(minutes=5)).job
    services.store.mark_succeeded(started, result_key="models/x")
    again = train_all(services, parent.task_id)
    assert (again.created, again.queued) == (0, 21)
    assert sorted(queued_ids()) == sorted(expected - {running, finished})
    assert len(app.items()) == 24
