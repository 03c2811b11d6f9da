"""POST /api/predict, /api/predict/async, /api/tasks/training/product/{sku},
/api/tasks/training/all: validate, queue the job (or start train_all), then record it (routes:
siprems.http.submit_api; why in that order: siprems.jobs.service.submit)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from siprems.http import new_resolver, submit_api
from siprems.jobs.services import get_services
from siprems.observability import logger, metrics, tracer

app = new_resolver()
submit_api.register(app, get_services)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
