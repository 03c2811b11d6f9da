"""Faults injected into the running local stack (template.yaml deployed as its own stack, a 30 s
worker timeout): the worker killed in the middle of a fit, PostgreSQL stopped during a train-all,
S3 writes of a model failing (injected at LocalStack's AWS API layer), and a poison job in the DLQ.

What each test shows: an accepted job is never lost and takes effect once.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from scripts import stack
from tests.e2e.conftest import (
    FAULT_VISIBILITY_S,
    TERMINAL,
    ChildWatch,
    Faults,
    function_processes,
    http,
    model_versions,
    set_worker_mapping,
    submit_predict,
    submit_train,
    task,
    wait_for,
    wait_task,
)


# -- the worker killed in the middle of a fit ---------------------------------------------------
@pytest.mark.timeout(400)
def test_worker_killed_mid_fit_finishes_the_job_once_after_the_visibility_timeout(fault_service):
    service = fault_service
    sku = "CNF-001"
    worker = service.outputs["WorkerFunctionName"]
    killed = None
    for _ in range(4):  # a fit lasts a fraction of a second: a training may end before it is seen
        versions_before = model_versions(service, sku)
        workers = set(function_processes(worker))
        if not workers:  # no warm worker yet: a first training starts one
            wait_task(service, submit_train(service, sku))
            continue
        watch = ChildWatch(workers, "prophet_model")  # cmdstan: Prophet's fit, a child
        task_id = submit_train(service, sku)
        fit = watch.wait(
            60, given_up=lambda task_id=task_id: task(service, task_id)["status"] in TERMINAL
        )
        if fit is not None:
            for pid in workers:
                os.killpg(pid, signal.SIGKILL)  # the environment, the fit included
            killed = time.monotonic()
            break
        wait_task(service, task_id)
    assert killed is not None, "no training was caught in a Prophet fit"

    done = wait_task(service, task_id, timeout_s=FAULT_VISIBILITY_S + 150)
    recovered_after = time.monotonic() - killed
    print(f"\n[kill] job finished {recovered_after:.0f} s after the kill: {done['status']}")
    assert done["status"] == "SUCCESS", done
    assert done["attempts"] == 2  # the killed attempt, and the one after the visibility timeout
    assert model_versions(service, sku) == versions_before + 1  # one model stored, not two
    # It came back only after the message's visibility timeout (not from a retry at once).
    assert recovered_after >= FAULT_VISIBILITY_S - 5


# -- PostgreSQL stopped during a train-all ------------------------------------------------------
@pytest.mark.timeout(400)
def test_postgres_stopped_during_train_all_children_retry_then_all_succeed(fault_service):
    service = fault_service
    table = service.outputs["JobsTableName"]
    dynamodb = stack.client("dynamodb")

    def children(parent_id: str) -> list[dict]:
        items = dynamodb.query(
            TableName=table,
            IndexName="by_parent",
            KeyConditionExpression="parent_id = :p",
            ExpressionAttributeValues={":p": {"S": parent_id}},
        )["Items"]
        return [task(service, item["task_id"]["S"]) for item in items]

    # Hold the children in the queue until the database is down: the fan-out itself reads the
    # product list from PostgreSQL, the children are what the fault is about.
    set_worker_mapping(service, enabled=False)
    try:
        answer = http("POST", f"{service.base}/api/tasks/training/all", token=service.admin_token)
        assert answer.status == 202, answer.body
        parent_id = answer.body["task_id"]
        parent = wait_for(
            lambda: (p := task(service, parent_id)).get("progress") and p,
            120,
            what="the train-all parent to fan out",
        )
        total = parent["progress"]["total"]
        assert total == 6
        stack.stop_postgres()
        stopped_at = time.monotonic()
    finally:
        set_worker_mapping(service, enabled=True)
    try:
        retrying = wait_for(
            lambda: (c := children(parent_id)) and all(x["status"] == "RETRY" for x in c) and c,
            90,
            interval_s=0.5,
            what="every child in RETRY while the database is down",
        )
        assert {c["error"]["type"] for c in retrying} == {"database_unavailable"}
    finally:
        stack.start_postgres()
        restarted_at = time.monotonic()

    parent = wait_task(service, parent_id, timeout_s=240)
    print(
        f"\n[postgres] down {restarted_at - stopped_at:.0f} s; every child done "
        f"{time.monotonic() - restarted_at:.0f} s after it came back: {parent['progress']}"
    )
    assert parent["status"] == "SUCCESS", parent
    progress = parent["progress"]
    assert (progress["total"], progress["succeeded"], progress["pending"]) == (total, total, 0)
    assert progress["failed"] == progress["revoked"] == 0
    final = children(parent_id)
    assert len(final) == total  # none lost, none duplicated
    assert len({c["product_sku"] for c in final}) == total
    assert all(c["status"] == "SUCCESS" and c["attempts"] == 2 for c in final), final


# -- S3 writes failing (injected in LocalStack's S3 API) ----------------------------------------
def test_s3_writes_failing_retry_then_succeed_once_the_fault_clears(fault_service, faults: Faults):
    service = fault_service
    bucket = service.outputs["ModelsBucketName"]
    rule = faults.add("s3", "PutObject", match={"Bucket": bucket})
    task_id = submit_train(service, "RLL-001")

    retry = wait_task(service, task_id, timeout_s=120, statuses={"RETRY"})
    assert retry["error"]["type"] == "storage_unavailable"
    # the failing call and the bucket are in the worker's log, not in what clients read
    assert retry["error"]["message"] == "the model store is unavailable; try again later"
    faults_hits = faults.rule(rule["id"])["hits"]
    assert faults_hits >= 1
    faults.clear()
    cleared_at = time.monotonic()

    done = wait_task(service, task_id, timeout_s=120)
    print(
        f"\n[s3] RETRY ({retry['error']['message']}); SUCCESS {time.monotonic() - cleared_at:.0f} s"
        f" after the fault was cleared; {faults_hits} failed PutObject requests"
    )
    assert done["status"] == "SUCCESS", done
    assert done["attempts"] == 2
    assert "error" not in done


def test_s3_writes_failing_past_the_retries_fail_the_job_with_the_error(
    fault_service, faults: Faults
):
    """A training whose model writes fail on every attempt (a forecast's result is kept in
    its job item, so the training's model artefact is the S3 write a job depends on)."""
    service = fault_service
    bucket = service.outputs["ModelsBucketName"]
    sku = "RLL-001"
    versions_before = model_versions(service, sku)
    faults.add("s3", "PutObject", match={"Bucket": bucket, "Key": f"models/{sku}/*"})
    task_id = submit_train(service, sku)
    submitted_at = time.monotonic()

    done = wait_task(service, task_id, timeout_s=180)
    print(
        f"\n[s3] FAILURE {time.monotonic() - submitted_at:.0f} s after submission: {done['error']}"
    )
    assert done["status"] == "FAILURE", done
    assert done["attempts"] == 3  # MaxReceiveCount
    assert done["error"]["type"] == "storage_unavailable"
    assert bucket not in done["error"]["message"]
    # Nothing half-written: no result, no new model version (the model served is unchanged).
    answer = http("GET", f"{service.base}/api/tasks/{task_id}", token=service.user_token)
    assert "result" not in answer.body
    assert model_versions(service, sku) == versions_before


# -- a poison job: its worker dies on every delivery ---------------------------------------------
@pytest.mark.timeout(480)
def test_poison_job_fails_into_the_dlq_and_succeeds_when_redriven_after_the_fix(
    fault_service, faults: Faults
):
    """Every read of the product's model hangs past the worker timeout (a dependency that hangs:
    the worker is stopped by Lambda's timeout each time and records nothing). On the message's
    last delivery the worker does not run the job again: FAILURE with ``worker_stopped``, and the
    message goes to the DLQ. Once the cause is removed an admin redrive brings it back and the
    job runs again and succeeds."""
    service = fault_service
    bucket = service.outputs["ModelsBucketName"]
    sku = "CKE-001"
    faults.add(
        "s3",
        "GetObject",
        match={"Bucket": bucket, "Key": f"models/{sku}/*"},
        status=None,
        delay_seconds=FAULT_VISIBILITY_S + 10,
    )
    task_id = submit_predict(service, sku)
    submitted_at = time.monotonic()

    def dead_lettered():
        answer = http("GET", f"{service.base}/api/admin/dlq", token=service.admin_token)
        assert answer.status == 200, answer.body
        return any(
            isinstance(m["body"], dict) and m["body"].get("task_id") == task_id
            for m in answer.body["messages"]
        )

    wait_for(dead_lettered, 4 * FAULT_VISIBILITY_S + 120, interval_s=2, what="the job in the DLQ")
    failed = task(service, task_id)
    print(
        f"\n[poison] in the DLQ {time.monotonic() - submitted_at:.0f} s after submission:"
        f" {failed['status']}, attempts {failed['attempts']}, {failed.get('error')}"
    )
    assert failed["status"] == "FAILURE", failed
    # Two deliveries each stopped by the timeout; the third (the last) records the failure.
    assert failed["attempts"] == 2
    assert failed["error"]["type"] == "worker_stopped"
    assert "redrive" in failed["error"]["message"]

    faults.clear()  # the cause is fixed
    redrive = http("POST", f"{service.base}/api/admin/dlq/redrive", token=service.admin_token)
    assert redrive.status == 202, redrive.body
    redriven_at = time.monotonic()
    done = wait_task(service, task_id, timeout_s=FAULT_VISIBILITY_S + 120, statuses={"SUCCESS"})
    print(
        f"[poison] {done['status']} {time.monotonic() - redriven_at:.0f} s after the redrive,"
        f" attempts {done['attempts']}"
    )
    assert done["attempts"] == 3
    assert "error" not in done or not done["error"]
    assert not dead_lettered()


# -- a train-all whose every asynchronous attempt fails: DLQ, then back by redrive -------------
@pytest.mark.timeout(500)
def test_train_all_failing_every_attempt_is_dead_lettered_and_runs_when_redriven(fault_service):
    """PostgreSQL is down when a training-all starts: train_all cannot read the product list,
    and fails on its first attempt and both of Lambda's retries (the template's
    ``MaximumRetryAttempts``; the launcher shortens LocalStack's waits between them). Lambda
    puts the event in the jobs DLQ, where the admin view shows it as a train_all trigger with
    its parent and the error, while the parent waits PENDING. Once the database is back, the
    redrive brings the trigger to the jobs queue, the worker invokes train_all again with it,
    and every product is trained."""
    service = fault_service
    admin = service.admin_token

    def trigger_in_dlq(parent_id: str) -> dict | None:
        answer = http("GET", f"{service.base}/api/admin/dlq", token=admin)
        assert answer.status == 200, answer.body
        return next(
            (
                m
                for m in answer.body["messages"]
                if m.get("kind") == "train_all" and m["train_all"]["parent_id"] == parent_id
            ),
            None,
        )

    function_logs = stack.ROOT / ".state" / "localstack" / "functions"
    train_all = service.outputs["TrainAllFunctionName"]

    def failed_attempts() -> int:
        """train_all's attempts that failed for want of the database (its function log)."""
        failure = "siprems.errors.DatabaseUnavailableError: "
        logs = function_logs.glob(f"{train_all}-*.log")
        return sum(line.startswith(failure) for log in logs for line in log.open())

    failed_before = failed_attempts()
    stack.stop_postgres()
    try:
        answer = http("POST", f"{service.base}/api/tasks/training/all", token=admin)
        assert answer.status == 202, answer.body
        parent_id = answer.body["task_id"]
        submitted_at = time.monotonic()
        dead = wait_for(
            lambda: trigger_in_dlq(parent_id), 240, interval_s=2, what="the trigger in the DLQ"
        )
        in_dlq_at = time.monotonic()
        waiting = task(service, parent_id)
    finally:
        stack.start_postgres()
    print(
        f"\n[train-all dlq] in the DLQ {in_dlq_at - submitted_at:.0f} s after submission;"
        f" parent {waiting['status']}; body {dead['body']}; error {dead['error']}"
    )
    # the event as the route sent it: the parent, and the parent to record if it were missing
    assert dead["body"]["parent_id"] == dead["body"]["parent"]["task_id"] == parent_id
    assert dead["body"]["parent"]["type"] == "train_all"
    assert dead["train_all"] == {"parent_id": parent_id, "scheduled_time": None}
    assert "database" in dead["error"]["message"].lower(), dead["error"]
    assert waiting["status"] == "PENDING" and "progress" not in waiting
    # The first attempt and Lambda's two retries (MaximumRetryAttempts), no more.
    wait_for(lambda: failed_attempts() - failed_before >= 3, 30, what="three failed attempts")
    assert failed_attempts() - failed_before == 3

    redrive = http("POST", f"{service.base}/api/admin/dlq/redrive", token=admin)
    assert redrive.status == 202, redrive.body
    redriven_at = time.monotonic()
    fanned_out = wait_for(
        lambda: (p := task(service, parent_id)).get("progress") and p,
        120,
        what="the redriven train-all to fan out",
    )
    fanned_out_s = time.monotonic() - redriven_at
    done = wait_task(service, parent_id, timeout_s=300)
    print(
        f"[train-all dlq] fanned out {fanned_out_s:.0f} s after the redrive;"
        f" {done['status']} {time.monotonic() - redriven_at:.0f} s after it: {done['progress']}"
    )
    assert fanned_out["progress"]["total"] == 6
    assert done["status"] == "SUCCESS", done
    assert (done["progress"]["succeeded"], done["progress"]["pending"]) == (6, 0)
    assert trigger_in_dlq(parent_id) is None
