"""Train every product: the nightly EventBridge schedule and the API's training-all route
(asynchronous invoke with {"parent_id": ..., "parent": ...}, TrainAllTrigger.for_parent) share
this function and siprems.jobs.fanout. Either parent is recorded here if it does not exist."""

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
    parent = (
        fanout.scheduled_parent(services, trigger.scheduled_time)
        if trigger.scheduled_time is not None
        else trigger.parent
    )
    with job_context(trigger.parent_id):
        return asdict(
            fanout.train_all(
                services,
                trigger.parent_id,
                seconds_left=lambda: context.get_remaining_time_in_millis() / 1000.0,
                record_if_missing=parent,
            )
        )
