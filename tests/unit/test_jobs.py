"""The job model, its state machine and the DynamoDB store (moto, table from the template)."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from siprems.jobs.model import (
    TERMINAL,
    Job,
    JobError,
    JobStatus,
    JobType,
    TrainAllTrigger,
    child_task_id,
    pack_json,
    scheduled_parent_id,
    sources_of,
)
from siprems.jobs.schedule import next_run
from siprems.jobs.store import FanOutLease, Outcome

from tests.fixtures.train_all import started_parent

STALE = timedelta(seconds=120)


def predict_job(**kw) -> Job:
    return Job.new(JobType.PREDICT, product_sku="BRD-001", params={"days": 7}, **kw)


# --- state machine -------------------------------------------------------------------------
def test_no_status_is_reached_from_a_terminal_one():
    for target in JobStatus:
        assert TERMINAL.isdisjoint(sources_of(target))


@pytest.mark.parametrize("target", [JobStatus.FAILURE, JobStatus.REVOKED])
def test_a_job_not_yet_finished_may_fail_or_be_cancelled_whatever_its_status(target):
    """The statuses JobStore's condition lets through when a job fails or is cancelled by
    someone other than the worker running it."""
    assert set(sources_of(target)) == {JobStatus.PENDING, JobStatus.STARTED, JobStatus.RETRY}


def test_job_item_round_trip_and_ttl():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    job = predict_job(now=now, ttl_days=30)
    item = job.to_item()
    assert item["status"] == "PENDING" and item["type"] == "predict"
    assert item["created_at"] == "2026-11-28T12:00:00.000Z"
    assert item["expires_at"] == int((now + timedelta(days=30)).timestamp())
    assert Job.from_item(item) == job


def test_a_message_carries_the_job_as_submitted():
    """The submit routes queue a job before they record it: its message carries everything
    its item holds until it runs, so a worker can record it (``Job.from_message``)."""
    job = predict_job(requested_by="7", ttl_days=30)
    body = json.loads(json.dumps(job.message()))  # through SQS
    assert Job.from_message(body) == job
    child = Job.new(JobType.TRAIN, product_sku="RLL-001", parent_id=job.task_id)
    assert Job.from_message(child.message()) == child


@pytest.mark.parametrize(
    "body",
    [
        {"task_id": "t-1", "type": "predict", "product_sku": "BRD-001"},  # queued before
        {"task_id": "t-1", "type": "predict", "created_at": "x", "expires_at": "soon"},
        {"parent_id": "p-1"},
        "not a job",
        None,
    ],
)
def test_a_message_without_a_whole_job_carries_none(body):
    assert Job.from_message(body) is None


def test_a_claimed_job_is_what_a_claim_leaves(jobs_store):
    """What the worker records for a job it meets before its item: the same job as a
    PENDING item claimed with ``mark_started``."""
    now = datetime.now(UTC)
    job = predict_job()
    jobs_store.create(job)
    claimed = jobs_store.mark_started(job.task_id, stale_after=STALE, now=now).job
    assert job.claimed(now) == claimed


def test_a_trigger_from_the_api_carries_its_parent_to_record():
    parent = Job.new(JobType.TRAIN_ALL, requested_by="1")
    payload = json.loads(json.dumps(TrainAllTrigger.for_parent(parent).payload))
    trigger = TrainAllTrigger.from_payload(payload)
    assert trigger is not None
    assert (trigger.parent_id, trigger.parent) == (parent.task_id, parent)
    other = Job.new(JobType.TRAIN_ALL)
    for wrong in (other.message(), predict_job(task_id=parent.task_id).message()):
        mismatched = TrainAllTrigger.from_payload({"parent_id": parent.task_id, "parent": wrong})
        assert mismatched is not None and mismatched.parent is None  # runs only if it exists
    assert TrainAllTrigger.from_payload({"parent_id": parent.task_id}).parent is None


def test_child_and_schedule_ids_are_deterministic():
    parent = scheduled_parent_id("2026-11-29T02:00:00Z")
    assert parent == scheduled_parent_id("2026-11-29T02:00:00Z")
    assert parent != scheduled_parent_id("2026-11-30T02:00:00Z")
    assert child_task_id(parent, "BRD-001") == child_task_id(parent, "BRD-001")
    assert child_task_id(parent, "BRD-001") != child_task_id(parent, "RLL-001")


# --- store ---------------------------------------------------------------------------------
def test_create_is_conditional(jobs_store):
    job = predict_job()
    assert jobs_store.create(job) is True
    assert jobs_store.create(job.model_copy(update={"product_sku": "X"})) is False
    assert jobs_store.get(job.task_id).product_sku == "BRD-001"
    assert jobs_store.get("no-such-task") is None


def test_create_or_get_answers_the_existing_job_from_the_failed_condition(jobs_store):
    job = predict_job()
    assert jobs_store.create_or_get(job) == (True, job)
    jobs_store.mark_started(job.task_id, stale_after=timedelta(minutes=5))
    created, existing = jobs_store.create_or_get(job.model_copy(update={"product_sku": "X"}))
    assert created is False
    assert existing.status is JobStatus.STARTED and existing.product_sku == "BRD-001"


def test_a_refused_update_tells_its_outcome_from_the_failed_condition_alone(
    jobs_store, monkeypatch
):
    """A refused conditional write is classified by the item its failed condition sent back,
    never by a second read: a job recorded between the write and such a read (a submit
    queues, then records) would pass for the state the write was refused in."""
    job = predict_job()
    jobs_store.create(job)
    jobs_store.mark_started(job.task_id, stale_after=STALE)
    monkeypatch.setattr(jobs_store, "get", lambda *args, **kwargs: pytest.fail("read"))
    assert jobs_store.mark_started(job.task_id, stale_after=STALE).outcome is Outcome.IN_PROGRESS
    assert jobs_store.mark_started("not-yet", stale_after=STALE).outcome is Outcome.NOT_FOUND
    assert jobs_store.revoke(predict_job()).outcome is Outcome.NOT_FOUND


def test_started_once_then_in_progress_then_taken_over_when_stale(jobs_store):
    job = predict_job()
    jobs_store.create(job)
    first = jobs_store.mark_started(job.task_id, stale_after=STALE)
    assert first.applied and first.job.status is JobStatus.STARTED and first.job.attempts == 1
    again = jobs_store.mark_started(job.task_id, stale_after=STALE)
    assert again.outcome is Outcome.IN_PROGRESS and again.job.attempts == 1
    later = datetime.now(UTC) + STALE + timedelta(seconds=1)
    takeover = jobs_store.mark_started(job.task_id, stale_after=STALE, now=later)
    assert takeover.applied and takeover.job.attempts == 2


def test_a_terminal_job_never_changes(jobs_store):
    job = predict_job()
    jobs_store.create(job)
    started = jobs_store.mark_started(job.task_id, stale_after=STALE).job
    assert jobs_store.mark_succeeded(started, result_key="forecasts/x.json").applied
    for attempt in (
        jobs_store.mark_started(job.task_id, stale_after=STALE),
        jobs_store.mark_failed(started, error=JobError(type="t", message="m")),
        jobs_store.mark_retry(job.task_id, attempt=1, error=JobError(type="t", message="m")),
        jobs_store.revoke(started),
    ):
        assert attempt.outcome is Outcome.TERMINAL
        assert attempt.job.status is JobStatus.SUCCESS
    stored = jobs_store.get(job.task_id)
    assert stored.status is JobStatus.SUCCESS and stored.result_key == "forecasts/x.json"


def test_a_result_is_kept_packed_in_the_item_and_read_back_with_the_job(jobs_store):
    job = predict_job()
    jobs_store.create(job)
    started = jobs_store.mark_started(job.task_id, stale_after=STALE).job
    result = {"product_sku": "BRD-001", "quantiles": [{"p50": 1.5}] * 30}
    done = jobs_store.mark_succeeded(started, result=pack_json(result))
    assert done.applied and done.job.result == result and done.job.result_key is None
    assert jobs_store.get(job.task_id).result == result
    assert "result" not in done.job.to_item()  # never written back as a plain attribute
    # a second completion (a duplicate run) changes nothing
    again = jobs_store.mark_succeeded(started, result=pack_json({"other": 1}))
    assert again.outcome is Outcome.TERMINAL and jobs_store.get(job.task_id).result == result


def test_a_kept_result_is_unpacked_only_when_read():
    """A status listing or a worker's completion reads the item without decompressing the
    result: an item whose packed result cannot be unpacked still gives its job."""
    item = {**predict_job().to_item(), "status": "SUCCESS", "result_gz": b"not zlib data"}
    job = Job.from_item(item)
    assert job.status is JobStatus.SUCCESS and job.result_gz == b"not zlib data"
    with pytest.raises(zlib.error):
        _ = job.result
    packed = Job.from_item({**item, "result_gz": pack_json({"p50": [1.5, 2.0]})})
    assert packed.result == {"p50": [1.5, 2.0]}


@pytest.mark.parametrize("child", [False, True])
def test_a_finishing_worker_gets_the_job_as_stored_without_reading_it_back(jobs_store, child):
    """A worker's own completion is not answered with the item (its result would come
    back): the job it returns is built from the write, and must equal the stored one."""
    parent_id = None
    if child:
        parent = Job.new(JobType.TRAIN_ALL)
        jobs_store.create(parent)
        assert start(jobs_store, parent, ["A-1", "B-1"]).applied
        parent_id = parent.task_id
    jobs = []
    for sku in ("A-1", "B-1"):
        job = Job.new(
            JobType.TRAIN,
            product_sku=sku,
            parent_id=parent_id,
            task_id=child_task_id(parent_id, sku) if child else None,
        )
        jobs_store.create(job)
        first = jobs_store.mark_started(job.task_id, stale_after=STALE).job
        error = JobError(type="database_unavailable", message="db down")
        assert jobs_store.mark_retry(job.task_id, attempt=first.attempts, error=error).applied
        jobs.append(jobs_store.mark_started(job.task_id, stale_after=STALE).job)
    assert all(job.error is not None for job in jobs)  # the first attempt's, kept on retry

    done = jobs_store.mark_succeeded(jobs[0], result=pack_json({"mase": 0.7}))
    assert done.applied and done.job.error is None and done.job.result == {"mase": 0.7}
    assert done.job == jobs_store.get(jobs[0].task_id)
    failed = jobs_store.mark_failed(jobs[1], error=JobError(type="x", message="y"))
    assert failed.applied and failed.job.error == JobError(type="x", message="y")
    assert failed.job == jobs_store.get(jobs[1].task_id)
    if child:
        counts = jobs_store.get(parent_id).children
        assert (counts.succeeded, counts.failed, counts.pending) == (1, 1, 0)


def test_a_job_succeeds_with_exactly_one_kind_of_result(jobs_store):
    job = predict_job()
    jobs_store.create(job)
    started = jobs_store.mark_started(job.task_id, stale_after=STALE).job
    with pytest.raises(ValueError):
        jobs_store.mark_succeeded(started)
    with pytest.raises(ValueError):
        jobs_store.mark_succeeded(started, result=pack_json({}), result_key="forecasts/x.json")
    assert jobs_store.get(job.task_id).status is JobStatus.STARTED
    with pytest.raises(ValueError):
        pack_json({"mase": float("nan")})  # not JSON: never stored


def test_only_the_owner_of_the_current_attempt_may_finish(jobs_store):
    job = predict_job()
    jobs_store.create(job)
    old = jobs_store.mark_started(job.task_id, stale_after=STALE).job
    later = datetime.now(UTC) + STALE + timedelta(seconds=1)
    jobs_store.mark_started(job.task_id, stale_after=STALE, now=later)  # attempt 2 takes over
    lost = jobs_store.mark_succeeded(old, result_key="forecasts/old.json")
    assert lost.outcome is Outcome.CONFLICT
    assert jobs_store.get(job.task_id).status is JobStatus.STARTED


def test_retry_keeps_the_error_and_can_start_again(jobs_store):
    job = predict_job()
    jobs_store.create(job)
    started = jobs_store.mark_started(job.task_id, stale_after=STALE).job
    error = JobError(type="database_unavailable", message="db down")
    assert jobs_store.mark_retry(job.task_id, attempt=started.attempts, error=error).applied
    stored = jobs_store.get(job.task_id)
    assert stored.status is JobStatus.RETRY and stored.error == error
    restarted = jobs_store.mark_started(job.task_id, stale_after=STALE)
    assert restarted.applied and restarted.job.attempts == 2


def test_revoke_pending_then_conflict_when_terminal(jobs_store):
    job = predict_job()
    jobs_store.create(job)
    revoked = jobs_store.revoke(job)
    assert revoked.applied and revoked.job.status is JobStatus.REVOKED
    assert jobs_store.mark_started(job.task_id, stale_after=STALE).outcome is Outcome.TERMINAL
    assert jobs_store.revoke(job).outcome is Outcome.TERMINAL


def test_missing_job_is_a_typed_outcome(jobs_store):
    assert jobs_store.mark_started("nope", stale_after=STALE).outcome is Outcome.NOT_FOUND
    ghost = predict_job()
    assert jobs_store.revoke(ghost).outcome is Outcome.NOT_FOUND


def test_list_by_status_uses_the_index_newest_first(jobs_store):
    base = datetime(2026, 11, 28, tzinfo=UTC)
    jobs = [predict_job(now=base + timedelta(minutes=i)) for i in range(3)]
    for job in jobs:
        jobs_store.create(job)
    jobs_store.mark_started(jobs[1].task_id, stale_after=STALE)
    pending = jobs_store.list_by_status(JobStatus.PENDING)
    assert [j.task_id for j in pending] == [jobs[2].task_id, jobs[0].task_id]
    assert [j.task_id for j in jobs_store.list_by_status(JobStatus.STARTED)] == [jobs[1].task_id]


def test_listings_from_the_status_index_show_whole_jobs_without_results(jobs_store):
    """The index projects only what a listing shows: each listed job's view is the view of
    the job read whole (error, attempts, times, params, a parent's progress), while results
    and a parent's SKU list stay in the table item only."""
    import boto3
    from boto3.dynamodb.conditions import Key
    from siprems.jobs.service import job_view
    from siprems.jobs.store import STATUS_INDEX

    failed = predict_job()
    jobs_store.create(failed)
    started = jobs_store.mark_started(failed.task_id, stale_after=STALE).job
    error = JobError(type="not_enough_data", message="3 days of sales")
    assert jobs_store.mark_failed(started, error=error).applied

    parent, children = started_parent(
        jobs_store, ["A-1", "B-1"], children_started=True, params={"source": "api"}
    )
    summary = pack_json({"sku": "A-1", "accuracy": 91.5})
    assert jobs_store.mark_succeeded(children[0], result=summary).applied

    (listed_failure,) = jobs_store.list_by_status(JobStatus.FAILURE)
    view = job_view(listed_failure)
    assert view == job_view(jobs_store.get(failed.task_id))
    assert view["error"] == error.model_dump() and view["attempts"] == 1
    assert view["params"] == {"days": 7} and view["started_at"] and view["finished_at"]

    listed_started = {job.task_id: job for job in jobs_store.list_by_status(JobStatus.STARTED)}
    assert set(listed_started) == {parent.task_id, children[1].task_id}
    for task_id, job in listed_started.items():
        assert job_view(job) == job_view(jobs_store.get(task_id))
    progress = job_view(listed_started[parent.task_id])["progress"]
    assert (progress["total"], progress["succeeded"], progress["pending"]) == (2, 1, 1)
    assert job_view(listed_started[children[1].task_id])["parent_id"] == parent.task_id

    table = boto3.resource("dynamodb").Table(jobs_store.table_name)

    def index_items(status: JobStatus) -> list[dict]:
        return table.query(
            IndexName=STATUS_INDEX, KeyConditionExpression=Key("status").eq(status.value)
        )["Items"]

    (success,) = index_items(JobStatus.SUCCESS)
    assert success["task_id"] == children[0].task_id and "result_gz" not in success
    assert "result_gz" in table.get_item(Key={"task_id": children[0].task_id})["Item"]
    (parent_item,) = [i for i in index_items(JobStatus.STARTED) if "children_total" in i]
    where_skus_are = {"skus_owner", "skus_shards"}
    assert not (where_skus_are | {"fanout_owner", "fanout_until"}) & set(parent_item)
    assert where_skus_are <= set(table.get_item(Key={"task_id": parent.task_id})["Item"])
    assert jobs_store.get(children[0].task_id).result == {"sku": "A-1", "accuracy": 91.5}


def test_parent_counts_children_and_finishes_in_its_last_childs_transaction(jobs_store):
    parent, children = started_parent(jobs_store, ["A-1", "B-1"], children_started=True)
    assert sorted(jobs_store.child_ids(parent.task_id)) == sorted(c.task_id for c in children)

    assert jobs_store.mark_succeeded(children[0], result_key="k").applied
    mid = jobs_store.get(parent.task_id)
    assert mid.status is JobStatus.STARTED
    assert (mid.children.total, mid.children.succeeded, mid.children.pending) == (2, 1, 1)
    assert jobs_store.finalize_parent(parent.task_id).outcome is Outcome.CONFLICT  # 1 pending

    failed = jobs_store.mark_failed(children[1], error=JobError(type="x", message="y"))
    assert failed.applied and failed.job.status is JobStatus.FAILURE
    done = jobs_store.get(parent.task_id)  # finished by that write, nothing after it
    assert done.status is JobStatus.FAILURE and done.finished_at
    assert done.children.failed == 1 and done.children.pending == 0
    assert "1 of 2" in done.error.message
    # A repeated final transition does not count twice.
    assert (
        jobs_store.mark_failed(children[1], error=JobError(type="x", message="y")).outcome
        is Outcome.TERMINAL
    )
    assert jobs_store.get(parent.task_id) == done
    assert jobs_store.finalize_parent(parent.task_id).outcome is Outcome.TERMINAL


def lease(owner: str = "run-1", seconds: float = 60) -> FanOutLease:
    return FanOutLease(owner=owner, until=datetime.now(UTC) + timedelta(seconds=seconds))


def start(jobs_store, parent: Job, skus: list[str], run: FanOutLease | None = None):
    """``parent`` started by the run holding ``run`` (run-1's lease for a minute)."""
    return jobs_store.start_parent(
        parent.task_id, skus=skus, lease=run or lease(), expires_at=parent.expires_at
    )


def test_parent_starts_once_and_its_first_run_holds_the_fan_out_lease(jobs_store):
    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    assert jobs_store.fan_out_state(parent.task_id).skus is None
    assert start(jobs_store, parent, ["A-1"], lease("run-1")).applied
    assert not start(jobs_store, parent, ["A-1", "B-1"], lease("run-2")).applied
    state = jobs_store.fan_out_state(parent.task_id)
    assert (state.status, state.skus, state.owner, state.fanned_out) == (
        JobStatus.STARTED,
        ["A-1"],
        "run-1",
        False,
    )
    assert state.lease_active(datetime.now(UTC))
    assert not state.lease_active(datetime.now(UTC) + timedelta(seconds=61))
    assert jobs_store.fan_out_state("no-such-parent") is None


def test_fan_out_lease_is_taken_over_once_and_only_when_it_ran_out(jobs_store):
    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    start(jobs_store, parent, ["A-1"], lease("run-1", seconds=60))
    held = jobs_store.fan_out_state(parent.task_id)
    now = datetime.now(UTC)
    assert not jobs_store.take_fan_out_lease(
        parent.task_id, lease=lease("run-2"), expired=held, now=now
    )
    later = now + timedelta(seconds=61)
    assert jobs_store.take_fan_out_lease(
        parent.task_id, lease=lease("run-2"), expired=held, now=later
    )
    # A third run that read the same expired lease does not get it too.
    assert not jobs_store.take_fan_out_lease(
        parent.task_id, lease=lease("run-3"), expired=held, now=later
    )
    assert jobs_store.fan_out_state(parent.task_id).owner == "run-2"
    # Only the holder marks the fan-out done or lets the lease go.
    assert not jobs_store.mark_fanned_out(parent.task_id, lease=lease("run-1"))
    assert not jobs_store.release_fan_out_lease(parent.task_id, lease=lease("run-1"))
    assert jobs_store.mark_fanned_out(parent.task_id, lease=lease("run-2"))
    done = jobs_store.fan_out_state(parent.task_id)
    assert done.fanned_out and done.lease_until is None
    assert not jobs_store.release_fan_out_lease(parent.task_id, lease=lease("run-2"))


def test_a_released_lease_can_be_taken_at_once(jobs_store):
    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    start(jobs_store, parent, ["A-1"], lease("run-1", seconds=600))
    assert jobs_store.release_fan_out_lease(parent.task_id, lease=lease("run-1"))
    released = jobs_store.fan_out_state(parent.task_id)
    now = datetime.now(UTC) + timedelta(milliseconds=5)
    assert not released.lease_active(now)
    assert jobs_store.take_fan_out_lease(
        parent.task_id, lease=lease("run-2"), expired=released, now=now
    )


def test_new_children_are_written_in_batches(jobs_store):
    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    children = [
        Job.new(
            JobType.TRAIN,
            product_sku=f"S-{i}",
            parent_id=parent.task_id,
            task_id=child_task_id(parent.task_id, f"S-{i}"),
        )
        for i in range(60)  # three requests: 25 + 25 + 10
    ]
    jobs_store.put_new_children(children)
    assert sorted(jobs_store.child_ids(parent.task_id)) == sorted(c.task_id for c in children)
    assert jobs_store.get(children[59].task_id).status is JobStatus.PENDING


# --- schedule ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("cron(0 2 * * ? *)", datetime(2026, 11, 28, 21, 0), datetime(2026, 11, 29, 2, 0)),
        ("cron(0 2 * * ? *)", datetime(2026, 11, 28, 1, 59), datetime(2026, 11, 28, 2, 0)),
        ("cron(0 2 * * ? *)", datetime(2026, 11, 28, 2, 0), datetime(2026, 11, 29, 2, 0)),
        ("cron(15 10 ? * MON-FRI *)", datetime(2026, 11, 28, 0, 0), datetime(2026, 11, 30, 10, 15)),
        ("cron(0/20 * * * ? *)", datetime(2026, 11, 28, 5, 41), datetime(2026, 11, 28, 6, 0)),
        # the step belongs to "30/60" alone: "0" stays minute 0, not 0..59
        ("cron(0,30/60 2 * * ? *)", datetime(2026, 11, 28, 2, 1), datetime(2026, 11, 28, 2, 30)),
        ("cron(0 0 1 JAN ? 2027)", datetime(2026, 11, 28), datetime(2027, 1, 1)),
    ],
)
def test_next_nightly_run(expression, after, expected):
    assert next_run(expression, after.replace(tzinfo=UTC)) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "expression", ["every night", "cron(0 2 * * ?)", "cron(0/x 2 * * ? *)", "cron(60 2 * * ? *)"]
)
def test_an_unreadable_schedule_is_a_configuration_error(expression):
    """The expression is the service's NIGHTLY_SCHEDULE, never a client's input."""
    from siprems.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        next_run(expression)


