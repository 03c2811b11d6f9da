"""Duplicate deliveries on the running local stack: a run of 50 jobs where every SQS message is
delivered twice (each message sent a second time with the same body) leaves the same trace as
the same run without duplicates.

The service keeps no history of state transitions, so what is counted is what it records:
- the job items and their ``attempts`` (each PENDING/RETRY -> STARTED claim adds one), and the
  result each item holds (written with its SUCCESS transition, a conditional write that only the
  claim's own run can make: no S3 result object is written for these small results);
- the S3 object versions of each trained product's model (``models/{sku}/model.json``; the
  bucket is versioned, so a second run of a training would leave a second version);
- the worker's log lines in CloudWatch Logs (through LocalStack): "job started" and "job
  succeeded" per task id, and "acknowledged without work" for a duplicate.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from scripts import stack
from tests.e2e.conftest import (
    KIEL_SKUS,
    Service,
    model_versions,
    set_worker_mapping,
    submit_predict,
    submit_train,
    wait_for,
    wait_task,
)

JOBS = 50
TRAINS = 5  # of the 50: the rest are forecasts from the stored models


def result_objects(service: Service, task_ids: list[str]) -> Counter:
    """Number of S3 versions of each job's result object (results too large for the item)."""
    s3 = stack.client("s3")
    counts: Counter = Counter()
    paginator = s3.get_paginator("list_object_versions")
    wanted = {f"forecasts/{task_id}.json": task_id for task_id in task_ids}
    for page in paginator.paginate(Bucket=service.outputs["ModelsBucketName"], Prefix="forecasts/"):
        for version in page.get("Versions", []):
            if version["Key"] in wanted:
                counts[wanted[version["Key"]]] += 1
    return counts


def worker_log_lines(service: Service, task_ids: set[str], since_ms: int) -> Counter:
    """(message, task_id) -> how many of the worker's log lines say it (CloudWatch Logs)."""
    import json

    logs = stack.client("logs")
    group = f"/aws/lambda/{service.outputs['WorkerFunctionName']}"
    counts: Counter = Counter()
    paginator = logs.get_paginator("filter_log_events")
    for page in paginator.paginate(logGroupName=group, startTime=since_ms):
        for event in page.get("events", []):
            try:
                line = json.loads(event["message"])
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("task_id") in task_ids:
                message = str(line.get("message", ""))
                if message.startswith("job already"):
                    message = "acknowledged without work"
                counts[(message, line["task_id"])] += 1
    return counts


def run_jobs(service: Service, duplicate: bool) -> dict:
    """Submits the 50 jobs with the worker's event source mapping off, delivers every message a
    second time if ``duplicate``, lets the worker run them, and returns what was recorded."""
    sqs = stack.client("sqs")
    queue_url = service.outputs["JobsQueueUrl"]
    trained = [KIEL_SKUS[i % len(KIEL_SKUS)] for i in range(TRAINS)]
    versions_before = {sku: model_versions(service, sku) for sku in set(trained)}
    since_ms = int(time.time() * 1000) - 1000

    set_worker_mapping(service, enabled=False)
    try:
        task_ids = [submit_train(service, sku) for sku in trained]
        task_ids += [
            submit_predict(service, KIEL_SKUS[i % len(KIEL_SKUS)], days=7 + i % 3)
            for i in range(JOBS - TRAINS)
        ]
        if duplicate:
            # Take every message (hidden for a while), send its body again, then show it again:
            # the worker gets each body twice.
            received: dict[str, dict] = {}
            deadline = time.monotonic() + 60
            while len(received) < JOBS and time.monotonic() < deadline:
                for message in sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=120
                ).get("Messages", []):
                    received[message["MessageId"]] = message
            bodies = [m["Body"] for m in received.values()]
            assert len(bodies) == JOBS
            for start in range(0, JOBS, 10):
                sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "MessageBody": body}
                        for i, body in enumerate(bodies[start : start + 10])
                    ],
                )
            for message in received.values():
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
    finally:
        set_worker_mapping(service, enabled=True)

    started = time.monotonic()
    final = {task_id: wait_task(service, task_id, timeout_s=600) for task_id in task_ids}
    elapsed = time.monotonic() - started

    def queue_empty():
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return all(int(v) == 0 for v in attributes.values())

    wait_for(queue_empty, 120, interval_s=1, what="every message (duplicates too) consumed")
    logs = wait_for(
        lambda: (
            (c := worker_log_lines(service, set(task_ids), since_ms))
            and sum(v for (m, _), v in c.items() if m == "job succeeded") >= JOBS
            and c
        ),
        60,
        interval_s=2,
        what="the worker's log lines in CloudWatch Logs",
    )
    return {
        "statuses": Counter(job["status"] for job in final.values()),
        "attempts": Counter(job["attempts"] for job in final.values()),
        "results_in_answer": Counter("result" in job for job in final.values()),
        "result_objects": sum(result_objects(service, task_ids).values()),
        "model_versions_added": sum(
            model_versions(service, sku) - before for sku, before in versions_before.items()
        ),
        "log_started": sum(v for (m, _), v in logs.items() if m == "job started"),
        "log_succeeded": sum(v for (m, _), v in logs.items() if m == "job succeeded"),
        "log_acknowledged_without_work": sum(
            v for (m, _), v in logs.items() if m == "acknowledged without work"
        ),
        "seconds": round(elapsed, 1),
    }


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("trained_models")
def test_every_message_delivered_twice_leaves_the_trace_of_one_delivery(fault_service):
    """The trace of a run without duplicates is one of each per job: one claim (attempts 1), its
    result in its item, one "job started" and one "job succeeded" line, a model version per
    training (docs/RELIABILITY.md shows a run without duplicates measured next to this one:
    ``run_jobs(service, duplicate=False)``). The run with every message twice must match it."""
    twice = run_jobs(fault_service, duplicate=True)
    print(f"\n[duplicates] every message twice: {twice}")

    assert twice["statuses"] == Counter({"SUCCESS": JOBS})
    assert twice["attempts"] == Counter({1: JOBS})  # one claim per job
    assert twice["results_in_answer"] == Counter({True: JOBS})  # each job's result, kept
    assert twice["result_objects"] == 0  # in the item, written once with SUCCESS
    assert twice["model_versions_added"] == TRAINS  # one model version per training
    assert twice["log_started"] == JOBS
    assert twice["log_succeeded"] == JOBS
    # Every duplicate was seen by the worker and acknowledged without work.
    assert twice["log_acknowledged_without_work"] == JOBS
