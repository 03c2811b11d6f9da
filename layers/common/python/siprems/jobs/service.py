"""What the API does with jobs: submit, wait, cancel, describe. Plain functions over the
adapters in ``Services``; the HTTP layer only parses and shapes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from siprems.auth import Principal
from siprems.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    SipremsError,
    UnknownSkuError,
)
from siprems.jobs.model import (
    STATUS_MESSAGES,
    Job,
    JobStatus,
    JobType,
    TrainAllTrigger,
)
from siprems.jobs.services import Services
from siprems.observability import MetricUnit, logger, metrics
from siprems.queue import DeadLetter


def require_product(services: Services, sku: str) -> None:
    """UnknownSkuError (404) before anything is written."""
    if not services.sales.product_exists(sku):
        raise UnknownSkuError(sku)


def submit(services: Services, job: Job) -> Job:
    """Queue the job, then record it (PENDING). In that order so that no job is recorded
    that nothing will run or fail: a submit that dies in between (the client gets a 5xx)
    has queued a message that carries the whole job, and the worker records it from there
    (``JobRunner``). If it cannot be queued, nothing is written and the error is raised. The
    worker may record it first: the job is then returned as the worker left it."""
    services.require_queue().send(job.message())
    # counted once queued: the job runs from here, whether or not this submit records it
    metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=1)
    job = _record_queued(services, job)
    logger.info(
        "job submitted",
        extra={"task_id": job.task_id, "product_sku": job.product_sku, "job_type": job.type.value},
    )
    return job


def new_job(
    services: Services,
    type: JobType,
    *,
    principal: Principal | None,
    product_sku: str | None = None,
    params: dict[str, Any] | None = None,
) -> Job:
    return Job.new(
        type,
        product_sku=product_sku,
        params=params,
        requested_by=principal.user_id if principal else None,
        ttl_days=services.settings.job_ttl_days,
    )


def start_train_all(services: Services, principal: Principal | None) -> Job:
    """The API path of training every product: the train_all function (the nightly rule's
    target) is started asynchronously on a new parent job, then the parent is recorded;
    train_all records it itself when it runs first, or when this route died in between
    (``fanout.train_all``), as the worker does for ``submit``. If it cannot be started,
    nothing is written and the error is raised."""
    if services.invoker is None:
        raise SipremsError("TRAIN_ALL_FUNCTION is not configured")
    parent = new_job(services, JobType.TRAIN_ALL, principal=principal)
    services.invoker.invoke(TrainAllTrigger.for_parent(parent).payload)
    metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=1)  # as submit's
    parent = _record_queued(services, parent)
    logger.info("train_all submitted", extra={"task_id": parent.task_id})
    return parent


def _record_queued(services: Services, job: Job) -> Job:
    """Record a job already queued (PENDING); if what runs it recorded it first, the job as
    that left it."""
    created, existing = services.store.create_or_get(job)
    return existing if not created and existing is not None else job


def get_job(services: Services, task_id: str) -> Job:
    """The job, as clients see it: one past its ``expires_at`` is gone (DynamoDB's TTL
    deletes it up to days later; its large result may already have expired in S3)."""
    job = services.store.get(task_id)
    if job is None or job.expired:
        raise NotFoundError(f"no task with id {task_id!r}", task_id=task_id)
    return job


def wait_for_terminal(
    services: Services,
    task_id: str,
    timeout: float,
    *,
    poll_seconds: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Job:
    """Poll the job until it is terminal or ``timeout`` seconds passed; the job as last seen."""
    deadline = clock() + max(timeout, 0.0)
    while True:
        job = get_job(services, task_id)
        if job.terminal or clock() >= deadline:
            return job
        sleep(min(poll_seconds, max(deadline - clock(), 0.0)))
        poll_seconds = min(poll_seconds * 1.5, 1.0)


def cancel(services: Services, task_id: str, *, admin: bool) -> Job:
    """REVOKED for a job that has not finished; a train_all parent takes its waiting
    children with it. ConflictError (409) if it already finished; ForbiddenError (403) for a
    train_all or one of its children unless the caller is an admin (starting one is
    admin-only, and the nightly run's id can be computed)."""
    job = get_job(services, task_id)
    if not admin and (job.type is JobType.TRAIN_ALL or job.parent_id):
        raise ForbiddenError(
            "cancelling a training of all products (or one of its products) needs the admin role",
            task_id=task_id,
        )
    transition = services.store.revoke(job)
    if not transition.applied:
        current = transition.job
        if current is None:
            raise NotFoundError(f"no task with id {task_id!r}", task_id=task_id)
        raise ConflictError(
            f"task {task_id} already finished with status {current.status.value}",
            task_id=task_id,
            status=current.status.value,
        )
    if job.type is JobType.TRAIN_ALL:
        for child_id in services.store.child_ids(task_id):
            child = services.store.get(child_id)
            if child is not None and child.status in (JobStatus.PENDING, JobStatus.RETRY):
                services.store.revoke(child)
    logger.info("job revoked", extra={"task_id": task_id, "product_sku": job.product_sku})
    assert transition.job is not None
    return transition.job


def job_view(job: Job, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The API body of a job (the original's fields first)."""
    body: dict[str, Any] = {
        "task_id": job.task_id,
        "status": job.status.value,
        "created_at": job.created_at,
        "message": STATUS_MESSAGES[job.status],
        "type": job.type.value,
    }
    if job.product_sku:
        body["product_sku"] = job.product_sku
    if job.params:
        body["params"] = job.params
    for name in ("started_at", "finished_at", "parent_id"):
        if getattr(job, name):
            body[name] = getattr(job, name)
    body["attempts"] = job.attempts
    if job.children is not None:
        counts = job.children
        body["progress"] = {
            "total": counts.total,
            "done": counts.done,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "revoked": counts.revoked,
            "pending": counts.pending,
        }
    if job.error is not None and job.status in (JobStatus.FAILURE, JobStatus.RETRY):
        body["error"] = job.error.model_dump()
    if result is not None:
        body["result"] = result
    return body


def dead_letter_view(letter: DeadLetter) -> dict[str, Any]:
    """A DLQ message as the admin view shows it, with what it is: ``kind`` "job" (a job
    message SQS moved after maxReceiveCount deliveries), "train_all" (a train_all trigger
    Lambda dead-lettered after every attempt failed: its parent, and the schedule tick of a
    nightly run) or "unknown"."""
    body = asdict(letter)
    trigger = TrainAllTrigger.from_payload(letter.body)
    if trigger is not None:
        body["kind"] = "train_all"
        body["train_all"] = {
            "parent_id": trigger.parent_id,
            "scheduled_time": trigger.scheduled_time,
        }
    elif isinstance(letter.body, dict) and letter.body.get("task_id"):
        body["kind"] = "job"
    else:
        body["kind"] = "unknown"
    return body


def redrive_dead_letters(services: Services) -> str:
    """Move every DLQ message to the jobs queue; returns the move task's handle. The jobs
    queue is named: messages Lambda dead-lettered have no source queue to return to."""
    return services.require_dead_letters().redrive(services.require_queue().arn())


def load_result(services: Services, job: Job) -> dict[str, Any] | None:
    """A finished job's result: from its item, or from S3 when it was too large for it."""
    if job.status is not JobStatus.SUCCESS:
        return None
    if job.result is not None:
        return job.result
    if not job.result_key:
        return None
    return services.models.load_forecast(job.task_id)