def test_rate_has_no_computable_next_run():
    assert next_run("rate(1 day)") is None


def test_a_known_product_is_not_looked_up_again_until_its_time_is_up():
    """The submit function's product check: found products are remembered for a while,
    unknown ones are looked up every time (a new product is accepted at once)."""
    from contextlib import contextmanager

    from siprems.jobs.services import SalesDatabase

    lookups = []

    class Repository:
        def product_exists(self, sku):
            lookups.append(sku)
            return sku == "BRD-001"

    class Database(SalesDatabase):
        @contextmanager
        def repository(self):
            yield Repository()

    now = [0.0]
    sales = Database(settings=None, clock=lambda: now[0])
    assert sales.product_exists("BRD-001") and sales.product_exists("BRD-001")
    assert lookups == ["BRD-001"]
    assert not sales.product_exists("NOPE-001") and not sales.product_exists("NOPE-001")
    assert lookups == ["BRD-001", "NOPE-001", "NOPE-001"]
    now[0] = SalesDatabase.KNOWN_PRODUCT_SECONDS + 1
    assert sales.product_exists("BRD-001")
    assert lookups.count("BRD-001") == 2


def random_skus(count: int, length: int = 10, seed: int = 7) -> list[str]:
    import random

    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    draw = random.Random(seed)  # noqa: S311 - test data, not a secret
    return sorted("".join(draw.choice(alphabet) for _ in range(length)) for _ in range(count))


