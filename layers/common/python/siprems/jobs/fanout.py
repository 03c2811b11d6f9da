"""Training every product: one parent job and one child job per SKU.

The nightly schedule and ``POST /api/tasks/training/all`` both end here. Safe to run twice
(Lambda retries asynchronous invocations, EventBridge may deliver twice): the parent id of a
scheduled run derives from the schedule tick, child ids derive from (parent, SKU), the SKU
list is frozen on the parent at the first run, and children are created with a conditional
put, so a re-run re-queues only children still waiting and creates nothing twice.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from siprems.errors import NotFoundError
from siprems.jobs.model import Job, JobStatus, JobType, child_task_id, scheduled_parent_id
from siprems.jobs.services import CLIENT_POOL_SIZE, Services
from siprems.jobs.store import Outcome
from siprems.observability import MetricUnit, logger, metrics
from siprems.queue import SQS_BATCH_LIMIT


@dataclass(frozen=True)
class FanOut:
    parent_id: str
    status: str
    total: int
    created: int
    queued: int


def parent_for_schedule(services: Services, tick: str) -> str:
    """The parent of a schedule tick (its event time), created if it does not exist."""
    parent = Job.new(
        JobType.TRAIN_ALL,
        task_id=scheduled_parent_id(tick),
        params={"trigger": "schedule", "tick": tick},
        requested_by="schedule",
        ttl_days=services.settings.job_ttl_days,
    )
    services.store.create(parent)
    return parent.task_id


def train_all(services: Services, parent_id: str) -> FanOut:
    store = services.store
    queue = services.require_queue()
    parent = store.get(parent_id)
    if parent is None:
        raise NotFoundError(f"no train_all parent job {parent_id!r}", task_id=parent_id)
    if parent.terminal:
        logger.info("train_all parent already finished", extra={"task_id": parent_id})
        return FanOut(parent_id, parent.status.value, 0, 0, 0)

    skus = store.parent_skus(parent_id)
    if skus is None:
        with services.sales.repository() as sales:
            skus = sorted(sales.list_skus())
        started = store.start_parent(parent_id, skus=skus)
        if not started.applied:
            if started.outcome is Outcome.TERMINAL:
                return FanOut(parent_id, started.job.status.value if started.job else "", 0, 0, 0)
            # Another run started it first: use the list it froze.
            skus = store.parent_skus(parent_id) or []

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

    def create_and_queue(chunk: list[Job]) -> tuple[int, int]:
        """One SQS batch worth of children: conditional puts, then one SendMessageBatch."""
        created, to_queue = 0, []
        for child in chunk:
            new, existing = store.create_or_get(child)
            if new:
                created += 1
                to_queue.append(child.message())
            elif existing is not None and existing.status is JobStatus.PENDING:
                to_queue.append(existing.message())  # may never have been sent
        return created, queue.send_batch(to_queue) if to_queue else 0

    # Each child costs a round trip to DynamoDB (a conditional put: BatchWriteItem has no
    # conditions) and a tenth of one to SQS: threads overlap them. An error in any thread
    # fails the run, which is then retried as a whole (safe: see the module's docstring).
    chunks = [children[i : i + SQS_BATCH_LIMIT] for i in range(0, len(children), SQS_BATCH_LIMIT)]
    with ThreadPoolExecutor(max_workers=CLIENT_POOL_SIZE) as pool:
        results = list(pool.map(create_and_queue, chunks))
    created = sum(c for c, _ in results)
    queued = sum(q for _, q in results)
    if created:
        metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=created)
    if not skus:
        store.finalize_parent(parent_id)
    logger.info(
        "train_all fanned out",
        extra={
            "task_id": parent_id,
            "children_total": len(skus),
            "children_created": created,
            "children_queued": queued,
        },
    )
    return FanOut(parent_id, JobStatus.STARTED.value, len(skus), created, queued)
