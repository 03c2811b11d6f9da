"""The worker function on SQS batches: real Prophet fits on the Kiel data, moto for AWS.
At-least-once delivery, permanent and transient failures, backoff, deadlines."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from siprems.jobs.model import Job, JobType, pack_json, utc_now
from siprems.jobs.service import load_result

from tests.fixtures.app import (
    ADMIN_CALLER,
    api_event,
    invoke,
    json_lines,
    load_event,
    response_json,
)
from tests.fixtures.train_all import started_parent


def submit(app, event="submit/train-product.json") -> str:
    response = invoke("submit", api_event(event))
    assert response["statusCode"] == 202, response["body"]
    return response_json(response)["task_id"]


def job(app, task_id):
    return app.services.store.get(task_id)


def stored_result(app, task_id):
    """The job's result as the status API reads it (from the item, or S3 when large)."""
    return load_result(app.services, job(app, task_id))


def model_versions(app, sku="BRD-001"):
    key = f"models/{sku}/model.json"
    versions = app.s3.list_object_versions(Bucket=app.bucket, Prefix=key).get("Versions", [])
    return [v for v in versions if v["Key"] == key]


def reset_services(monkeypatch, **env):
    from siprems.config import load_settings
    from siprems.jobs.services import get_services

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    load_settings.cache_clear()
    get_services.cache_clear()


def test_duplicate_delivery_trains_once_and_transitions_once(app):
    task_id = submit(app)
    [message] = app.receive()
    event = app.sqs_event([message])

    assert invoke("worker", event) == {"batchItemFailures": []}
    first = job(app, task_id)
    assert first.status.value == "SUCCESS" and first.attempts == 1
    assert len(model_versions(app)) == 1

    # SQS delivers the same message again (at-least-once): acknowledged without work.
    assert invoke("worker", event) == {"batchItemFailures": []}
    again = job(app, task_id)
    assert again == first  # no second transition, same timestamps and attempts
    assert len(model_versions(app)) == 1  # no second model version

    result = stored_result(app, task_id)
    assert result["product_sku"] == "BRD-001"
    assert result["model"]["version"] == model_versions(app)[0]["VersionId"]


def test_a_message_whose_job_is_running_elsewhere_stays_in_the_queue(app):
    task_id = submit(app)
    app.services.store.mark_started(task_id, stale_after=timedelta(seconds=120))
    [message] = app.receive()
    response = invoke("worker", app.sqs_event([message]))
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    assert job(app, task_id).attempts == 1  # untouched
    assert model_versions(app) == []


def test_unknown_sku_fails_at_once_with_the_error_stored(app):
    """A job that bypassed the API's checks (written directly): permanent error, FAILURE on
    the first attempt, message acknowledged."""
    poison = Job.new(JobType.PREDICT, product_sku="NOPE-404", params={"days": 7})
    app.services.store.create(poison)
    app.services.queue.send(poison.message())
    assert app.run_worker() == {"batchItemFailures": []}
    failed = job(app, poison.task_id)
    assert failed.status.value == "FAILURE" and failed.attempts == 1
    assert failed.error.type == "unknown_sku" and "NOPE-404" in failed.error.message
    assert app.receive(visibility=0) == []

    status = invoke(
        "status", api_event("status/task.json", path_parameters={"task_id": poison.task_id})
    )
    assert status["statusCode"] == 200  # FAILURE is final: 200 with the error
    assert response_json(status)["error"]["type"] == "unknown_sku"


def test_unparseable_message_goes_to_the_dlq_after_max_receives(app):
    sample = load_event("worker/sqs-poison.json")
    response = invoke("worker", sample)
    assert response == {
        "batchItemFailures": [{"itemIdentifier": sample["Records"][0]["messageId"]}]
    }

    app.sqs.send_message(QueueUrl=app.queue_url, MessageBody=sample["Records"][0]["body"])
    rounds = 0
    while messages := app.receive(visibility=0):
        rounds += 1
        failures = invoke("worker", app.sqs_event(messages))["batchItemFailures"]
        assert len(failures) == 1
    assert rounds == 3  # maxReceiveCount of the template
    dead = app.services.dead_letters.peek()
    assert [d.body for d in dead] == ["this is not a job message"]
    assert app.items() == []