def test_a_100000_sku_list_survives_in_shards_and_the_parent_item_stays_small(jobs_store):
    """100,000 random 10-character SKUs are ~1.2 MB as a list, three times DynamoDB's 400 KB
    item limit: they are kept in shard items beside the parent and read back whole, in
    order, while the parent, which every child's completion updates (billed by its whole
    size, 1 KB a write unit), stays under 2 KB."""
    import json

    import boto3
    from siprems.jobs.store import SKUS_PER_SHARD

    skus = random_skus(100_000)
    parent = Job.new(JobType.TRAIN_ALL, params={"trigger": "schedule"}, requested_by="schedule")
    jobs_store.create(parent)
    assert start(jobs_store, parent, skus).applied
    state = jobs_store.fan_out_state(parent.task_id)
    assert state.skus == skus
    assert state.parent.children.total == 100_000

    client = boto3.client("dynamodb")
    raw = client.get_item(TableName=jobs_store.table_name, Key={"task_id": {"S": parent.task_id}})
    item = raw["Item"]
    shards = 100_000 // SKUS_PER_SHARD
    assert (item["skus_owner"]["S"], item["skus_shards"]["N"]) == ("run-1", str(shards))
    assert "skus_gz" not in item
    # Its wire form (type tags, quotes) is larger than the size DynamoDB bills.
    assert len(json.dumps(item)) < 2_000
    last = client.get_item(
        TableName=jobs_store.table_name,
        Key={"task_id": {"S": f"{parent.task_id}#skus#run-1#{shards - 1}"}},
    )["Item"]
    assert last["expires_at"]["N"] == str(parent.expires_at)  # TTL removes it with the parent


