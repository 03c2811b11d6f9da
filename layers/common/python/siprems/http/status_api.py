"""Routes that read and cancel jobs, the dead-letter queue and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from siprems.http import json_response, principal
from siprems.http.models import (
    Cancelled,
    DeadLetters,
    RedriveStarted,
    ScheduledTasks,
    TaskList,
    TaskView,
    responses,
)
from siprems.identifiers import TASK_ID_PATTERN
from siprems.jobs import service
from siprems.jobs.model import JobStatus
from siprems.jobs.schedule import nightly_view
from siprems.jobs.services import Services

TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="Task id (uuid)")]
Limit = Annotated[int, Query(ge=1, le=200)]


def register(app: APIGatewayRestResolver, services: Callable[[], Services]) -> None:
    def status_of(task_id: str) -> Response[dict[str, Any]]:
        principal(app)
        svc = services()
        job = service.get_job(svc, task_id)
        body = service.job_view(job, service.load_result(svc, job))
        return json_response(200 if job.terminal else 202, body)

    # Literal paths first: /api/tasks/active must not be read as a task id.
    # As in Celery: "active" is running now; "scheduled" waits, retries included (a retry
    # waits for its backoff).
    @app.get(
        "/api/tasks/active",
        summary="Running jobs",
        tags=["tasks"],
        responses=responses({200: ("Running jobs", TaskList)}, 401, 422, 503),
    )
    def active(limit: Limit = 50) -> Response[dict[str, Any]]:
        principal(app)
        svc = services()
        jobs = [
            service.job_view(job)
            for job in svc.store.list_by_status(JobStatus.STARTED, limit=limit)
        ]
        # active_tasks: the original API's key for the same list (its clients read it)
        return json_response(200, {"tasks": jobs, "count": len(jobs), "active_tasks": jobs})

    @app.get(
        "/api/tasks/scheduled",
        summary="Queued jobs and the next nightly retraining",
        tags=["tasks"],
        responses=responses({200: ("Waiting jobs", ScheduledTasks)}, 401, 422, 500, 503),
    )
    def scheduled(limit: Limit = 50) -> Response[dict[str, Any]]:
        principal(app)
        svc = services()
        waiting = [
            job
            for status in (JobStatus.PENDING, JobStatus.RETRY)
            for job in svc.store.list_by_status(status, limit=limit)
        ]
        # newest first across both statuses, as each list is, and no more than asked for
        waiting.sort(key=lambda job: job.created_at, reverse=True)
        jobs = [service.job_view(job) for job in waiting[:limit]]
        settings = svc.settings
        body: dict[str, Any] = {
            "tasks": jobs,
            "count": len(jobs),
            "scheduled_tasks": jobs,  # the original API's key for the same list
            "nightly": nightly_view(
                settings.nightly_schedule, settings.nightly_enabled, datetime.now(UTC)
            ),
        }
        if svc.queue is not None:
            body["queue"] = svc.queue.approximate_counts()
        return json_response(200, body)

    task_responses = responses(
        {200: ("Finished (FAILURE with its error)", TaskView), 202: ("Not finished", TaskView)},
        *(401, 404, 422, 503),
    )

    @app.get(
        "/api/predict/task/<task_id>",
        summary="Forecast task status",
        tags=["tasks"],
        responses=task_responses,
    )
    def predict_task(task_id: TaskId) -> Response[dict[str, Any]]:
        return status_of(task_id)

    @app.get(
        "/api/tasks/<task_id>",
        summary="Task status",
        description="202 while PENDING/STARTED/RETRY, 200 when finished (FAILURE included, "
        "with its error), 404 for an unknown id.",
        tags=["tasks"],
        responses=task_responses,
    )
    def task(task_id: TaskId) -> Response[dict[str, Any]]:
        return status_of(task_id)

    @app.post(
        "/api/tasks/<task_id>/cancel",
        summary="Cancel a task",
        tags=["tasks"],
        responses=responses({200: ("Cancelled", Cancelled)}, 401, 403, 404, 409, 422, 503),
    )
    def cancel(task_id: TaskId) -> Response[dict[str, Any]]:
        caller = principal(app)
        job = service.cancel(services(), task_id, admin=caller.is_admin)
        return json_response(200, {"task_id": job.task_id, "status": job.status.value})

    @app.get(
        "/api/admin/dlq",
        summary="Dead-letter queue (admin)",
        tags=["admin"],
        responses=responses({200: ("Dead letters", DeadLetters)}, 401, 403, 422, 503),
    )
    def dead_letters(limit: Annotated[int, Query(ge=1, le=10)] = 10) -> Response[dict[str, Any]]:
        principal(app, admin=True)
        dlq = services().require_dead_letters()
        messages = [service.dead_letter_view(m) for m in dlq.peek(limit)]
        return json_response(
            200,
            {"messages": messages, "count": len(messages), "queue": dlq.approximate_counts()},
        )

    @app.post(
        "/api/admin/dlq/redrive",
        summary="Move dead letters back to the jobs queue (admin)",
        tags=["admin"],
        responses=responses({202: ("Moving", RedriveStarted)}, 401, 403, 503),
    )
    def redrive() -> Response[dict[str, Any]]:
        principal(app, admin=True)
        handle = service.redrive_dead_letters(services())
        return json_response(202, {"task_handle": handle, "status": "started"})

    @app.get(
        "/api/openapi.json",
        summary="This API's OpenAPI document",
        tags=["meta"],
        include_in_schema=False,
    )
    def openapi() -> Response[dict[str, Any]]:
        from siprems.http.openapi import openapi_document

        return json_response(200, openapi_document())
