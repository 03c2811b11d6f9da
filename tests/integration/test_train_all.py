"""Training every product: the API route (admin) and the nightly schedule share the
train_all function; children run in the worker; the parent reports their progress."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from siprems.jobs.model import Job, JobType, child_task_id, scheduled_parent_id, utc_now

from tests.fixtures.app import (
    ADMIN_CALLER,
    api_event,
    invoke,
    json_lines,
    load_event,
    response_json,
)

KIEL_SKUS = ["BRD-001", "CKE-001", "CNF-001", "CRS-001", "RLL-001", "SEA-001"]


def status(task_id):
    return invoke("status", api_event("status/task.json", path_parameters={"task_id": task_id}))


def test_training_all_from_the_api_trains_every_product(app):
    response = invoke("submit", api_event("submit/train-all.json"))
    assert response["statusCode"] == 202
    parent_id = response_json(response)["task_id"]
    # train_all started asynchronously, with the parent to record if the route does not
    [event] = app.invoked
    assert event["parent_id"] == parent_id
    submitted = Job.from_message(event["parent"])
    assert (submitted.task_id, submitted.type) == (parent_id, JobType.TRAIN_ALL)
    assert submitted.requested_by == ADMIN_CALLER["user_id"]

    queued = app.receive(visibility=0)
    assert len(queued) == len(KIEL_SKUS)
    children = {child_task_id(parent_id, sku) for sku in KIEL_SKUS}
    bodies = [json.loads(m["Body"]) for m in queued]
    assert {(b["task_id"], b["type"], b["product_sku"], b["parent_id"]) for b in bodies} == {
        (child_task_id(parent_id, sku), "train", sku, parent_id) for sku in KIEL_SKUS
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

    # EventBridge/Lambda deliver the same event again: the fan-out finished, so nothing is
    # created or queued again.
    again = invoke("train_all", event)
    assert again["parent_id"] == parent_id
    assert (again["created"], again["queued"]) == (0, 0)
    assert len(app.items()) == items_before == 1 + 6 + 1  # parent, children, SKU list shard

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
    cancel = api_event(
        "status/cancel.json", path_parameters={"task_id": parent_id}, caller=ADMIN_CALLER
    )
    assert invoke("status", cancel)["statusCode"] == 200
    for m in app.receive():
        app.sqs.delete_message(QueueUrl=app.queue_url, ReceiptHandle=m["ReceiptHandle"])
    again = invoke("train_all", event)
    assert again["status"] == "REVOKED" and again["queued"] == 0
    assert app.receive(visibility=0) == []


def test_cancelling_the_parent_revokes_the_waiting_children(app):
    response = invoke("submit", api_event("submit/train-all.json"))
    parent_id = response_json(response)["task_id"]
    cancel = invoke(
        "status",
        api_event(
            "status/cancel.json", path_parameters={"task_id": parent_id}, caller=ADMIN_CALLER
        ),
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


def test_only_an_admin_cancels_a_training_of_all_products_or_one_of_its_products(app):
    """Starting one is admin-only, and the nightly run's id can be computed: a plain user's
    cancel of the parent or of a child is a 403 that changes nothing."""
    response = invoke("submit", api_event("submit/train-all.json"))
    parent_id = response_json(response)["task_id"]
    child_id = child_task_id(parent_id, KIEL_SKUS[0])
    for task_id in (parent_id, child_id):
        refused = invoke(
            "status", api_event("status/cancel.json", path_parameters={"task_id": task_id})
        )
        assert refused["statusCode"] == 403, refused
        assert response_json(refused)["type"] == "forbidden"
    assert app.services.store.get(parent_id).status.value == "STARTED"
    children = [app.services.store.get(child_task_id(parent_id, sku)) for sku in KIEL_SKUS]
    assert {c.status.value for c in children} == {"PENDING"}


def test_a_training_of_all_products_whose_route_could_not_record_it_still_runs(
    app, monkeypatch, capsys
):
    """The route invokes train_all, then records the parent: when the record fails (or the
    route dies there), the client got an error, yet train_all records the parent from its
    event, every product trains once, and the parent is counted as submitted."""
    from siprems.errors import JobStoreUnavailableError

    def refused(job):
        raise JobStoreUnavailableError("DynamoDB PutItem on the jobs table failed")

    runs = []
    with monkeypatch.context() as patched:
        patched.setattr(app, "run_train_all", runs.append)  # Lambda took the event: runs later
        patched.setattr(app.services.store, "create_or_get", refused)
        response = invoke("submit", api_event("submit/train-all.json"))
    assert response["statusCode"] == 503
    assert app.items() == []
    emitted = json_lines(capsys.readouterr().out)
    assert any(line.get("JobsSubmitted") == [1.0] for line in emitted)

    [event] = runs
    assert invoke("train_all", event)["created"] == 6
    app.drain()
    parent = app.services.store.get(event["parent_id"])
    assert parent.status.value == "SUCCESS" and parent.children.succeeded == 6
    assert parent.requested_by == ADMIN_CALLER["user_id"]


def test_train_all_records_the_parent_of_an_api_trigger_only_while_it_is_current(app):
    """A trigger's parent past its expiry (deleted by TTL), or one that is not the trigger's,
    is not recorded: train_all runs only on a parent that exists."""
    from datetime import timedelta

    import pytest
    from siprems.errors import NotFoundError
    from siprems.jobs.model import TrainAllTrigger, utc_now

    lapsed = Job.new(JobType.TRAIN_ALL, now=utc_now() - timedelta(days=31), ttl_days=30)
    other = Job.new(JobType.TRAIN_ALL)
    for event in (
        TrainAllTrigger.for_parent(lapsed).payload,
        {"parent_id": Job.new(JobType.TRAIN_ALL).task_id, "parent": other.message()},
    ):
        with pytest.raises(NotFoundError):
            invoke("train_all", event)
    assert app.items() == []
    assert app.receive(visibility=0) == []


def test_training_all_event_without_parent_or_schedule_is_refused(app):
    import pytest
    from siprems.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        invoke("train_all", {"hello": "world"})


def derived_parent(app, count):
    """A parent whose product list is ``count`` derived SKUs (the fan-out reads only it)."""
    from bench.perf_enqueue import DerivedSkus

    app.services.sales = DerivedSkus(count)
    parent = Job.new(JobType.TRAIN_ALL)
    app.services.store.create(parent)
    expected = {child_task_id(parent.task_id, f"DRV-{i:05d}") for i in range(count)}
    return parent.task_id, expected


def started_by_another_run(app, count, *, owner, lease_seconds):
    """A parent of ``count`` derived SKUs whose fan-out another run (``owner``) started and
    holds for ``lease_seconds``, none of its children written yet."""
    from datetime import timedelta

    from siprems.jobs.model import utc_now
    from siprems.jobs.store import FanOutLease

    parent_id, expected = derived_parent(app, count)
    skus = [f"DRV-{i:05d}" for i in range(count)]
    lease = FanOutLease(owner=owner, until=utc_now() + timedelta(seconds=lease_seconds))
    store = app.services.store
    expires_at = store.get(parent_id).expires_at
    assert store.start_parent(parent_id, skus=skus, lease=lease, expires_at=expires_at).applied
    return parent_id, expected


def queued_ids(app):
    ids = []
    while messages := app.receive():
        ids += [json.loads(m["Body"])["task_id"] for m in messages]
    return ids


def test_fan_out_writes_and_queues_each_child_once_and_a_rerun_adds_nothing(app):
    """Children are written (BatchWriteItem) and queued in batches from threads."""
    from siprems.jobs.fanout import train_all

    parent_id, expected = derived_parent(app, 123)  # three chunks, the last one partial
    first = train_all(app.services, parent_id)
    assert (first.total, first.created, first.queued) == (123, 123, 123)
    ids = queued_ids(app)
    assert len(ids) == 123 and set(ids) == expected
    assert all(app.services.store.get(i).status.value == "PENDING" for i in sorted(expected)[:5])

    again = train_all(app.services, parent_id)
    assert (again.total, again.created, again.queued) == (123, 0, 0)
    assert queued_ids(app) == []
    assert len(app.items()) == 1 + 123 + 1  # the parent, its children, its SKU list's shard


def test_a_fan_out_that_failed_part_way_is_finished_by_the_retry(app):
    """The failing run lets its lease go; the retry creates what is missing with conditional
    puts and re-queues only the children still PENDING (some may have run meanwhile)."""
    import threading
    from datetime import timedelta

    import pytest
    from siprems.errors import QueueUnavailableError
    from siprems.jobs.fanout import train_all

    parent_id, expected = derived_parent(app, 120)
    services = app.services
    send_batch = services.queue.send_batch
    failing = child_task_id(parent_id, "DRV-00060")  # in the second chunk

    put_new_children = services.store.put_new_children
    begun = threading.Semaphore(0)

    def put_counted(chunk):
        put_new_children(chunk)
        begun.release()

    def send_failing_once(messages):
        messages = list(messages)
        if any(m["task_id"] == failing for m in messages):
            for _ in range(3):  # every chunk has begun: none is skipped after the failure
                assert begun.acquire(timeout=10)
            raise QueueUnavailableError("SQS is down")
        return send_batch(messages)

    services.store.put_new_children = put_counted
    services.queue.send_batch = send_failing_once
    with pytest.raises(QueueUnavailableError):
        train_all(services, parent_id)
    services.queue.send_batch = send_batch
    services.store.put_new_children = put_new_children
    sent = set(queued_ids(app))
    assert failing not in sent and len(sent) == 70  # the first and last chunks

    # Meanwhile one child runs and one finishes.
    running, finished = sorted(sent)[:2]
    services.store.mark_started(running, stale_after=timedelta(minutes=5))
    started = services.store.mark_started(finished, stale_after=timedelta(minutes=5)).job
    services.store.mark_succeeded(started, result_key="models/x")

    retry = train_all(services, parent_id)
    assert (retry.total, retry.created, retry.queued) == (120, 0, 118)
    assert sorted(queued_ids(app)) == sorted(expected - {running, finished})
    assert services.store.get(finished).status.value == "SUCCESS"
    assert len(app.items()) == 1 + 120 + 1
    assert train_all(services, parent_id).queued == 0  # and now it is done


def test_a_failed_chunk_stops_the_fan_out_from_beginning_further_chunks(app, monkeypatch):
    """Chunks not begun when one fails are skipped: the run fails anyway, and the retry would
    queue every PENDING child again (duplicate messages for all that this run queued). The
    failure surfaces in the caller only when the results before it are in: here the first
    chunk is still being written when the second fails."""
    import threading
    import time

    import pytest
    from siprems.errors import JobStoreUnavailableError
    from siprems.jobs import fanout

    monkeypatch.setattr(fanout, "CLIENT_POOL_SIZE", 2)
    parent_id, _ = derived_parent(app, 20 * fanout.CHUNK)
    services = app.services
    put_new_children = services.store.put_new_children
    second_failed = threading.Event()
    written = []

    def put_with_a_failure(chunk):
        first = chunk[0].product_sku
        if first == "DRV-00050":
            second_failed.set()
            raise JobStoreUnavailableError("DynamoDB is down")
        if first == "DRV-00000":
            second_failed.wait(10)
            time.sleep(0.5)  # time in which the other thread would go on with further chunks
        written.append(first)
        put_new_children(chunk)

    monkeypatch.setattr(services.store, "put_new_children", put_with_a_failure)
    with pytest.raises(JobStoreUnavailableError):
        fanout.train_all(services, parent_id)
    # Only the first chunk (the failing thread sets the flag before it takes another one);
    # before, that thread wrote chunk after chunk until the caller saw the failure.
    assert written == ["DRV-00000"]
    assert len(queued_ids(app)) == 50


def test_a_run_without_products_that_fails_to_finish_its_parent_lets_the_retry_in(app):
    """Without products the run finishes the parent itself; when that write fails, its
    lease goes with the failure as after a failed chunk, and the retry finishes the parent
    at once instead of waiting for the lease to run out."""
    import pytest
    from siprems.errors import JobStoreUnavailableError
    from siprems.jobs import fanout

    parent_id, _ = derived_parent(app, 0)
    store = app.services.store
    finalize_parent = store.finalize_parent

    def down(task_id):
        raise JobStoreUnavailableError("DynamoDB is down")

    store.finalize_parent = down
    with pytest.raises(JobStoreUnavailableError):
        fanout.train_all(app.services, parent_id)
    store.finalize_parent = finalize_parent

    waits = []
    fanout.train_all(app.services, parent_id, seconds_left=lambda: 5, sleep=waits.append)
    assert waits == []
    assert store.get(parent_id).status.value == "SUCCESS"


def test_a_run_stopped_part_way_is_taken_over_when_its_lease_runs_out(app, monkeypatch):
    """A holder that stopped without a word (killed) keeps its lease until its own deadline
    (plus a margin) has passed; then the next run takes over and finishes the fan-out. While
    it waits it reads the parent alone: the SKU list only once, to take over."""

    from siprems.jobs import fanout

    # 2 s: a busy machine may take most of a second to write the 30 children first
    parent_id, expected = started_by_another_run(app, 30, owner="killed-run", lease_seconds=2)
    store = app.services.store

    waits, list_reads = [], []
    read_list = store._frozen_skus
    monkeypatch.setattr(
        store, "_frozen_skus", lambda *args: list_reads.append(args) or read_list(*args)
    )

    def wait(seconds):
        waits.append(seconds)
        time.sleep(0.25)

    result = fanout.train_all(app.services, parent_id, seconds_left=lambda: 60, sleep=wait)
    assert len(waits) >= 1  # it waited for the lease first
    assert len(list_reads) == 1
    assert (result.created, result.queued) == (30, 30)
    assert set(queued_ids(app)) == expected


def test_a_second_run_while_the_lease_is_held_fails_to_be_retried_and_writes_nothing(app):

    import pytest
    from siprems.jobs import fanout

    parent_id, _ = started_by_another_run(app, 30, owner="busy-run", lease_seconds=120)

    with pytest.raises(fanout.FanOutInProgressError):
        fanout.train_all(app.services, parent_id, seconds_left=lambda: 5, sleep=lambda s: None)
    assert queued_ids(app) == []
    assert len(app.items()) == 2  # the parent and the shard of its SKU list


def test_a_run_waiting_on_a_fan_out_stops_when_the_parent_is_cancelled(app, monkeypatch):
    """A waiting run leaves as soon as the parent has finished (cancelled), without writing
    anything: also once the other run's lease has run out (its takeover would fail on the
    finished parent: before, the loop went round again at once, without a pause)."""

    from siprems.jobs import fanout

    parent_id, _ = started_by_another_run(app, 30, owner="stopped-run", lease_seconds=1)
    store = app.services.store

    waits, reads = [], []
    read_state = store.fan_out_state

    def counted_read(*args, **kwargs):
        reads.append(args)
        assert len(reads) < 50, "the waiting run went round without stopping"
        return read_state(*args, **kwargs)

    monkeypatch.setattr(store, "fan_out_state", counted_read)

    def wait(seconds):
        waits.append(seconds)
        if len(waits) == 1:
            assert store.revoke(store.get(parent_id)).applied
            time.sleep(1.1)  # and the other run's lease runs out

    result = fanout.train_all(app.services, parent_id, seconds_left=lambda: 60, sleep=wait)
    assert result.status == "REVOKED" and (result.created, result.queued) == (0, 0)
    assert len(waits) == 1
    assert queued_ids(app) == []


def test_a_child_of_a_cancelled_parent_is_revoked_without_work(app):
    """A cancel revokes the children it finds (the by_parent index, eventually consistent);
    one it missed (written by a fan-out still running, or not yet in the index) is revoked
    by the worker that claims it, and counted on the parent, instead of being trained."""
    from tests.fixtures.train_all import started_parent

    store = app.services.store
    parent, [child] = started_parent(store, ["BRD-001"])
    assert store.revoke(store.get(parent.task_id)).applied  # the cancel, before its child pass
    app.services.queue.send(child.message())

    runs = []
    [message] = app.receive()
    assert app.process(message, lambda *args: runs.append(args) or {}) == "skipped"
    assert runs == []
    assert store.get(child.task_id).status.value == "REVOKED"
    counts = store.get(parent.task_id).children
    assert (counts.revoked, counts.pending) == (1, 0)


def test_the_children_in_one_batch_read_their_parents_cancel_once(app, monkeypatch):
    """A night of trainings checks its parent for a cancel once per worker invocation, not
    once per child (a request fewer per child); each child is still trained and counted."""
    from siprems.jobs import runner

    response = invoke("submit", api_event("submit/train-all.json"))
    parent_id = response_json(response)["task_id"]
    read = []
    revoked = runner._revoked

    def reading(services, task_id):
        read.append(task_id)
        return revoked(services, task_id)

    monkeypatch.setattr(runner, "_revoked", reading)

    messages = app.receive(max_messages=3)
    assert len(messages) == 3
    invoke("worker", app.sqs_event(messages))

    assert read.count(parent_id) == 1
    children = [json.loads(m["Body"])["task_id"] for m in messages]
    assert [app.services.store.get(c).status.value for c in children] == ["SUCCESS"] * 3
    assert app.services.store.get(parent_id).children.succeeded == 3


# -- a parent finishes in its last child's write -----------------------------------------------
def store_calls(monkeypatch, before_transaction: dict[int, object] | None = None) -> list[str]:
    """The jobs table's requests from now on, by operation. ``before_transaction``: what
    another writer does just before the n-th transaction from now is sent (its own requests
    are not counted), as if DynamoDB had applied it first."""
    from siprems.jobs.store import JobStore

    real, calls, busy = JobStore._call, [], []
    actions = dict(before_transaction or {})

    def call(self, operation, **kwargs):
        if busy:
            return real(self, operation, **kwargs)
        calls.append(operation)
        n = calls.count(operation)
        action = actions.pop(n, None) if operation == "transact_write_items" else None
        if action is not None:
            busy.append(True)
            try:
                action()
            finally:
                busy.pop()
        return real(self, operation, **kwargs)

    monkeypatch.setattr(JobStore, "_call", call)
    return calls


def test_a_childs_count_reads_nothing_and_the_last_one_finishes_its_parent(jobs_store, monkeypatch):
    """A child that is not the last pending: one transaction, no read of the parent. The last
    one: its first try (as one of several pending) is cancelled, DynamoDB sends the parent's
    counters back with it, and the second transaction counts the child and finishes the
    parent: nothing is left to a later write."""
    from siprems.jobs.model import JobError, JobStatus

    from tests.fixtures.train_all import started_parent

    parent, [first, last] = started_parent(jobs_store, ["A-1", "B-1"], children_started=True)
    calls = store_calls(monkeypatch)
    assert jobs_store.mark_succeeded(first, result=b"r").applied
    assert calls == ["transact_write_items"]
    assert jobs_store.get(parent.task_id).status is JobStatus.STARTED

    calls.clear()
    assert jobs_store.mark_failed(last, error=JobError(type="x", message="y")).applied
    assert calls == ["transact_write_items", "transact_write_items"]
    done = jobs_store.get(parent.task_id)
    assert done.status is JobStatus.FAILURE and done.finished_at
    assert done.error.type == "children_failed" and "1 of 2" in done.error.message
    counts = done.children
    assert (counts.succeeded, counts.failed, counts.revoked, counts.pending) == (1, 1, 0, 0)


def test_two_last_children_finishing_at_once_are_counted_once_and_finish_the_parent(
    jobs_store, monkeypatch
):
    """Both children's transactions are sent while the parent still has two pending: DynamoDB
    applies the other child's first. This one's try as one of several is then cancelled, and
    it finishes the parent with both counts. Repeats of either outcome change nothing."""
    from siprems.jobs.model import JobError, JobStatus
    from siprems.jobs.store import Outcome

    from tests.fixtures.train_all import started_parent

    parent, [one, other] = started_parent(jobs_store, ["A-1", "B-1"], children_started=True)
    error = JobError(type="x", message="y")
    store_calls(
        monkeypatch,
        before_transaction={1: lambda: jobs_store.mark_failed(other, error=error)},
    )
    assert jobs_store.mark_succeeded(one, result=b"r").applied
    assert jobs_store.get(other.task_id).status is JobStatus.FAILURE
    done = jobs_store.get(parent.task_id)
    assert done.status is JobStatus.FAILURE and "1 of 2" in done.error.message
    counts = done.children
    assert (counts.succeeded, counts.failed, counts.pending) == (1, 1, 0)

    assert jobs_store.mark_succeeded(one, result=b"r").outcome is Outcome.TERMINAL
    assert jobs_store.mark_failed(other, error=error).outcome is Outcome.TERMINAL
    assert jobs_store.get(parent.task_id) == done


def test_a_last_child_whose_parent_changed_after_its_counters_were_read_reads_them_again(
    jobs_store, monkeypatch
):
    """Between the read of the parent's counters (the first try's cancelled condition) and
    the transaction that would finish the parent, a sibling dead-lettered earlier is redriven:
    its failure is taken back and it is pending again. The finishing transaction is pinned to
    the counters read, so it is cancelled; the child is counted as one of two pending, and the
    parent finishes with the sibling's new outcome (not FAILURE on the failure taken back)."""
    from siprems.jobs.model import JobError, JobStatus

    from tests.fixtures.train_all import started_parent

    parent, [child, sibling] = started_parent(jobs_store, ["A-1", "B-1"], children_started=True)
    stopped = jobs_store.mark_worker_stopped(
        sibling,
        stale_after=timedelta(0),
        error=JobError(type="worker_stopped", message="stopped"),
        delivery="d-1",
        now=utc_now() + timedelta(seconds=1),
    )
    assert stopped.applied
    redriven = []
    calls = store_calls(
        monkeypatch,
        before_transaction={
            2: lambda: redriven.append(jobs_store.mark_redriven(stopped.job, delivery="d-2"))
        },
    )
    assert jobs_store.mark_succeeded(child, result=b"r").applied
    assert [r.applied for r in redriven] == [True]
    # tried as one of several, then as the last, then again as one of several: no read
    assert calls == ["transact_write_items"] * 3
    running = jobs_store.get(parent.task_id)
    assert running.status is JobStatus.STARTED
    assert (running.children.succeeded, running.children.failed) == (1, 0)
    assert running.children.pending == 1

    assert jobs_store.mark_succeeded(jobs_store.get(sibling.task_id), result=b"r").applied
    done = jobs_store.get(parent.task_id)
    assert done.status is JobStatus.SUCCESS and done.error is None
    assert (done.children.succeeded, done.children.pending) == (2, 0)


def test_a_last_child_of_a_parent_cancelled_after_its_counters_were_read_is_counted_only(
    jobs_store, monkeypatch
):
    """The parent is cancelled between the read of its counters and the transaction that
    would finish it: that transaction is cancelled (the parent is no longer running), and the
    child is counted on the cancelled parent, which stays REVOKED."""
    from siprems.jobs.model import JobStatus

    from tests.fixtures.train_all import started_parent

    parent, [child] = started_parent(jobs_store, ["A-1"], children_started=True)
    store_calls(
        monkeypatch,
        before_transaction={2: lambda: jobs_store.revoke(jobs_store.get(parent.task_id))},
    )
    assert jobs_store.mark_succeeded(child, result=b"r").applied
    cancelled = jobs_store.get(parent.task_id)
    assert cancelled.status is JobStatus.REVOKED and cancelled.error is None
    assert (cancelled.children.succeeded, cancelled.children.pending) == (1, 0)