def test_a_shard_of_the_longest_skus_is_under_the_item_limit_even_uncompressed(jobs_store):
    """The SKU column is at most 64 characters; outside the BMP each is 12 bytes of JSON.
    A shard of such SKUs is under DynamoDB's 400 KB before compression (128 KB after)."""
    import json
    import random

    from siprems.jobs.store import SKUS_PER_SHARD

    draw = random.Random(3)  # noqa: S311 - test data, not a secret
    skus = sorted(
        "".join(chr(draw.randrange(0x10000, 0x10FFFF)) for _ in range(64))
        for _ in range(SKUS_PER_SHARD + 1)
    )
    assert 300_000 < len(json.dumps(skus[:SKUS_PER_SHARD])) < 400 * 1024 - 1_000
    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    assert start(jobs_store, parent, skus).applied  # two shards
    assert jobs_store.fan_out_state(parent.task_id).skus == skus


def test_a_losing_concurrent_start_leaves_the_winners_list_as_the_one_read(jobs_store):
    """Two runs read the product list at different times and both write their shards before
    the conditional start: only the winner's shards are named by the parent."""
    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    winner, loser = random_skus(1_200, seed=1), random_skus(1_700, seed=2)
    assert start(jobs_store, parent, winner, lease("run-a")).applied
    lost = start(jobs_store, parent, loser, lease("run-b"))
    assert lost.outcome is Outcome.CONFLICT and lost.job.children.total == 1_200
    state = jobs_store.fan_out_state(parent.task_id)
    assert (state.skus, state.owner) == (winner, "run-a")
    # The loser's shards exist, unreferenced, until their TTL.
    loser_shard = jobs_store._client.get_item(
        TableName=jobs_store.table_name, Key={"task_id": f"{parent.task_id}#skus#run-b#3"}
    )
    assert "Item" in loser_shard


