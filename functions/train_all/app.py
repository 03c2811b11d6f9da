"""Train every product: the nightly EventBridge schedule and the API's training-all route
(asynchronous invoke with {"parent_id": ...}) share this function and siprems.jobs.fanout."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from siprems.errors import InvalidInputError
from siprems.jobs import fanout
from siprems.jobs.model import TrainAllTrigger
from siprems.jobs.services import get_services
from siprems.observability import job_context, logger, metrics, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    services = get_services()
    trigger = TrainAllTrigger.from_payload(event)
    if trigger is None:
        raise InvalidInputError("expected a scheduled event or {'parent_id': ...}")
    parent_id = (
        fanout.parent_for_schedule(services, trigger.scheduled_time)  # created if new
        if trigger.scheduled_time is not None
        else trigger.parent_id
    )
    with job_context(parent_id):
        return asdict(
            fanout.train_all(
                services,
                parent_id,
                seconds_left=lambda: context.get_remaining_time_in_millis() / 1000.0,
            )
        )
