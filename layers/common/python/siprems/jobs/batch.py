"""The records of one SQS batch, handled at the same time in one worker process.

A forecast record spends most of its time waiting for AWS and the database (the job's claim
and completion in DynamoDB, the model's metadata and the result in S3, two queries): handled
one after another, a batch of five waits five times. Here each record runs in its own thread;
what each does is unchanged (``JobRunner.process``: at least once, safe twice), and Powertools
still reports the records that failed one by one (``batchItemFailures``), the others are
acknowledged. Powertools' own concurrent processor (``AsyncBatchProcessor``) needs an ``async``
record handler, and boto3 and pg8000 are blocking: threads are what runs them concurrently.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

# Threads per batch: the template's largest batch (WorkerBatchSize at most 10).
MAX_RECORD_THREADS = 10


class ConcurrentBatchProcessor(BatchProcessor):
    """``BatchProcessor`` whose records run in up to ``max_threads`` threads. Each record's
    success or failure is recorded as ``BatchProcessor`` records it (``_process_record``);
    the response lists the failed records in the batch's order."""

    def __init__(
        self,
        event_type: EventType,
        *,
        max_threads: int = MAX_RECORD_THREADS,
        raise_on_entire_batch_failure: bool = True,
    ) -> None:
        super().__init__(event_type, raise_on_entire_batch_failure=raise_on_entire_batch_failure)
        self.max_threads = max_threads

    def process(self) -> list[tuple]:
        if len(self.records) <= 1 or self.max_threads <= 1:
            return super().process()
        # A pool per batch: no thread outlives the invocation (Lambda freezes the process).
        with ThreadPoolExecutor(
            max_workers=min(self.max_threads, len(self.records)), thread_name_prefix="record"
        ) as pool:
            results = list(pool.map(self._process_record, self.records))
        self._keep_batch_order()
        return results

    def _keep_batch_order(self) -> None:
        """Threads finish in any order; the failures are reported in the batch's order."""
        position = {id(record): i for i, record in enumerate(self.records)}

        def order(record: object) -> int:
            raw = getattr(record, "raw_event", record)
            return position.get(id(raw), len(position))

        self.fail_messages.sort(key=order)
        self.success_messages.sort(key=order)
