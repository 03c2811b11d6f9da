"""Time to enqueue the children of a train-all run: ``siprems.jobs.fanout.train_all`` (the code
the nightly schedule and ``POST /api/tasks/training/all`` run) for 10,000 SKUs.

    SIPREMS_LOCALSTACK_PORT=4571 .venv/bin/python -m bench.perf_enqueue --localstack
    .venv/bin/python -m bench.perf_enqueue --children 1000      # moto in this process

``--localstack``: DynamoDB and SQS are the running local stack's (LocalStack on the host,
``localstack/launcher.py start``), reached over HTTP as a Lambda reaches AWS; the table and the
queues are created from template.yaml's definitions and deleted afterwards. Without it they
are moto in this process: moto's SQS checks every message a queue holds on each send, so
there its cost grows with the square of the queue's length (10,000 children take tens of
minutes, which says nothing about AWS); the SQS time is reported apart from the rest.

The SKU list is derived (``DRV-00000`` ...): the Kiel data has six products, and the fan-out
only reads the list, so the database part is replaced by a list of that length. Reports the
wall time, the fan-out's own CPU time per child (what sizes the train_all function's memory on
AWS) and a re-run of the same parent (at-least-once delivery: nothing created twice).

Writes ``bench/results/perf_enqueue.json`` (``--name`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

from siprems.jobs.services import CLIENT_POOL_SIZE

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


def delete_resources(endpoint_url: str) -> None:
    """The benchmark's table and queues, left over from an earlier run on the same stack."""
    import boto3
    from botocore.exceptions import ClientError

    from bench.perf_common import DLQ, QUEUE, TABLE

    with contextlib.suppress(ClientError):
        boto3.client("dynamodb", endpoint_url=endpoint_url).delete_table(TableName=TABLE)
    sqs = boto3.client("sqs", endpoint_url=endpoint_url)
    for name in (QUEUE, DLQ):
        with contextlib.suppress(ClientError):
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_enqueue")
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument(
        "--localstack", action="store_true", help="against the running local stack, not moto"
    )
    parser.add_argument("--no-rerun", action="store_true", help="skip the second run")
    parser.add_argument("--name", default="perf_enqueue", help="results file name")
    args = parser.parse_args(argv)
    fake_aws_environment()
    from moto import mock_aws

    from bench.perf_stack import localstack_running

    with localstack_running() if args.localstack else mock_aws() as entered:
        endpoint = entered if args.localstack else None
        if endpoint:
            delete_resources(endpoint)
        try:
            figures = fan_out(args, endpoint)
        finally:
            if endpoint:
                delete_resources(endpoint)
    backend = (
        f"LocalStack on the host at {endpoint} (HTTP), resources from template.yaml"
        if endpoint
        else "moto in this process (DynamoDB + SQS from template.yaml)"
    )
    write_result(
        args.name,
        {
            "protocol": {
                "aws": backend,
                "skus": "derived list DRV-00000..., the fan-out reads only the list",
            },
            **figures,
        },
    )
    return 0


def fan_out(args: argparse.Namespace, endpoint: str | None) -> dict:
    import boto3
    from siprems.jobs.fanout import train_all
    from siprems.jobs.model import Job, JobType
    from siprems.jobs.services import build_services

    env = create_resources(endpoint)
    services = build_services()
    services.sales = DerivedSkus(args.children)  # type: ignore[assignment]
    parent = Job.new(JobType.TRAIN_ALL, params={"trigger": "perf"}, requested_by="perf")
    services.store.create(parent)

    # The SQS part apart (summed over the fan-out's threads): moto's queue checks every
    # message it holds on each send, so there its cost grows with the queue's length.
    sqs_seconds = [0.0]
    lock = threading.Lock()
    send_batch = services.queue.send_batch

    def timed_send_batch(messages):
        started = time.perf_counter()
        try:
            return send_batch(messages)
        finally:
            with lock:
                sqs_seconds[0] += time.perf_counter() - started

    services.queue.send_batch = timed_send_batch  # type: ignore[method-assign]

    load_before = [round(x, 2) for x in os.getloadavg()]
    cpu_started = time.process_time()
    started = time.perf_counter()
    result = train_all(services, parent.task_id)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    first_sqs_seconds = sqs_seconds[0]

    again, rerun_seconds = None, None
    if not args.no_rerun:
        started = time.perf_counter()
        again = train_all(services, parent.task_id)  # at-least-once: the re-run
        rerun_seconds = time.perf_counter() - started

    queued = int(
        boto3.client("sqs", endpoint_url=endpoint).get_queue_attributes(
            QueueUrl=env["JOBS_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
    )
    print(
        f"train_all fan-out of {result.total} children: {seconds:.1f} s "
        f"({result.created} created, {result.queued} queued, {queued} in the queue; "
        f"{result.total / seconds:.0f} children/s; fan-out CPU "
        f"{cpu_seconds / result.total * 1000:.2f} ms per child; SQS sends "
        f"{first_sqs_seconds:.1f} thread-s; load average {load_before})"
        + (
            f"; re-run {rerun_seconds:.1f} s ({again.created} created, {again.queued} re-queued)"
            if again
            else ""
        )
    )
    return {
        "children": result.total,
        "created": result.created,
        "queued": result.queued,
        "in_queue": queued,
        "seconds": round(seconds, 2),
        "fanout_cpu_ms_per_child": round(cpu_seconds / result.total * 1000, 3),
        "sqs_send_thread_seconds": round(first_sqs_seconds, 2),
        "threads": CLIENT_POOL_SIZE,
        "dynamodb_conditional_puts": result.total,
        "sqs_send_message_batch_calls": -(-result.queued // 10),
        "children_per_second": round(result.total / seconds, 1),
        "load_average_before": load_before,
        "rerun_seconds": round(rerun_seconds, 2) if again else None,
        "rerun_created": again.created if again else None,
        "rerun_queued": again.queued if again else None,
    }


if __name__ == "__main__":
    sys.exit(main())
