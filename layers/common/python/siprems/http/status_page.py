"""The status page and the interactive API docs, served by the status function.

- ``GET /api/admin/status`` (admin, JSON): jobs by status, queue and dead-letter queue depth,
  recent failures with their errors, the next nightly run, every model's age and accuracy
  (from the model store's metadata). The view Flower gave the Celery version.
- ``GET /api/status`` (HTML, no authorizer): a page *without data* that asks for a token (or
  reads it from the address's ``#token=`` fragment, which browsers never send to a server),
  keeps it in the tab's sessionStorage and calls the JSON route above with
  ``Authorization: Bearer``: the data stays behind the authorizer, and tokens never travel in
  URLs that get logged.
- ``GET /api/docs`` (HTML) and ``GET /api/docs/{asset}``: Swagger UI on the API's own
  OpenAPI document, from the Swagger UI files Powertools ships (nothing loaded from a CDN).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Path

from siprems.errors import NotFoundError
from siprems.http import json_response, principal
from siprems.http.models import Overview, responses
from siprems.jobs.model import JobStatus, iso
from siprems.jobs.schedule import nightly_view
from siprems.jobs.services import Services

RECENT_FAILURES = 10
# Routes without the authorizer (template: Auth.Authorizer NONE); the OpenAPI document marks
# them as needing no token.
PUBLIC_PATHS = ("/api/status", "/api/docs", "/api/docs/{asset}")
SWAGGER_ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.min.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui.min.css", "text/css; charset=utf-8"),
}
HTML = "text/html; charset=utf-8"
# The pages run only their own inline code and talk only to this API.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' "
        "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# --- the data -------------------------------------------------------------------------------
def overview(services: Services, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    store = services.store
    failures = [
        {
            "task_id": job.task_id,
            "type": job.type.value,
            "product_sku": job.product_sku,
            "finished_at": job.finished_at,
            "attempts": job.attempts,
            "error": job.error.model_dump() if job.error else None,
        }
        for job in store.list_by_status(JobStatus.FAILURE, limit=RECENT_FAILURES)
    ]
    return {
        "generated_at": iso(now),
        "jobs": {status.value: store.count_by_status(status) for status in JobStatus},
        "queue": services.queue.approximate_counts() if services.queue else None,
        "dead_letters": (
            services.dead_letters.approximate_counts() if services.dead_letters else None
        ),
        "recent_failures": failures,
        "nightly": nightly_view(
            services.settings.nightly_schedule, services.settings.nightly_enabled, now
        ),
        "models": [model_row(m, now) for m in services.models.list_metadata()],
    }


def model_row(metadata: dict[str, Any], now: datetime) -> dict[str, Any]:
    backtest = metadata.get("backtest") or {}
    metrics = backtest.get("model") or {}
    trained_at = metadata.get("trained_at")
    age_hours = None
    if trained_at:
        try:
            trained = datetime.fromisoformat(str(trained_at).replace("Z", "+00:00"))
            if trained.tzinfo is None:
                trained = trained.replace(tzinfo=UTC)
            age_hours = round((now - trained).total_seconds() / 3600, 1)
        except ValueError:
            age_hours = None
    return {
        "sku": metadata.get("sku"),
        "trained_at": trained_at,
        "age_hours": age_hours,
        "accuracy": backtest.get("accuracy"),
        "mape": metrics.get("mape"),
        "mase": metrics.get("mase"),
        "coverage_80": metrics.get("coverage_80"),  # share of actuals inside the p10..p90 band
        "samples": metadata.get("samples"),
    }


# --- the routes -----------------------------------------------------------------------------
def register(app: APIGatewayRestResolver, services: Callable[[], Services]) -> None:
    @app.get(
        "/api/admin/status",
        summary="Service status (admin)",
        description="Jobs by status, queue and dead-letter queue depth, recent failures, the "
        "next nightly run, each model's age and hold-out accuracy. The page GET /api/status "
        "shows it in a browser.",
        tags=["admin"],
        responses=responses({200: ("The service's state", Overview)}, 401, 403, 500, 503),
    )
    def status_data() -> Response[dict[str, Any]]:
        principal(app, admin=True)
        return json_response(200, overview(services()))

    @app.get(
        "/api/status",
        summary="Status page (HTML)",
        description="A page for browsers, without data and without the authorizer: it asks "
        "for an admin token (or reads `#token=` from the address), then shows "
        "GET /api/admin/status and refreshes it every minute.",
        tags=["meta"],
        responses={200: page_answer("The page")},
    )
    def status_page() -> Response[str]:
        return html_response(page("status.html"))

    @app.get(
        "/api/docs",
        summary="Interactive API docs (Swagger UI, HTML)",
        tags=["meta"],
        responses={200: page_answer("The page")},
    )
    def docs_page() -> Response[str]:
        return html_response(page("docs.html"))

    @app.get(
        "/api/docs/<asset>",
        summary="Swagger UI files of the docs page",
        tags=["meta"],
        responses={
            200: {
                "description": "The file",
                "content": {
                    content_type: {"schema": {"type": "string"}}
                    for _, content_type in SWAGGER_ASSETS.values()
                },
            },
            **responses({}, 404, 422),
        },
    )
    def docs_asset(asset: Annotated[str, Path(pattern=r"^[a-z.-]{1,40}$")]) -> Response[str]:
        if asset not in SWAGGER_ASSETS:
            raise NotFoundError(f"no docs asset {asset!r}")
        _, content_type = SWAGGER_ASSETS[asset]
        return Response(
            status_code=200,
            content_type=content_type,
            body=swagger_asset(asset),
            headers={"Cache-Control": "public, max-age=86400"},
        )


def page_answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


def html_response(page: str) -> Response[str]:
    return Response(status_code=200, content_type=HTML, body=page, headers=dict(PAGE_HEADERS))


@lru_cache(maxsize=len(SWAGGER_ASSETS))
def swagger_asset(asset: str) -> str:
    filename, _ = SWAGGER_ASSETS[asset]
    folder = resources.files("aws_lambda_powertools.event_handler.openapi.swagger_ui")
    return (folder / filename).read_text(encoding="utf-8")


# --- the pages (siprems/http/pages/: plain HTML with inline script, no data in them) ---------
@lru_cache(maxsize=4)
def page(name: str) -> str:
    return (resources.files("siprems.http") / "pages" / name).read_text(encoding="utf-8")
