"""The worker's batch processor (records at the same time, failures reported one by one) and
the AWS clients built on first use."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from aws_lambda_powertools.utilities.batch import EventType, process_partial_response
from siprems.jobs.batch import ConcurrentBatchProcessor
from siprems.jobs.services import LazyClient

from tests.fixtures.app import services_from_env
from tests.fixtures.sqs_events import sqs_event

# How long a test waits for the other records before calling it a deadlock: a guard, not a
# measurement (nothing here depends on how fast the machine is).
DEADLOCK_GUARD_SECONDS = 30


def batch(count: int) -> dict:
    return sqs_event(
        [{"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": str(i)} for i in range(count)]
    )


def test_the_records_of_a_batch_run_at_the_same_time_and_only_the_failed_one_is_reported():
    # Every record waits for all the others: one after another, the first would never pass.
    everyone_in = threading.Barrier(4, timeout=DEADLOCK_GUARD_SECONDS)
    handled = []

    def record_handler(record):
        everyone_in.wait()
        if record.body == "2":
            raise ValueError("this record fails")
        handled.append(record.body)
        return "ok"

    response = process_partial_response(
        event=batch(4),
        record_handler=record_handler,
        processor=ConcurrentBatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False),
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert sorted(handled) == ["0", "1", "3"]


def test_failures_are_reported_in_the_batch_order_whatever_order_the_threads_end_in():
    last_done = threading.Event()

    def record_handler(record):
        if record.body == "1":  # fails only after record 3 has failed
            assert last_done.wait(DEADLOCK_GUARD_SECONDS)
            raise RuntimeError("first")
        if record.body == "3":
            last_done.set()
            raise RuntimeError("last")
        return "ok"

    processor = ConcurrentBatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
    response = process_partial_response(
        event=batch(5), record_handler=record_handler, processor=processor
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}


def test_a_batch_whose_every_record_fails_is_reported_record_by_record():
    def record_handler(record):
        raise RuntimeError("down")

    response = process_partial_response(
        event=batch(3),
        record_handler=record_handler,
        processor=ConcurrentBatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False),
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(3)]}


@pytest.mark.parametrize("max_threads", [1, 2])
def test_fewer_threads_than_records_still_handles_every_record_once(max_threads):
    handled = []

    def record_handler(record):
        handled.append(record.body)

    response = process_partial_response(
        event=batch(7),
        record_handler=record_handler,
        processor=ConcurrentBatchProcessor(EventType.SQS, max_threads=max_threads),
    )
    assert response == {"batchItemFailures": []}
    assert sorted(handled) == [str(i) for i in range(7)]


def test_a_lazy_client_is_built_on_first_use_and_once_from_many_threads():
    builds = []
    all_asking = threading.Barrier(8, timeout=DEADLOCK_GUARD_SECONDS)

    class Client:
        def describe(self) -> str:
            return "described"

    def build():
        builds.append(1)
        return Client()

    client = LazyClient(build)
    assert not client.built and builds == []

    def use(_):
        all_asking.wait()
        return client.describe()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(use, range(8))) == ["described"] * 8
    assert client.built and builds == [1]


def test_services_build_the_sqs_s3_and_lambda_clients_only_when_used(aws, monkeypatch):
    import boto3

    queue_url = boto3.client("sqs").create_queue(QueueName="jobs")["QueueUrl"]
    services = services_from_env(
        monkeypatch,
        JOBS_QUEUE_URL=queue_url,
        MODELS_BUCKET="models",
        TRAIN_ALL_FUNCTION="train-all",
    )
    sqs, s3, lambda_ = services.queue._sqs, services.models._s3, services.invoker._lambda
    assert not (sqs.built or s3.built or lambda_.built)

    services.queue.send({"task_id": "t-1"})
    assert sqs.built and not (s3.built or lambda_.built)


@pytest.mark.parametrize(
    ("lambda_endpoint", "expected"),
    [(None, "http://aws.local:4566"), ("http://lambda.local:3001", "http://lambda.local:3001")],
)
def test_the_lambda_client_calls_its_own_endpoint_when_one_is_set(
    monkeypatch, lambda_endpoint, expected
):
    """sam local start-lambda serves Lambda's API apart from the other services."""
    if lambda_endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", lambda_endpoint)
    else:
        monkeypatch.delenv("AWS_ENDPOINT_URL_LAMBDA", raising=False)
    services = services_from_env(
        monkeypatch,
        AWS_ENDPOINT_URL="http://aws.local:4566",
        AWS_DEFAULT_REGION="us-east-1",
        TRAIN_ALL_FUNCTION="train-all",
    )
    assert services.invoker._lambda.meta.endpoint_url == expected
    assert services.models._s3.meta.endpoint_url == "http://aws.local:4566"


def test_trainings_of_a_batch_run_one_at_a_time_while_forecasts_overlap(monkeypatch):
    """Records run in threads, but a process trains one product at a time (memory)."""
    import contextlib
    import time
    from types import SimpleNamespace

    import siprems.forecasting.service as forecasting
    from siprems.jobs.model import Job, JobType
    from siprems.jobs.runner import run_job

    running = {"train": 0, "predict": 0}
    most = {"train": 0, "predict": 0}
    lock = threading.Lock()

    forecasts_together = threading.Barrier(4, timeout=DEADLOCK_GUARD_SECONDS)

    def occupied(kind):
        def work(*args, **kwargs):
            with lock:
                running[kind] += 1
                most[kind] = max(most[kind], running[kind])
            if kind == "predict":
                forecasts_together.wait()  # all four at once, or a broken barrier
            else:
                time.sleep(0.05)  # long enough for the other trainings to arrive
            with lock:
                running[kind] -= 1
            return {}

        return work

    monkeypatch.setattr(forecasting, "train_product", occupied("train"))
    monkeypatch.setattr(forecasting, "forecast_product", occupied("predict"))
    services = SimpleNamespace(
        sales=SimpleNamespace(repository=lambda: contextlib.nullcontext(None)),
        settings=SimpleNamespace(backtest_days=28),
        models=None,
    )
    jobs = [Job.new(JobType.TRAIN, product_sku=f"T-{i}") for i in range(4)]
    jobs += [Job.new(JobType.PREDICT, product_sku=f"P-{i}", params={"days": 7}) for i in range(4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job: run_job(job, services, None), jobs))
    assert most == {"train": 1, "predict": 4}