def test_shard_items_are_neither_jobs_by_status_nor_children(jobs_store):
    skus = random_skus(1_001)  # three shards
    parent, started = started_parent(jobs_store, skus, children_of=skus[:2], children_started=True)
    children = [child.task_id for child in started]
    listed = [j.task_id for s in JobStatus for j in jobs_store.list_by_status(s, limit=100)]
    assert sorted(listed) == sorted([parent.task_id, *children])
    assert sum(jobs_store.count_by_status(s) for s in JobStatus) == 3
    assert sorted(jobs_store.child_ids(parent.task_id)) == sorted(children)
    assert len(jobs_store.fan_out_state(parent.task_id).skus) == 1_001


def cancelled_transaction(*codes: str) -> Exception:
    """What DynamoDB raises for a cancelled TransactWriteItems, one reason per item."""
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": code} for code in codes],
        },
        "TransactWriteItems",
    )


@pytest.mark.parametrize(
    "reasons",
    [("None", "TransactionConflict"), ("TransactionConflict", "None"), ("None", "ThrottlingError")],
)
def test_a_child_whose_transaction_meets_another_is_sent_again_and_counted(
    jobs_store, monkeypatch, reasons
):
    """Children of one parent finish together and all write its item: DynamoDB cancels a
    transaction that meets another (or throttles it) without any condition failing. That
    is no answer: sent again, the child finishes and its parent counts it."""
    import siprems.jobs.store as store_module

    parent, (child, _) = started_parent(jobs_store, ["A-1", "B-1"], children_started=True)
    client = jobs_store._client
    real = client.transact_write_items
    calls, sleeps = [], []

    def cancelled_once(**request):
        calls.append(request)
        if len(calls) == 1:
            raise cancelled_transaction(*reasons)
        return real(**request)

    monkeypatch.setattr(client, "transact_write_items", cancelled_once)
    monkeypatch.setattr(store_module.time, "sleep", sleeps.append)
    finished = jobs_store.mark_succeeded(child, result_key="k")

    assert finished.applied and finished.job.status is JobStatus.SUCCESS
    assert len(calls) == 2 and len(sleeps) == 1
    counts = jobs_store.get(parent.task_id).children
    assert (counts.succeeded, counts.pending) == (1, 1)


