"""GET task status, active and scheduled lists, cancel, the dead-letter queue (admin), the
OpenAPI document (routes: siprems.http.status_api), the status page and the API docs
(siprems.http.status_page)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from siprems.http import new_resolver, status_api, status_page
from siprems.jobs.services import get_services
from siprems.observability import logger, tracer

app = new_resolver()
status_api.register(app, get_services)
status_page.register(app, get_services)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
