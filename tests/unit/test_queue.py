"""The SQS publisher, backoff and the dead-letter queue helpers (moto; Stubber where moto
cannot answer: partial batch failures; the redrive's StartMessageMoveTask, which moto lacks,
is checked through its route in tests/integration/test_api.py)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from siprems.errors import QueueUnavailableError, TransientError
from siprems.queue import DeadLetterQueue, JobQueue, backoff_seconds


@pytest.fixture
def queues(aws):
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName="jobs",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
        },
    )["QueueUrl"]
    return sqs, url, dlq_url


def receive_all(sqs, url):
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for m in messages:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_send_and_send_batch_in_chunks_of_ten(queues):
    sqs, url, _ = queues
    queue = JobQueue(sqs, url)
    queue.send({"task_id": "one"})
    assert queue.send_batch({"task_id": f"t{i}"} for i in range(23)) == 23
    ids = sorted(b["task_id"] for b in receive_all(sqs, url))
    assert ids == sorted(["one", *(f"t{i}" for i in range(23))])


def test_send_batch_retries_only_the_failed_entries():
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = JobQueue(
        sqs, "https://sqs.us-east-1.amazonaws.com/123456789012/jobs", sleep=lambda _: None
    )
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [{"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "x"}],
                "Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError"}],
            },
        )
        stub.add_response(
            "send_message_batch",
            {"Successful": [{"Id": "1", "MessageId": "m1", "MD5OfMessageBody": "x"}], "Failed": []},
            expected_params={
                "QueueUrl": queue.queue_url,
                "Entries": [{"Id": "1", "MessageBody": '{"task_id":"b"}'}],
            },
        )
        assert queue.send_batch([{"task_id": "a"}, {"task_id": "b"}]) == 2
        stub.assert_no_pending_responses()


def test_send_batch_gives_up_after_its_attempts():
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = JobQueue(
        sqs,
        "https://sqs.us-east-1.amazonaws.com/123456789012/jobs",
        send_attempts=2,
        sleep=lambda _: None,
    )
    failed = {"Successful": [], "Failed": [{"Id": "0", "SenderFault": False, "Code": "Busy"}]}
    with Stubber(sqs) as stub:
        stub.add_response("send_message_batch", failed)
        stub.add_response("send_message_batch", failed)
        with pytest.raises(QueueUnavailableError):
            queue.send_batch([{"task_id": "a"}])


def test_unreachable_queue_is_a_transient_error(aws):
    queue = JobQueue(boto3.client("sqs"), "https://sqs.us-east-1.amazonaws.com/123456789012/nope")
    with pytest.raises(QueueUnavailableError) as raised:
        queue.send({"task_id": "a"})
    assert isinstance(raised.value, TransientError)


def test_backoff_doubles_up_to_the_maximum():
    assert [backoff_seconds(a, base=10, maximum=300) for a in range(1, 8)] == [
        10,
        20,
        40,
        80,
        160,
        300,
        300,
    ]


def test_change_visibility_hides_a_message(queues):
    sqs, url, _ = queues
    queue = JobQueue(sqs, url)
    queue.send({"task_id": "a"})
    message = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"][0]
    queue.change_visibility(message["ReceiptHandle"], 300)
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None
    assert queue.approximate_counts()["in_flight"] == 1


def test_dead_letters_are_peeked_without_being_taken(queues):
    sqs, url, dlq_url = queues
    JobQueue(sqs, url).send({"task_id": "poison"})
    for _ in range(3):  # maxReceiveCount 2: the third receive moves it to the DLQ
        sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)
    dlq = DeadLetterQueue(sqs, dlq_url)
    first = dlq.peek()
    assert [m.body for m in first] == [{"task_id": "poison"}]
    assert first[0].receive_count >= 1
    assert [m.body for m in dlq.peek()] == [{"task_id": "poison"}]  # still there
    assert dlq.approximate_counts()["visible"] == 1


def test_sqs_and_lambda_calls_give_up_well_inside_the_submit_functions_timeout(monkeypatch):
    """A SendMessage or Invoke that hangs must fail while the submit function can still
    answer (503, nothing written) rather than outlast it (botocore's defaults: 60 s a read,
    three attempts). The clients the services build (every function's: one factory) try at
    most their attempts, each up to its connect and read timeouts, with standard mode's
    backoff before each retry (at most 2^(n-1) s before retry n): all of it within half the
    submit function's timeout in template.yaml, the rest for its other calls."""
    from tests.fixtures.app import load_template, services_from_env

    services = services_from_env(
        monkeypatch,
        JOBS_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/jobs",
        TRAIN_ALL_FUNCTION="siprems-train-all",
    )
    submit = load_template()["Resources"]["SubmitFunction"]["Properties"]
    for client in (services.queue._sqs, services.invoker._lambda):
        config = client.meta.config
        attempts = config.retries["total_max_attempts"]
        assert config.retries["mode"] == "standard"
        backoff = sum(2 ** (retry - 1) for retry in range(1, attempts))
        worst = attempts * (config.connect_timeout + config.read_timeout) + backoff
        assert worst <= submit["Timeout"] / 2, (client.meta.service_model.service_name, worst)