def test_a_transaction_cancelled_every_time_is_a_transient_error_that_changes_nothing(
    jobs_store, monkeypatch
):
    """Still cancelled after every try: a StorageUnavailableError (the worker's message comes
    back), never the child finished alone with its parent's count lost."""
    import siprems.jobs.store as store_module
    from siprems.errors import StorageUnavailableError

    parent, (child, _) = started_parent(jobs_store, ["A-1", "B-1"], children_started=True)
    client = jobs_store._client

    def always_cancelled(**request):
        raise cancelled_transaction("None", "TransactionConflict")

    monkeypatch.setattr(client, "transact_write_items", always_cancelled)
    monkeypatch.setattr(store_module.time, "sleep", lambda seconds: None)
    with pytest.raises(StorageUnavailableError, match="TransactionConflict"):
        jobs_store.mark_succeeded(child, result_key="k")

    assert jobs_store.get(child.task_id).status is JobStatus.STARTED
    counts = jobs_store.get(parent.task_id).children
    assert (counts.succeeded, counts.pending) == (0, 2)


def test_what_dynamodb_leaves_unprocessed_is_sent_again(jobs_store, monkeypatch):
    """BatchWriteItem and BatchGetItem may process part of a request (throttling, a read's
    16 MB answer limit): the rest is sent again."""
    client = jobs_store._client
    table = jobs_store.table_name
    partial = {"batch_write_item": 0, "batch_get_item": 0}

    def first_call_leaves_the_last_one(operation):
        real = getattr(client, operation)

        def call(RequestItems):
            request = RequestItems[table]
            if partial[operation]:
                return real(RequestItems=RequestItems)
            partial[operation] += 1
            if operation == "batch_write_item":
                real(RequestItems={table: request[:-1]})
                return {"UnprocessedItems": {table: request[-1:]}}
            answer = real(RequestItems={table: {**request, "Keys": request["Keys"][:-1]}})
            return {**answer, "UnprocessedKeys": {table: {**request, "Keys": request["Keys"][-1:]}}}

        monkeypatch.setattr(client, operation, call)

    first_call_leaves_the_last_one("batch_write_item")
    first_call_leaves_the_last_one("batch_get_item")
    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    skus = random_skus(1_500)  # three shards
    assert start(jobs_store, parent, skus).applied
    assert jobs_store.fan_out_state(parent.task_id).skus == skus
    assert partial == {"batch_write_item": 1, "batch_get_item": 1}


