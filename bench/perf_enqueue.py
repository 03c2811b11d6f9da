"""Time to enqueue the children of a train-all run: ``siprems.jobs.fanout.train_all`` (the code
the nightly schedule and ``POST /api/tasks/training/all`` run) for 10,000 SKUs.

    .venv/bin/python -m bench.perf_enqueue [--children 10000]

DynamoDB and SQS are moto in this process (resources from template.yaml), so the figure is
the fan-out's own cost plus moto's, without network round trips: a lower bound for AWS,
where each conditional ``PutItem`` is a round trip of a few milliseconds. The SKU list is
derived (``DRV-00000`` ...): the Kiel data has six products, and the fan-out only reads the
list, so the database part is replaced by a list of that length.

moto's SQS checks every message a queue holds on each send, so in moto the SQS part grows
with the square of the queue's length (10,000 children take tens of minutes there, which says
nothing about AWS): the SQS time is reported apart from the rest. ``make perf`` runs 1,000.

Writes ``bench/results/perf_enqueue.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator

from bench.perf_common import create_resources, fake_aws_environment, write_result


class DerivedSkus:
    """Stands in for the sales database's product list (the only thing the fan-out reads)."""

    def __init__(self, count: int) -> None:
        self.skus = [f"DRV-{i:05d}" for i in range(count)]

    @contextlib.contextmanager
    def repository(self) -> Iterator[DerivedSkus]:
        yield self

    def list_skus(self) -> list[str]:
        return list(self.skus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_enqueue")
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--no-rerun", action="store_true", help="skip the second run")
    parser.add_argument("--name", default="perf_enqueue", help="results file name")
    args = parser.parse_args(argv)
    fake_aws_environment()

    import boto3
    from moto import mock_aws
    from siprems.jobs.fanout import train_all
    from siprems.jobs.model import Job, JobType
    from siprems.jobs.services import build_services

    with mock_aws():
        env = create_resources()
        services = build_services()
        services.sales = DerivedSkus(args.children)  # type: ignore[assignment]
        parent = Job.new(JobType.TRAIN_ALL, params={"trigger": "perf"}, requested_by="perf")
        services.store.create(parent)

        # The SQS part on its own: moto's queue checks every message it holds on each send,
        # so its cost grows with the queue's length (AWS's does not).
        sqs_seconds = [0.0]
        send_batch = services.queue.send_batch

        def timed_send_batch(messages):
            started = time.perf_counter()
            try:
                return send_batch(messages)
            finally:
                sqs_seconds[0] += time.perf_counter() - started

        services.queue.send_batch = timed_send_batch  # type: ignore[method-assign]

        started = time.perf_counter()
        fan_out = train_all(services, parent.task_id)
        seconds = time.perf_counter() - started
        first_sqs_seconds = sqs_seconds[0]

        again, rerun_seconds = None, None
        if not args.no_rerun:
            started = time.perf_counter()
            again = train_all(services, parent.task_id)  # at-least-once: the re-run
            rerun_seconds = time.perf_counter() - started

        queued = int(
            boto3.client("sqs").get_queue_attributes(
                QueueUrl=env["JOBS_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
    print(
        f"train_all fan-out of {fan_out.total} children: {seconds:.1f} s "
        f"({fan_out.created} created, {fan_out.queued} queued, {queued} in the queue; "
        f"{fan_out.total / seconds:.0f} children/s; SQS sends {first_sqs_seconds:.1f} s, "
        f"the rest {seconds - first_sqs_seconds:.1f} s)"
        + (
            f"; re-run {rerun_seconds:.1f} s ({again.created} created, "
            f"{again.queued} re-queued)"
            if again
            else ""
        )
    )
    write_result(
        args.name,
        {
            "protocol": {
                "aws": "moto in this process (DynamoDB + SQS from template.yaml)",
                "skus": "derived list DRV-00000..., the fan-out reads only the list",
            },
            "children": fan_out.total,
            "created": fan_out.created,
            "queued": fan_out.queued,
            "in_queue": queued,
            "seconds": round(seconds, 2),
            "sqs_send_seconds": round(first_sqs_seconds, 2),
            "other_seconds": round(seconds - first_sqs_seconds, 2),
            "dynamodb_conditional_puts": fan_out.total,
            "sqs_send_message_batch_calls": -(-fan_out.queued // 10),
            "children_per_second": round(fan_out.total / seconds, 1),
            "rerun_seconds": round(rerun_seconds, 2) if again else None,
            "rerun_created": again.created if again else None,
            "rerun_queued": again.queued if again else None,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
