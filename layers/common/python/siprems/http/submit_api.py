"""Routes that create jobs: forecasts (async and sync-compatible) and training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path

from siprems.errors import SipremsError
from siprems.http import error_body, json_response, principal
from siprems.http.models import Forecast, PredictRequest, Submitted, responses
from siprems.identifiers import SKU_PATTERN
from siprems.jobs import service
from siprems.jobs.model import JobStatus, JobType
from siprems.jobs.services import Services

# The sync route stops waiting this long before its Lambda would time out.
SYNC_SAFETY_SECONDS = 2.0


def register(app: APIGatewayRestResolver, services: Callable[[], Services]) -> None:
    def submit_predict(request: PredictRequest) -> tuple[Services, object]:
        caller = principal(app)
        svc = services()
        service.require_product(svc, request.product_sku)
        job = service.new_job(
            svc,
            JobType.PREDICT,
            principal=caller,
            product_sku=request.product_sku,
            params={"days": request.days}
            | ({"history_days": request.history_days} if request.history_days is not None else {}),
        )
        return svc, service.submit(svc, job)

    def accepted(job, days: int, message: str) -> Response[dict[str, Any]]:
        return json_response(
            202,
            {
                "task_id": job.task_id,
                "status": "submitted",
                "message": message,
                "product_sku": job.product_sku,
                "forecast_days": days,
            },
        )

    @app.post(
        "/api/predict/async",
        summary="Queue a forecast",
        description="202 with the task id; poll GET /api/predict/task/{task_id}.",
        tags=["forecasts"],
        responses=responses({202: ("Queued", Submitted)}, 400, 401, 404, 415, 422, 503),
    )
    def predict_async(
        request: Annotated[PredictRequest, Body(embed=False)],
    ) -> Response[dict[str, Any]]:
        _, job = submit_predict(request)
        return accepted(job, request.days, "Forecast queued")

    @app.post(
        "/api/predict",
        summary="Forecast (sync-compatible)",
        description=(
            "Queues the forecast and waits for it up to a bound: 200 with the forecast "
            "(chartData, recommendations, accuracy), or 202 with the task id. A forecast that "
            "failed answers with its error's status."
        ),
        tags=["forecasts"],
        responses=responses(
            {200: ("The forecast", Forecast), 202: ("Still running: poll the task", Submitted)},
            *(400, 401, 404, 409, 415, 422, 500, 503),
        ),
    )
    def predict_sync(
        request: Annotated[PredictRequest, Body(embed=False)],
    ) -> Response[dict[str, Any]]:
        svc, job = submit_predict(request)
        remaining = app.lambda_context.get_remaining_time_in_millis() / 1000.0
        timeout = min(svc.settings.sync_wait_seconds, remaining - SYNC_SAFETY_SECONDS)
        job = service.wait_for_terminal(svc, job.task_id, timeout)
        if job.status is JobStatus.SUCCESS:
            result = service.load_result(svc, job) or {}
            return json_response(200, {**result, "task_id": job.task_id})
        if job.status is JobStatus.FAILURE and job.error is not None:
            return json_response(
                _status_of(job.error.type),
                {**error_body(job.error.message, job.error.type), "task_id": job.task_id},
            )
        if job.status is JobStatus.REVOKED:
            return json_response(
                409, {**error_body("the forecast was cancelled", "revoked"), "task_id": job.task_id}
            )
        return accepted(
            job, request.days, f"Forecast still running: poll /api/predict/task/{job.task_id}"
        )

    @app.post(
        "/api/tasks/training/product/<sku>",
        summary="Train one product's model",
        tags=["training"],
        responses=responses({202: ("Queued", Submitted)}, 401, 404, 422, 503),
    )
    def train_product(sku: Annotated[str, Path(pattern=SKU_PATTERN)]) -> Response[dict[str, Any]]:
        caller = principal(app)
        svc = services()
        service.require_product(svc, sku)
        job = service.submit(
            svc, service.new_job(svc, JobType.TRAIN, principal=caller, product_sku=sku)
        )
        return json_response(
            202,
            {
                "task_id": job.task_id,
                "status": "submitted",
                "message": f"Training of {sku} queued",
                "product_sku": sku,
            },
        )

    @app.post(
        "/api/tasks/training/all",
        summary="Train every product (admin)",
        description="The same path as the nightly schedule; the task's status shows the "
        "children's progress.",
        tags=["training"],
        responses=responses({202: ("Started", Submitted)}, 401, 403, 503),
    )
    def train_all() -> Response[dict[str, Any]]:
        caller = principal(app, admin=True)
        parent = service.start_train_all(services(), caller)
        return json_response(
            202,
            {
                "task_id": parent.task_id,
                "status": "submitted",
                "message": "Training of every product started",
            },
        )


def _status_of(code: str) -> int:
    """The HTTP status of a stored error's type (its SipremsError class)."""
    stack = [SipremsError]
    while stack:
        cls = stack.pop()
        if cls.code == code:
            return cls.http_status
        stack.extend(cls.__subclasses__())
    return 500