def test_a_parent_started_with_its_list_in_its_item_reads_as_before(jobs_store):
    """Parents started before the list moved to shard items keep it in ``skus_gz``."""
    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    jobs_store._client.update_item(
        TableName=jobs_store.table_name,
        Key={"task_id": parent.task_id},
        UpdateExpression="SET #s = :started, skus_gz = :skus, children_total = :n",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":started": "STARTED", ":skus": pack_json(["A-1"]), ":n": 1},
    )
    assert jobs_store.fan_out_state(parent.task_id).skus == ["A-1"]


def test_a_list_whose_shards_are_gone_is_a_clear_error(jobs_store):
    from siprems.errors import NotFoundError

    parent = Job.new(JobType.TRAIN_ALL)
    jobs_store.create(parent)
    assert start(jobs_store, parent, random_skus(600)).applied
    jobs_store._client.delete_item(
        TableName=jobs_store.table_name, Key={"task_id": f"{parent.task_id}#skus#run-1#1"}
    )
    with pytest.raises(NotFoundError, match="1 of 2 shards"):
        jobs_store.fan_out_state(parent.task_id)


def test_a_stale_attempt_cannot_put_a_taken_over_job_back_to_retry(jobs_store):
    """The worker whose job was taken over (its start went stale) may not record a retry:
    the new attempt's outcome would be refused and the job run once more."""
    from siprems.jobs.model import JobError

    stale = timedelta(seconds=120)
    job = Job.new(JobType.PREDICT, product_sku="BRD-001")
    jobs_store.create(job)
    jobs_store.mark_started(job.task_id, stale_after=stale)
    later = datetime.now(UTC) + stale + timedelta(seconds=1)
    assert jobs_store.mark_started(job.task_id, stale_after=stale, now=later).job.attempts == 2
    lost = jobs_store.mark_retry(job.task_id, attempt=1, error=JobError(type="t", message="m"))
    assert lost.outcome is Outcome.CONFLICT
    assert jobs_store.get(job.task_id).status is JobStatus.STARTED


def test_the_delivery_that_dead_lettered_a_job_does_not_redrive_it(jobs_store):
    """The store's own guard (the runner checks it too): only another delivery of the
    message, one that came back from the DLQ, starts a dead-lettered job again."""

    stale = timedelta(seconds=120)
    job = Job.new(JobType.PREDICT, product_sku="BRD-001")
    jobs_store.create(job)
    started = jobs_store.mark_started(job.task_id, stale_after=stale).job
    later = datetime.now(UTC) + stale + timedelta(seconds=1)
    stopped = jobs_store.mark_worker_stopped(
        started,
        stale_after=stale,
        error=JobError(type="worker_stopped", message="m"),
        delivery="d-1",
        now=later,
    )
    assert stopped.applied and stopped.job.dead_lettered == "d-1"
    assert not jobs_store.mark_redriven(stopped.job, delivery="d-1").applied
    assert jobs_store.mark_redriven(stopped.job, delivery="d-2").applied