def test_transient_errors_retry_with_backoff_then_fail(app, monkeypatch):
    task_id = submit(app)
    # The sales database goes away: every attempt fails with a transient error.
    reset_services(
        monkeypatch,
        DATABASE_URL="postgresql://siprems@127.0.0.1:9/siprems?connect_timeout=1&sslmode=disable",
        RETRY_BASE_SECONDS="60",
    )
    for attempt in (1, 2):
        [message] = app.receive(visibility=0)  # hidden only if the worker hides it
        response = invoke("worker", app.sqs_event([message]))
        assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
        retry = job(app, task_id)
        assert retry.status.value == "RETRY" and retry.attempts == attempt
        assert retry.error.type == "database_unavailable"
        assert "127.0.0.1" not in retry.error.message  # the server is named in the logs only
        # Backoff: the worker hid the message (60 s, then 120 s) ...
        assert app.receive(visibility=0) == []
        # ... until it is due (here: shown again at once).
        app.sqs.change_message_visibility(
            QueueUrl=app.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    # The message's last delivery starts no run (a worker stopped on it would leave the job
    # STARTED with the message in the DLQ): the job is queued again as a fresh message.
    [message] = app.receive(visibility=0)
    assert message["Attributes"]["ApproximateReceiveCount"] == "3"
    assert invoke("worker", app.sqs_event([message])) == {"batchItemFailures": []}
    waiting = job(app, task_id)
    assert waiting.status.value == "RETRY" and waiting.attempts == 2
    [fresh] = app.receive(visibility=0)
    assert fresh["MessageId"] != message["MessageId"]
    assert fresh["Attributes"]["ApproximateReceiveCount"] == "1"
    assert invoke("worker", app.sqs_event([fresh])) == {"batchItemFailures": []}
    failed = job(app, task_id)
    assert failed.status.value == "FAILURE" and failed.attempts == 3
    assert failed.error.type == "database_unavailable"


def test_too_little_time_left_returns_the_message_untouched(app):
    task_id = submit(app)
    [message] = app.receive()
    response = invoke("worker", app.sqs_event([message]), remaining_ms=1_000)
    assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
    pending = job(app, task_id)
    assert pending.status.value == "PENDING" and pending.attempts == 0
    assert len(app.receive(visibility=0)) == 1  # visible again at once


def last_delivery(app) -> dict:
    """The job's message received until its receive count reaches maxReceiveCount (3)."""
    for _ in range(2):
        assert len(app.receive(visibility=0)) == 1
    [message] = app.receive()
    assert message["Attributes"]["ApproximateReceiveCount"] == "3"
    return message


def test_too_little_time_on_the_last_delivery_queues_the_job_again_not_to_the_dlq(app):
    """Deliveries without an attempt count towards maxReceiveCount too: on the last one the
    job is queued again as a fresh message instead of being dead-lettered while PENDING."""
    task_id = submit(app)
    message = last_delivery(app)
    response = invoke("worker", app.sqs_event([message]), remaining_ms=1_000)
    assert response == {"batchItemFailures": []}  # acknowledged: a fresh copy is queued
    app.sqs.delete_message(QueueUrl=app.queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert job(app, task_id).status.value == "PENDING"

    [fresh] = app.receive()
    assert fresh["Attributes"]["ApproximateReceiveCount"] == "1"
    assert json.loads(fresh["Body"])["task_id"] == task_id
    assert invoke("worker", app.sqs_event([fresh])) == {"batchItemFailures": []}
    assert job(app, task_id).status.value == "SUCCESS"
    assert app.services.dead_letters.peek() == []


def test_no_run_starts_on_a_last_delivery_so_a_worker_dying_there_cannot_strand_the_job(app):
    """A job still waiting on its message's last delivery (PENDING here; RETRY after transient
    errors) is not run on it: had the worker been stopped there (a timeout, a crash), the
    message would have gone to the DLQ with the job STARTED and nothing left to notice. It is
    queued again as a fresh message, whose deliveries run it (and, if it keeps dying, end in
    worker_stopped on that message's last delivery)."""
    task_id = submit(app)
    message = last_delivery(app)
    runs = []
    handled = app.process(message, lambda *args: runs.append(args) or {}, receive_count=3)
    assert handled == "requeued" and runs == []
    waiting = job(app, task_id)
    assert waiting.status.value == "PENDING" and waiting.attempts == 0
    app.sqs.delete_message(QueueUrl=app.queue_url, ReceiptHandle=message["ReceiptHandle"])

    [fresh] = app.receive()
    assert fresh["Attributes"]["ApproximateReceiveCount"] == "1"
    assert invoke("worker", app.sqs_event([fresh])) == {"batchItemFailures": []}
    assert job(app, task_id).status.value == "SUCCESS"


def test_a_job_running_elsewhere_on_the_last_delivery_is_queued_again_for_later(app):
    task_id = submit(app)
    app.services.store.mark_started(task_id, stale_after=timedelta(seconds=120))
    message = last_delivery(app)
    assert invoke("worker", app.sqs_event([message])) == {"batchItemFailures": []}
    app.sqs.delete_message(QueueUrl=app.queue_url, ReceiptHandle=message["ReceiptHandle"])
    # Due once the other worker's time is up (the worker timeout): not visible before.
    assert app.receive(visibility=0) == []
    delayed = app.sqs.get_queue_attributes(
        QueueUrl=app.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    assert delayed == "1"
    assert job(app, task_id).attempts == 1  # untouched


# --- a message before its job: the submit routes queue first, then record ----------------
def test_a_job_whose_submit_could_not_record_it_is_recorded_by_its_worker_and_runs(
    app, monkeypatch, capsys
):
    """The submit queued the job, then failed to record it (here DynamoDB refused; a submit
    that dies there is the same): the client got an error, yet the job runs, and it is counted
    as submitted. Its worker records it from its message, as it was submitted, and runs it
    once."""
    from siprems.errors import JobStoreUnavailableError

    def refused(job):
        raise JobStoreUnavailableError("DynamoDB PutItem on the jobs table failed")

    with monkeypatch.context() as patched:
        patched.setattr(app.services.store, "create_or_get", refused)
        response = invoke("submit", api_event("submit/train-product.json"))
    assert response["statusCode"] == 503
    assert app.items() == []
    emitted = json_lines(capsys.readouterr().out)
    assert any(line.get("JobsSubmitted") == [1.0] for line in emitted)

    [message] = app.receive()
    queued = json.loads(message["Body"])
    assert invoke("worker", app.sqs_event([message])) == {"batchItemFailures": []}
    [item] = app.items()
    done = job(app, item["task_id"])
    assert done.status.value == "SUCCESS" and done.attempts == 1
    as_submitted = set(queued) - {"updated_at"}  # type, product, who asked, created, expiry
    assert done.model_dump(include=as_submitted) == Job.from_message(queued).model_dump(
        include=as_submitted
    )
    assert done.requested_by is not None and done.created_at < done.started_at
    assert len(model_versions(app)) == 1


def test_the_submits_record_meets_the_job_its_worker_recorded_first(app, monkeypatch):
    """The worker may take the message before the submit's put: the worker records and runs
    the job, the put finds it and leaves it, and the route answers with that job."""
    queue = app.services.queue
    send = queue.send

    def send_then_work(message, **kwargs):
        sent = send(message, **kwargs)
        assert app.items() == []  # queued first: not recorded yet
        assert app.run_worker() == {"batchItemFailures": []}
        return sent

    monkeypatch.setattr(queue, "send", send_then_work)
    response = invoke("submit", api_event("submit/predict-async.json"))
    assert response["statusCode"] == 202, response["body"]
    task_id = response_json(response)["task_id"]
    [item] = app.items()
    assert item["task_id"] == task_id
    done = job(app, task_id)
    assert done.status.value == "SUCCESS" and done.attempts == 1  # not put back to PENDING
    assert stored_result(app, task_id)["product_sku"] == "BRD-001"


def test_a_job_recorded_between_its_workers_claim_and_its_record_from_the_message_is_run(
    app, monkeypatch
):
    """Under load a worker's claim can meet no item and its submit's put land just after,
    before the worker records the job from its message (queued first, recorded next): the
    worker's conditional put is refused and the job, now recorded, is claimed and run, not
    acknowledged and left PENDING with its message gone (seen in the e2e load run, when a
    read after the refused claim found the job PENDING). That the refused claim reads
    nothing is `test_a_refused_update_tells_its_outcome_from_the_failed_condition_alone`."""
    unrecorded = Job.new(JobType.PREDICT, product_sku="BRD-001", params={"days": 7})
    app.services.queue.send(unrecorded.message())
    [message] = app.receive()
    store = app.services.store
    create = store.create

    def recorded_just_before(job, *args, **kwargs):
        if job.task_id == unrecorded.task_id and not app.items():
            assert create(unrecorded)  # the submit's put lands now
        return create(job, *args, **kwargs)

    monkeypatch.setattr(store, "create", recorded_just_before)
    ran = app.process(message, lambda job, services, work_dir: {"product_sku": job.product_sku})
    assert ran == "succeeded"
    done = job(app, unrecorded.task_id)
    assert done.status.value == "SUCCESS" and done.attempts == 1


@pytest.mark.parametrize("why", ["expired", "no job in the message"])
def test_a_message_whose_job_cannot_be_recorded_is_dropped(app, why):
    """A job past its expiry is not recorded again (its item was deleted by TTL: a job once
    cancelled stays gone), nor one whose message does not carry it (queued before messages
    carried their job)."""
    created = utc_now() - timedelta(days=31)
    lapsed = Job.new(JobType.TRAIN, product_sku="BRD-001", now=created, ttl_days=30)
    fresh = Job.new(JobType.TRAIN, product_sku="BRD-001")
    body = lapsed.message() if why == "expired" else {"task_id": fresh.task_id, "type": "train"}
    app.services.queue.send(body)
    [message] = app.receive()
    assert app.process(message, lambda *args: pytest.fail("ran")) == "missing"
    assert app.items() == []
    assert model_versions(app) == []


def test_a_cancelled_jobs_message_does_not_bring_it_back(app):
    task_id = submit(app)
    cancel = api_event("status/cancel.json", path_parameters={"task_id": task_id})
    assert invoke("status", cancel)["statusCode"] == 200
    assert app.run_worker() == {"batchItemFailures": []}
    cancelled = job(app, task_id)
    assert cancelled.status.value == "REVOKED" and cancelled.attempts == 0
    assert model_versions(app) == []


def test_an_unrecorded_job_on_its_messages_last_delivery_is_queued_again_not_run(app):
    """No run starts on a message's last delivery, recorded or not: the job is queued again
    as a fresh message, whose first delivery records and runs it."""
    unrecorded = Job.new(JobType.TRAIN, product_sku="BRD-001")
    app.services.queue.send(unrecorded.message())
    message = last_delivery(app)
    assert app.process(message, lambda *args: pytest.fail("ran"), receive_count=3) == "requeued"
    assert app.items() == []
    app.sqs.delete_message(QueueUrl=app.queue_url, ReceiptHandle=message["ReceiptHandle"])

    [fresh] = app.receive()
    assert fresh["Attributes"]["ApproximateReceiveCount"] == "1"
    assert invoke("worker", app.sqs_event([fresh])) == {"batchItemFailures": []}
    done = job(app, unrecorded.task_id)
    assert done.status.value == "SUCCESS" and done.attempts == 1


def test_two_deliveries_of_an_unrecorded_job_run_it_once(app):
    """Two workers meet the same unrecorded job at once: one records it (claimed), the
    other's put is refused and its claim finds the job running: it runs once."""
    from siprems.jobs.runner import KeepMessage

    unrecorded = Job.new(JobType.PREDICT, product_sku="BRD-001", params={"days": 7})
    for _ in range(2):  # SQS delivers a message twice
        app.services.queue.send(unrecorded.message())
    first, second = app.receive()
    runs: list[str] = []

    def run(job, services, work_dir):
        runs.append(job.task_id)
        with pytest.raises(KeepMessage):  # the other delivery, meanwhile: handed back
            app.process(second, lambda *args: pytest.fail("ran twice"))
        return {"product_sku": job.product_sku}

    assert app.process(first, run) == "succeeded"
    assert runs == [unrecorded.task_id]
    done = job(app, unrecorded.task_id)
    assert done.status.value == "SUCCESS" and done.attempts == 1


@pytest.mark.parametrize("days", [1, 30])
def test_predict_job_returns_the_requested_horizon(app, days):
    event = api_event("submit/predict-async.json", body={"product_sku": "CKE-001", "days": days})
    response = invoke("submit", event)
    task_id = response_json(response)["task_id"]
    app.run_worker()
    result = stored_result(app, task_id)
    assert result["forecast_days"] == days
    assert len(result["quantiles"]) == days
    assert response["statusCode"] == 202
    dates = [q["date"] for q in result["quantiles"]]
    assert dates == sorted(set(dates))  # one row a day, in order


def test_results_are_kept_in_the_job_item_and_large_ones_in_s3(app, monkeypatch):
    from siprems.jobs import runner

    submit(app)
    app.run_worker()  # BRD-001's model
    small = submit(app, "submit/predict-async.json")
    app.run_worker()
    kept = job(app, small)
    assert kept.result is not None and kept.result_key is None
    assert kept.result["product_sku"] == "BRD-001"
    s3_keys = app.s3.list_objects_v2(Bucket=app.bucket, Prefix="forecasts/").get("KeyCount", 0)
    assert s3_keys == 0  # no object written for it

    # above the bound, the result goes to S3 and the item keeps its key
    monkeypatch.setattr(runner, "INLINE_RESULT_MAX_BYTES", len(pack_json(kept.result)) - 1)
    large = submit(app, "submit/predict-async.json")
    app.run_worker()
    stored = job(app, large)
    assert stored.result is None and stored.result_key == f"forecasts/{large}.json"
    assert stored_result(app, large) == app.services.models.load_forecast(large)
    assert stored_result(app, large)["forecast_days"] == kept.result["forecast_days"]


def test_job_log_lines_name_the_job_and_metrics_are_emitted(app, capsys):
    task_id = submit(app)
    submitted = json_lines(capsys.readouterr().out)
    assert any(line.get("JobsSubmitted") == [1.0] for line in submitted)

    # The logger's handler keeps the stream it was created with: point it at a buffer.
    from siprems.observability import logger

    stream = io.StringIO()
    previous = logger.registered_handler.setStream(stream)
    try:
        app.run_worker()
    finally:
        logger.registered_handler.setStream(previous)
    out = json_lines(capsys.readouterr().out)
    logs = [line for line in json_lines(stream.getvalue()) if line.get("level")]
    assert [line["message"] for line in logs] == ["job started", "job succeeded"]
    for line in logs:  # every line of the job names it
        assert line["task_id"] == task_id and line["product_sku"] == "BRD-001", line
    metrics = [line for line in out if "_aws" in line]
    names = {
        m["Name"]
        for line in metrics
        for d in line["_aws"]["CloudWatchMetrics"]
        for m in d["Metrics"]
    }
    assert {"JobsSucceeded", "FitSeconds"} <= names


def test_a_job_cancelled_while_it_runs_keeps_revoked(app):
    """The cancel route wins over a fit already running: the worker's SUCCESS write is
    refused by its condition and the message is acknowledged."""
    from siprems.jobs.runner import run_job

    task_id = submit(app, "submit/predict-async.json")

    def run_then_get_cancelled(job, services, work_dir):
        result = run_job(job, services, work_dir)
        cancel = api_event("status/cancel.json", path_parameters={"task_id": job.task_id})
        assert invoke("status", cancel)["statusCode"] == 200
        return result

    [message] = app.receive()
    assert app.process(message, run_then_get_cancelled) == "lost"
    final = job(app, task_id)
    assert final.status.value == "REVOKED" and final.result_key is None and final.result is None
    body = response_json(
        invoke("status", api_event("status/task.json", path_parameters={"task_id": task_id}))
    )
    assert body["status"] == "REVOKED" and "result" not in body


def test_a_training_cancelled_while_it_runs_leaves_the_served_model_as_it_was(app):
    """Cancelled after its start: the fit runs on, but its model is not stored (the model and
    the metadata that names the served versions stay as they were)."""
    from siprems.jobs.runner import run_job

    submit(app)
    app.drain()
    served = app.services.models.load_metadata("BRD-001")
    task_id = submit(app)

    cancels = []  # asserted outside: the runner would take a failed assertion for a retry

    def cancelled_then_run(job, services, work_dir):
        cancel = api_event("status/cancel.json", path_parameters={"task_id": job.task_id})
        cancels.append(invoke("status", cancel)["statusCode"])
        return run_job(job, services, work_dir)

    [message] = app.receive()
    assert app.process(message, cancelled_then_run) == "lost"
    assert cancels == [200]
    assert job(app, task_id).status.value == "REVOKED"
    assert app.services.models.load_metadata("BRD-001") == served
    assert len(model_versions(app)) == 1  # nothing written


@pytest.mark.parametrize("cancelled_by", ["api", "store"])
def test_the_last_child_cancelled_while_it_runs_finishes_its_parent(app, cancelled_by):
    """A train_all child, its parent's last one pending, cancelled while its fit runs: the
    revoke counts it on the parent and finishes the parent in the same write, whether through
    the cancel route ("api") or the revoke alone ("store"). The worker's outcome is then
    refused and changes nothing. Never STARTED for good."""
    from siprems.jobs.runner import run_job

    parent, [child] = started_parent(app.services.store, ["BRD-001"])
    app.services.queue.send(child.message())
    after_cancel = []

    def run_then_get_cancelled(running, services, work_dir):
        result = run_job(running, services, work_dir)
        if cancelled_by == "api":
            cancel = api_event(
                "status/cancel.json",
                path_parameters={"task_id": running.task_id},
                caller=ADMIN_CALLER,
            )
            assert invoke("status", cancel)["statusCode"] == 200
        else:
            assert services.store.revoke(services.store.get(running.task_id)).applied
        after_cancel.append(job(app, parent.task_id))
        return result

    [message] = app.receive()
    assert app.process(message, run_then_get_cancelled) == "lost"
    assert job(app, child.task_id).status.value == "REVOKED"
    [finished] = after_cancel
    assert finished.status.value == "FAILURE"
    assert (finished.children.revoked, finished.children.pending) == (1, 0)
    assert job(app, parent.task_id) == finished  # the refused outcome changed nothing


# -- a job whose worker stops on every delivery (Lambda timeout, crash) ------------------------
def worker_stopped(app, task_id: str, hours_ago: int = 1) -> None:
    """The job's worker stopped without an outcome: STARTED, its start older than the worker
    timeout."""
    claim = app.services.store.mark_started(
        task_id, stale_after=timedelta(0), now=utc_now() - timedelta(hours=hours_ago)
    )
    assert claim.applied


def dead_lettered_bodies(app) -> list:
    return [d.body for d in app.services.dead_letters.peek()]


def test_a_job_whose_worker_stopped_fails_on_the_last_delivery_and_its_message_is_dead_lettered(
    app,
):
    task_id = submit(app)
    worker_stopped(app, task_id)
    message = last_delivery(app)
    event = app.sqs_event([message])

    results = []
    for _ in range(2):  # the same delivery handled twice: the same outcome, one transition
        response = invoke("worker", event)
        assert response == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}
        results.append(job(app, task_id))
    failed = results[0]
    assert results[1] == failed
    assert failed.status.value == "FAILURE" and failed.attempts == 1  # not run a second time
    assert failed.error.type == "worker_stopped"
    assert "dead-letter queue" in failed.error.message and "redrive" in failed.error.message
    assert failed.dead_lettered

    # Kept and visible at once: its next receive is past maxReceiveCount, SQS dead-letters it.
    assert app.receive(visibility=0) == []
    assert [body["task_id"] for body in dead_lettered_bodies(app)] == [task_id]
    assert model_versions(app) == []


def test_a_redriven_job_whose_worker_stops_again_counts_the_runs_since_its_redrive(app):
    """Its error says how many runs stopped since the operator's redrive, not since ever."""
    task_id = submit(app)
    for hours_ago in (3, 2):
        worker_stopped(app, task_id, hours_ago)
    # As a redrive leaves it: one run before the redrive, one since.
    app.dynamodb.Table(app.table_name).update_item(
        Key={"task_id": task_id},
        UpdateExpression="SET attempts_before_redrive = :one",
        ExpressionAttributeValues={":one": 1},
    )
    invoke("worker", app.sqs_event([last_delivery(app)]))
    failed = job(app, task_id)
    assert failed.error.type == "worker_stopped" and failed.attempts == 2
    assert "in 1 run (" in failed.error.message


def test_a_dead_lettered_job_runs_again_when_its_message_is_redriven(app):
    task_id = submit(app)
    worker_stopped(app, task_id)
    invoke("worker", app.sqs_event([last_delivery(app)]))
    assert app.receive(visibility=0) == []  # moved to the DLQ
    assert job(app, task_id).status.value == "FAILURE"

    app.redrive_dead_letters()  # the cause was fixed
    assert app.run_worker() == {"batchItemFailures": []}
    done = job(app, task_id)
    assert done.status.value == "SUCCESS" and done.attempts == 2
    assert done.error is None and done.dead_lettered is None
    assert len(model_versions(app)) == 1
    assert dead_lettered_bodies(app) == []
    assert app.receive(visibility=0) == []


def test_a_redriven_job_whose_attempts_crashes_used_up_gets_its_retries_again(app, monkeypatch):
    """Its worker stopped on every attempt; redriven after the cause was fixed, a transient
    error is retried as a new job's would be (as often, with the same backoff), not final at
    once."""
    from siprems.errors import DatabaseUnavailableError
    from siprems.jobs.runner import KeepMessage

    task_id = submit(app)
    for hours_ago in (3, 2, 1):  # three starts, each worker stopped
        worker_stopped(app, task_id, hours_ago)
    invoke("worker", app.sqs_event([last_delivery(app)]))
    failed = job(app, task_id)
    assert failed.status.value == "FAILURE" and failed.attempts == 3 and failed.dead_lettered
    assert app.receive(visibility=0) == []  # moved to the DLQ

    app.redrive_dead_letters()
    [message] = app.receive()

    def database_down(job, services, work_dir):
        raise DatabaseUnavailableError("the sales database is down")

    visibility = []
    queue = app.services.queue
    real_change_visibility = queue.change_visibility

    def change_visibility(handle, seconds):
        visibility.append(seconds)
        return real_change_visibility(handle, seconds)

    monkeypatch.setattr(queue, "change_visibility", change_visibility)
    for attempt in (4, 5):
        with pytest.raises(KeepMessage):
            app.process(message, database_down)
        retried = job(app, task_id)
        assert retried.status.value == "RETRY" and retried.attempts == attempt
        assert retried.attempts_before_redrive == 3
    assert visibility == [10, 20]  # a new job's backoff (RetryBaseSeconds 10)
    assert app.process(message, database_down) == "failed"  # its third attempt since
    failed = job(app, task_id)
    assert failed.status.value == "FAILURE" and failed.error.type == "database_unavailable"


def dead_letter_worker_stopped(app, child: Job) -> Job:
    """``child`` queued, its worker stopped on every delivery: FAILURE, message in the DLQ."""
    app.services.queue.send(child.message())
    worker_stopped(app, child.task_id)
    assert invoke("worker", app.sqs_event([last_delivery(app)]))["batchItemFailures"]
    failed = job(app, child.task_id)
    assert failed.status.value == "FAILURE" and failed.error.type == "worker_stopped"
    assert app.receive(visibility=0) == []
    return failed


def test_a_redriven_train_all_child_trains_its_product_and_a_finished_parent_keeps_its_outcome(
    app,
):
    """The child's failure is counted on its parent in the same transaction, and here the
    parent finished FAILURE on it. Redriven, the child runs again and trains its product; its
    new outcome is its own: counting it on the finished parent would count the child twice. A
    second delivery of the redriven message changes nothing."""
    parent, [child] = started_parent(app.services.store, ["BRD-001"])
    failed = dead_letter_worker_stopped(app, child)
    finished = job(app, parent.task_id)
    assert finished.status.value == "FAILURE"
    assert finished.children.failed == 1 and finished.children.pending == 0

    app.redrive_dead_letters()  # the cause was fixed
    assert app.run_worker() == {"batchItemFailures": []}
    done = job(app, child.task_id)
    assert done.status.value == "SUCCESS" and done.attempts == failed.attempts + 1
    assert done.error is None and done.dead_lettered is None and done.parent_counted
    assert done.parent_id == parent.task_id
    assert len(model_versions(app)) == 1
    assert job(app, parent.task_id) == finished  # counters and outcome as they were
    assert app.receive(visibility=0) == [] and dead_lettered_bodies(app) == []

    app.services.queue.send(child.message())  # the redriven message delivered again
    assert app.run_worker() == {"batchItemFailures": []}
    assert job(app, child.task_id) == done and job(app, parent.task_id) == finished
    assert len(model_versions(app)) == 1


def test_a_child_redriven_while_its_parent_runs_takes_its_failure_back(app):
    """While other children are pending, the redrive moves the child's count from failed back
    to pending (one transaction): its success then counts as any child's, and the parent
    succeeds."""
    parent, [redriven_child, other] = started_parent(app.services.store, ["BRD-001", "RLL-001"])
    dead_letter_worker_stopped(app, redriven_child)
    running = job(app, parent.task_id)
    assert running.status.value == "STARTED"
    assert (running.children.failed, running.children.pending) == (1, 1)

    app.redrive_dead_letters()
    assert app.run_worker() == {"batchItemFailures": []}
    done = job(app, redriven_child.task_id)
    assert done.status.value == "SUCCESS" and not done.parent_counted
    counts = job(app, parent.task_id).children
    assert (counts.failed, counts.succeeded, counts.pending) == (0, 1, 1)
    assert job(app, parent.task_id).status.value == "STARTED"

    app.services.queue.send(other.message())
    assert app.run_worker() == {"batchItemFailures": []}
    finished = job(app, parent.task_id)
    assert finished.status.value == "SUCCESS" and finished.error is None
    assert (finished.children.succeeded, finished.children.failed) == (2, 0)
    assert len(model_versions(app)) == 1 and len(model_versions(app, "RLL-001")) == 1


def test_a_child_redriven_after_its_parent_was_cancelled_is_revoked_not_trained(app):
    """A child dead-lettered while its parent ran, then the parent cancelled (an admin), then
    the DLQ redriven (it moves every message): the parent has finished, so the redriven child
    is its own (parent_counted), and the cancel still reaches it: revoked without work."""
    store = app.services.store
    parent, [redriven_child, other] = started_parent(store, ["BRD-001", "RLL-001"])
    dead_letter_worker_stopped(app, redriven_child)
    cancel = api_event(
        "status/cancel.json", path_parameters={"task_id": parent.task_id}, caller=ADMIN_CALLER
    )
    assert invoke("status", cancel)["statusCode"] == 200
    cancelled = job(app, parent.task_id)
    assert cancelled.status.value == "REVOKED"
    assert job(app, other.task_id).status.value == "REVOKED"

    app.redrive_dead_letters()
    runs = []
    [message] = app.receive()
    assert app.process(message, lambda *args: runs.append(args) or {}) == "skipped"
    assert runs == []
    done = job(app, redriven_child.task_id)
    assert done.status.value == "REVOKED" and done.parent_counted
    assert job(app, parent.task_id) == cancelled  # its counters as the cancel left them


def test_a_batch_runs_its_records_at_once_reports_only_the_bad_one_and_logs_each_job(app):
    """The records of a batch run in threads at the same time: each job succeeds on its own,
    the unparseable record alone is reported, and every log line names its own job."""
    from siprems.observability import logger

    submit(app)
    app.run_worker()  # BRD-001's model
    task_ids = [submit(app, "submit/predict-async.json") for _ in range(4)]  # BRD-001
    app.sqs.send_message(QueueUrl=app.queue_url, MessageBody="this is not a job message")
    messages = app.receive()
    assert len(messages) == 5
    poison = next(m for m in messages if m["Body"] == "this is not a job message")

    stream = io.StringIO()
    previous = logger.registered_handler.setStream(stream)
    try:
        response = invoke("worker", app.sqs_event(messages))
    finally:
        logger.registered_handler.setStream(previous)
    assert response == {"batchItemFailures": [{"itemIdentifier": poison["MessageId"]}]}
    for task_id in task_ids:
        assert job(app, task_id).status.value == "SUCCESS"
        assert stored_result(app, task_id)["product_sku"] == "BRD-001"

    logs = [line for line in json_lines(stream.getvalue()) if line.get("level")]
    succeeded = [line for line in logs if line["message"] == "job succeeded"]
    assert sorted(line["task_id"] for line in succeeded) == sorted(task_ids)
    for line in succeeded:  # the figures of the thread's own job, not another record's
        assert line["result_bytes"] == len(pack_json(stored_result(app, line["task_id"])))
    started = [line["task_id"] for line in logs if line["message"] == "job started"]
    assert sorted(started) == sorted(task_ids)


def test_a_batch_of_trainings_trains_each_product(app):
    """Two products trained by one invocation (records in threads, trainings one at a time:
    siprems.jobs.runner.TRAINING_SLOT): each gets its model and its job succeeds."""
    skus = ["BRD-001", "CRS-001"]
    task_ids = []
    for sku in skus:
        event = api_event("submit/train-product.json", path_parameters={"sku": sku})
        response = invoke("submit", event)
        assert response["statusCode"] == 202, response["body"]
        task_ids.append(response_json(response)["task_id"])
    messages = app.receive()
    assert len(messages) == 2
    assert invoke("worker", app.sqs_event(messages)) == {"batchItemFailures": []}
    for task_id, sku in zip(task_ids, skus, strict=True):
        assert job(app, task_id).status.value == "SUCCESS"
        assert len(model_versions(app, sku)) == 1


def test_forecasts_of_untrained_products_train_one_at_a_time(app, monkeypatch):
    """A forecast of a product without a model trains it first: that training takes the
    worker's training slot too (two fits side by side would double the memory a worker is
    sized for), while the batch's records still run in threads; a forecast that waited for
    the slot uses the model another forecast of its product trained meanwhile."""
    import threading

    import siprems.forecasting.service as forecasting

    real_train = forecasting._train
    running, most = [0], [0]
    lock = threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real_train(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(forecasting, "_train", counted)
    skus = ["BRD-001", "CRS-001", "RLL-001", "BRD-001"]
    task_ids = []
    for sku in skus:
        body = {"product_sku": sku, "days": 7}
        response = invoke("submit", api_event("submit/predict-async.json", body=body))
        assert response["statusCode"] == 202, response["body"]
        task_ids.append(response_json(response)["task_id"])
    messages = app.receive()
    assert len(messages) == 4
    assert invoke("worker", app.sqs_event(messages)) == {"batchItemFailures": []}
    assert [job(app, t).status.value for t in task_ids] == ["SUCCESS"] * 4
    assert most[0] == 1
    assert {sku: len(model_versions(app, sku)) for sku in skus} == dict.fromkeys(skus, 1)


def test_a_redelivered_child_finishes_a_parent_an_earlier_version_left_started(app):
    """Until 2026-12 a child's count and its parent's finish were two writes: a worker that
    stopped between them left the parent STARTED with nothing pending. A delivery of such a
    child (its message came back) finishes the parent."""
    import boto3
    from siprems.jobs.model import JobStatus

    store = app.services.store
    parent, [child] = started_parent(store, ["BRD-001"], children_started=True)
    # What that version's transaction wrote, and nothing after it.
    table = boto3.resource("dynamodb").Table(store.table_name)
    table.update_item(
        Key={"task_id": child.task_id},
        UpdateExpression="SET #s = :success, result_gz = :result",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":success": "SUCCESS", ":result": pack_json({"ok": 1})},
    )
    table.update_item(
        Key={"task_id": parent.task_id},
        UpdateExpression="ADD children_succeeded :one, children_pending :minus_one",
        ExpressionAttributeValues={":one": 1, ":minus_one": -1},
    )
    assert store.get(parent.task_id).status is JobStatus.STARTED
    app.services.queue.send(child.message())  # SQS delivers the message again
    assert app.run_worker() == {"batchItemFailures": []}
    finished = store.get(parent.task_id)
    assert finished.status is JobStatus.SUCCESS
    assert (finished.children.succeeded, finished.children.pending) == (1, 0)


def test_an_unexpected_exception_is_retried_not_failed_at_once(app):
    from siprems.jobs.runner import KeepMessage

    task_id = submit(app, "submit/predict-async.json")
    [message] = app.receive()

    def broken(*args):
        raise KeyError("ds")

    with pytest.raises(KeepMessage):
        app.process(message, broken)
    retrying = job(app, task_id)
    assert retrying.status.value == "RETRY" and "KeyError" in retrying.error.message


def test_a_runs_scratch_directory_is_removed(app):
    """cmdstan writes its files under the job's work directory: Lambda's /tmp would fill up
    across a warm container's runs."""
    task_id = submit(app, "submit/predict-async.json")
    [message] = app.receive()

    def writes(running, services, work_dir):
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "output.csv").write_text("x")
        return {"ok": 1}

    assert app.process(message, writes) == "succeeded"
    assert not (app.services.settings.work_dir / task_id).exists()


def test_every_training_holds_out_the_configured_backtest_days(app, monkeypatch):
    """BACKTEST_DAYS is the hold-out window of every training: an explicit one (the nightly
    run's children are the same jobs) and the one a forecast runs for a product without a
    model."""
    reset_services(monkeypatch, BACKTEST_DAYS="14")
    trained = submit(app)
    response = invoke(
        "submit", api_event("submit/predict-async.json", body={"product_sku": "CKE-001"})
    )
    assert response["statusCode"] == 202, response["body"]
    app.drain()

    assert job(app, response_json(response)["task_id"]).status.value == "SUCCESS"
    assert stored_result(app, trained)["backtest"]["horizon_days"] == 14
    assert app.services.models.load_metadata("CKE-001")["backtest"]["horizon_days"] == 14


def emitted_metrics(out: str) -> set[str]:
    return {
        metric["Name"]
        for line in json_lines(out)
        if "_aws" in line
        for directive in line["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }


def test_a_product_the_data_cannot_serve_is_counted_apart_from_faults(app, capsys):
    """A product with too few days of sales (or gone from the database) fails every night
    until that changes: JobsRejected, so that JobsFailed and its alarm mean a fault (here a
    malformed job)."""
    outcomes = {}
    for name, params in (("rejected", {"days": 7}), ("fault", {})):
        sku = "NOPE-404" if name == "rejected" else "BRD-001"
        failing = Job.new(JobType.PREDICT, product_sku=sku, params=params)
        app.services.store.create(failing)
        app.services.queue.send(failing.message())
        capsys.readouterr()
        app.run_worker()
        assert job(app, failing.task_id).status.value == "FAILURE"
        outcomes[name] = emitted_metrics(capsys.readouterr().out) & {"JobsRejected", "JobsFailed"}
    assert outcomes == {"rejected": {"JobsRejected"}, "fault": {"JobsFailed"}}


def test_a_training_starts_only_while_a_fit_fits_in_the_invocations_time(app, monkeypatch, capsys):
    """The records of a batch pass the time check together, then their trainings take the
    worker's one training slot in turn: one whose turn comes with less than
    MIN_FIT_SECONDS_LEFT (5 s here) left would run into the Lambda timeout. Its message comes
    back untouched instead (the slot is taken before the job is claimed: no attempt used),
    and FitSeconds counts no waiting."""
    import time

    from siprems.forecasting import service as forecasting

    from tests.fixtures.app import LambdaContext, handler_module

    class Invocation(LambdaContext):
        def __init__(self, seconds: float) -> None:
            super().__init__("worker")
            self.deadline = time.monotonic() + seconds

        def get_remaining_time_in_millis(self) -> int:
            return int((self.deadline - time.monotonic()) * 1000)

    invocation = Invocation(7.5)  # room for two 1-s trainings before 5 s are left
    started_with = []

    def training(sku, **kwargs):
        started_with.append(invocation.deadline - time.monotonic())
        time.sleep(1.0)
        return {"product_sku": sku}

    monkeypatch.setattr(forecasting, "train_product", training)
    jobs = [Job.new(JobType.TRAIN, product_sku=f"T-{i}") for i in range(4)]
    for queued in jobs:
        app.services.store.create(queued)
        app.services.queue.send(queued.message())
    messages = app.receive()
    capsys.readouterr()
    response = handler_module("worker").lambda_handler(app.sqs_event(messages), invocation)

    assert len(started_with) in (2, 3) and min(started_with) >= 5.0
    fit_seconds = [
        value
        for line in json_lines(capsys.readouterr().out)
        if "FitSeconds" in line
        for value in line["FitSeconds"]
    ]
    # each training is 1 s; the second one waited 1 s for the slot before it
    assert len(fit_seconds) == len(started_with) and max(fit_seconds) < 1.9
    statuses = sorted(job(app, queued.task_id).status.value for queued in jobs)
    waiting = [job(app, q.task_id) for q in jobs if job(app, q.task_id).status.value != "SUCCESS"]
    assert statuses.count("SUCCESS") == len(started_with) and len(waiting) == 4 - len(started_with)
    assert {(w.status.value, w.attempts, w.error) for w in waiting} == {("PENDING", 0, None)}
    assert len(response["batchItemFailures"]) == len(waiting)  # their messages come back


def test_a_records_deadline_does_not_outlive_it(app):
    """The fit deadline belongs to the record being processed: a later training in the same
    thread outside the runner (a batch of one runs in the handler's thread) waits for the
    slot as long as it takes, not until a deadline long past."""
    from siprems.jobs import runner

    submit(app)
    [message] = app.receive()
    assert app.process(message, lambda *args: {}) == "succeeded"
    assert runner._FIT_DEADLINE.get() is None and runner._SLOT_WAITED.get() == 0.0
