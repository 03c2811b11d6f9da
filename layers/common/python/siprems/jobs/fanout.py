"""Training every product: one parent job and one child job per SKU.

The nightly schedule and ``POST /api/tasks/training/all`` both end here. Safe to run twice
(Lambda retries asynchronous invocations, EventBridge may deliver twice): the parent id of a
scheduled run derives from the schedule tick, child ids derive from (parent, SKU), and the
SKU list is frozen by the run that starts the parent (in shard items the parent names, see
``JobStore.start_parent``): every later run, and one that takes over, reads that list.

That run also takes a lease on the fan-out until its own deadline: while it holds it, no
child exists but those it wrote, so it writes them with BatchWriteItem (25 a request, no
conditions) and queues them with SendMessageBatch (10 a request): 10,000 children are 1,400
requests. Another run of the same parent waits for the fan-out to finish (or fails, to be
retried, when its own time runs out). A run that finds the lease expired (its holder stopped
part way) takes it over and finishes with conditional puts, since some children may exist
and have moved on: it creates the missing ones and re-queues those still PENDING.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from siprems.errors import NotFoundError, TransientError
from siprems.jobs.model import (
    Job,
    JobStatus,
    JobType,
    child_task_id,
    new_task_id,
    scheduled_parent_id,
    utc_now,
)
from siprems.jobs.services import CLIENT_POOL_SIZE, Services
from siprems.jobs.store import DYNAMODB_BATCH_LIMIT, FanOutLease, Outcome
from siprems.observability import MetricUnit, logger, metrics
from siprems.queue import SQS_BATCH_LIMIT

LAMBDA_MAX_SECONDS = 900.0  # the lease when the caller does not say how long it may run
LEASE_MARGIN = 10.0  # seconds: a lease outlives its holder's deadline by this much
LEASE_POLL_SECONDS = 2.0
# Children per thread task: whole requests of both kinds (2 BatchWriteItem, 5 SendMessageBatch).
CHUNK = 50
assert CHUNK % DYNAMODB_BATCH_LIMIT == 0 and CHUNK % SQS_BATCH_LIMIT == 0


class FanOutInProgressError(TransientError):
    code = "fan_out_in_progress"


@dataclass(frozen=True)
class FanOut:
    parent_id: str
    status: str
    total: int
    created: int
    queued: int


def scheduled_parent(services: Services, tick: str) -> Job:
    """The parent of a schedule tick (its event time), as train_all records it on the
    tick's first run."""
    return Job.new(
        JobType.TRAIN_ALL,
        task_id=scheduled_parent_id(tick),
        params={"trigger": "schedule", "tick": tick},
        requested_by="schedule",
        ttl_days=services.settings.job_ttl_days,
    )


def train_all(
    services: Services,
    parent_id: str,
    *,
    seconds_left: Callable[[], float] = lambda: LAMBDA_MAX_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    record_if_missing: Job | None = None,
) -> FanOut:
    """Fan out the children of ``parent_id``. ``seconds_left`` is the invocation's remaining
    time: the fan-out lease lasts that long (plus a margin), so it outlives its holder.
    ``record_if_missing``: the parent, recorded (PENDING) if it does not exist: a nightly
    tick's on its first run, or the API's when train_all runs before its route recorded it
    (the route invokes first), or the route died in between."""
    store = services.store
    state = store.fan_out_state(parent_id, with_skus=False)
    if state is None and record_if_missing is not None and not record_if_missing.expired:
        if store.create(record_if_missing):
            logger.info("train_all parent recorded", extra={"task_id": parent_id})
        state = store.fan_out_state(parent_id, with_skus=False)
    if state is None:
        raise NotFoundError(f"no train_all parent job {parent_id!r}", task_id=parent_id)
    parent = state.parent
    if parent.terminal:
        logger.info("train_all parent already finished", extra={"task_id": parent_id})
        return FanOut(parent_id, parent.status.value, 0, 0, 0)

    lease = FanOutLease(
        owner=new_task_id(), until=utc_now() + timedelta(seconds=seconds_left() + LEASE_MARGIN)
    )
    if not state.started:
        with services.sales.repository() as sales:
            skus = sorted(sales.list_skus())
        started = store.start_parent(
            parent_id, skus=skus, lease=lease, expires_at=parent.expires_at
        )
        if started.applied:
            return _fan_out(services, parent, skus, lease, conditional=False)
        if started.outcome is Outcome.TERMINAL:
            return FanOut(parent_id, started.job.status.value if started.job else "", 0, 0, 0)
        state = store.fan_out_state(parent_id, with_skus=False)  # another run started it

    # Another run started the fan-out: wait for it, or take over if it stopped part way.
    while (
        state is not None and state.started and not state.fanned_out and not state.parent.terminal
    ):
        now = utc_now()
        if not state.lease_active(now):
            expired = store.fan_out_state(parent_id)  # with the SKU list, to take over
            if expired is not None and expired.skus is not None:
                if store.take_fan_out_lease(parent_id, lease=lease, expired=expired, now=now):
                    return _fan_out(services, parent, expired.skus, lease, conditional=True)
            sleep(LEASE_POLL_SECONDS)  # another run took it first: poll, do not spin
        elif seconds_left() < LEASE_POLL_SECONDS + LEASE_MARGIN:
            raise FanOutInProgressError(
                f"train_all {parent_id}: another run is still fanning out its children",
                task_id=parent_id,
            )
        else:
            sleep(LEASE_POLL_SECONDS)
        state = store.fan_out_state(parent_id, with_skus=False)
    status = state.status.value if state is not None else parent.status.value
    children = state.parent.children if state is not None else None
    logger.info("train_all parent already fanned out", extra={"task_id": parent_id})
    return FanOut(parent_id, status, children.total if children else 0, 0, 0)


