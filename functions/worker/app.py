"""The jobs queue's consumer: each SQS record is one job (siprems.jobs.runner), the records
of a batch run at the same time (siprems.jobs.batch); failed records are reported
individually (ReportBatchItemFailures), the others are acknowledged."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from siprems.jobs.batch import ConcurrentBatchProcessor
from siprems.jobs.runner import JobRunner
from siprems.jobs.services import get_services
from siprems.observability import logger, metrics, tracer
from siprems.process import freeze_imported_objects

# A batch whose every record failed is reported record by record too (not as an error),
# so the backoff each record set on its visibility is kept.
processor = ConcurrentBatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)

freeze_imported_objects()  # again after Prophet's import, on a first training


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    runner = JobRunner(get_services())

    def remaining_seconds() -> float:
        return context.get_remaining_time_in_millis() / 1000.0

    def record_handler(record: SQSRecord) -> str:
        return runner.process(
            record.body,
            record.receipt_handle,
            remaining_seconds,
            int(record.attributes.get("ApproximateReceiveCount") or 1),
        )

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
