"""Request bodies, parameters and answers of the API (validated by Powertools, shown in
OpenAPI). Every status a route can answer is documented with its body, the gateway's own
401/403 included, so clients and the schema-driven fuzzing know the whole contract."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from siprems.identifiers import SKU_PATTERN
from siprems.jobs.model import JobStatus

Sku = Annotated[str, Field(pattern=SKU_PATTERN, description="Product SKU, e.g. BRD-001")]


def _integral_number(value: Any) -> Any:
    """JSON (and the document's ``integer``) counts 7.0 as the integer 7; text and booleans
    stay refused by the strict check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# 1..365 written as text: the original API read days with int(), so its clients may send "30"
DAYS_TEXT_PATTERN = r"^(?:[1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-5])$"


def _days_number(value: Any) -> Any:
    """``_integral_number``, and the days as text of the original API ("30")."""
    if isinstance(value, str) and re.fullmatch(DAYS_TEXT_PATTERN, value):
        return int(value)
    return _integral_number(value)


Days = Annotated[
    int,
    Field(ge=1, le=365, strict=True),
    BeforeValidator(_days_number),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 365},
                {"type": "string", "pattern": DAYS_TEXT_PATTERN},
            ],
            "description": "Days to forecast (1..365; also as text, as the original API took it)",
        }
    ),
]


HistoryDays = Annotated[
    Annotated[int, Field(ge=0, le=36500, strict=True), BeforeValidator(_integral_number)]
    | Literal["all"],
    Field(
        description='Days of sales history before the forecast in chartData (0..36500), or "all"; '
        "absent: the last 60 days"
    ),
]


class PredictRequest(BaseModel):
    product_sku: Sku
    days: Days = 7
    history_days: HistoryDays | None = None


# --- answers ---------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every error: a message for people and a stable type for programs."""

    error: str
    type: str
    details: Any = Field(default=None, description="Field errors of a 422, or the error's facts")
    task_id: str | None = Field(default=None, description="The job, when one was created")


class Submitted(BaseModel):
    task_id: str
    status: Literal["submitted"]
    message: str
    product_sku: str | None = None
    forecast_days: int | None = None


class TaskView(BaseModel):
    model_config = ConfigDict(extra="allow")

    task_id: str
    status: JobStatus
    created_at: str
    message: str
    type: str
    attempts: int


class TaskList(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks: list[TaskView]
    count: int


class Nightly(BaseModel):
    schedule: str = Field(description="The EventBridge expression (UTC)")
    enabled: bool = Field(description="Whether the nightly rule is on")
    next_run: str | None = Field(
        description="The next run (UTC); null when switched off or for a rate() expression"
    )


class ScheduledTasks(TaskList):
    nightly: Nightly


class Cancelled(BaseModel):
    task_id: str
    status: Literal["REVOKED"]


class RedriveStarted(BaseModel):
    task_handle: str
    status: Literal["started"]


class DeadLetters(BaseModel):
    messages: list[dict[str, Any]]
    count: int
    queue: dict[str, Any]


class Overview(BaseModel):
    model_config = ConfigDict(extra="allow")

    generated_at: str
    jobs: dict[str, int]
    recent_failures: list[dict[str, Any]]
    nightly: Nightly
    models: list[dict[str, Any]]


class Forecast(BaseModel):
    model_config = ConfigDict(extra="allow")

    task_id: str
    chartData: list[dict[str, Any]]  # noqa: N815 - the original API's field name


ERRORS: dict[int, str] = {
    400: "The body is not JSON",
    401: "No token, or a bad one (answered by the API's authorizer)",
    403: "The admin role is missing",
    404: "Unknown product SKU, task or file",
    409: "The task has already finished (or the forecast was cancelled)",
    415: "The body is not application/json",
    422: "Invalid input (the fields at fault are in details)",
    500: "The forecast failed for a reason that retrying cannot fix, or the service is "
    "misconfigured (configuration_error)",
    503: "A dependency (database, storage, queue) is unavailable: retry later",
}
JSON = "application/json"


def responses(
    ok: dict[int, tuple[str, type[BaseModel] | None]], *errors: int
) -> dict[int, OpenAPIResponse]:
    """The ``responses`` of a route: its answers (status: description, body model) and the
    error statuses it can give, each with the one error body."""
    documented: dict[int, OpenAPIResponse] = {}
    for status, (description, model) in ok.items():
        answer: OpenAPIResponse = {"description": description}
        if model is not None:
            answer["content"] = {JSON: {"model": model}}
        documented[status] = answer
    for status in errors:
        documented[status] = {
            "description": ERRORS[status],
            "content": {JSON: {"model": ErrorBody}},
        }
    return documented