def _fan_out(
    services: Services, parent: Job, skus: list[str], lease: FanOutLease, *, conditional: bool
) -> FanOut:
    """Write and queue the children, holding ``lease``; ``conditional`` after a takeover."""
    store, queue = services.store, services.require_queue()
    parent_id = parent.task_id
    children = [
        Job.new(
            JobType.TRAIN,
            task_id=child_task_id(parent_id, sku),
            product_sku=sku,
            parent_id=parent_id,
            requested_by=parent.requested_by,
            ttl_days=services.settings.job_ttl_days,
        )
        for sku in skus
    ]

    failed = threading.Event()

    def write_and_queue(chunk: list[Job]) -> tuple[int, int]:
        """Write a chunk of children, then queue them (a child is never queued unwritten).
        After a chunk failed, the chunks not yet begun are skipped: the run fails anyway, and
        its retry re-queues every PENDING child, so their messages would be sent twice."""
        if failed.is_set():
            return 0, 0
        try:
            return write_and_queue_once(chunk)
        except BaseException:
            failed.set()
            raise

    def write_and_queue_once(chunk: list[Job]) -> tuple[int, int]:
        if not conditional:
            store.put_new_children(chunk)
            return len(chunk), queue.send_batch(child.message() for child in chunk)
        created, to_queue = 0, []
        for child in chunk:
            new, existing = store.create_or_get(child)
            if new:
                created += 1
                to_queue.append(child.message())
            elif existing is not None and existing.status is JobStatus.PENDING:
                to_queue.append(existing.message())  # its message may never have been sent
        return created, queue.send_batch(to_queue) if to_queue else 0

    # Threads overlap the round trips. An error in any thread fails the run: it lets its
    # lease go, and the run is retried as a whole (the retry takes over, see the docstring).
    chunks = [children[i : i + CHUNK] for i in range(0, len(children), CHUNK)]
    try:
        with ThreadPoolExecutor(max_workers=CLIENT_POOL_SIZE) as pool:
            results = list(pool.map(write_and_queue, chunks))
        if not skus:
            # No child will finish it: finished here, before the fan-out is marked done (a
            # run that stops before this leaves the fan-out undone, and the retry takes it
            # over; one that stops after it leaves the parent finished, and the retry
            # returns at once).
            store.finalize_parent(parent_id)
    except Exception:
        store.release_fan_out_lease(parent_id, lease=lease)
        raise
    store.mark_fanned_out(parent_id, lease=lease)
    created = sum(c for c, _ in results)
    queued = sum(q for _, q in results)
    if created:
        metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=created)
    logger.info(
        "train_all fanned out",
        extra={
            "task_id": parent_id,
            "children_total": len(skus),
            "children_created": created,
            "children_queued": queued,
            "takeover": conditional,
        },
    )
    return FanOut(parent_id, JobStatus.STARTED.value, len(skus), created, queued)
