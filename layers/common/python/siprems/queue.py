"""The jobs queue (SQS): publishing, backoff and the dead-letter queue.

A job's message carries the job as it is recorded before it runs (``Job.message``): the
submit routes queue it before they record it. Once recorded, the DynamoDB item is the source
of truth.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from siprems.errors import QueueUnavailableError

SQS_BATCH_LIMIT = 10
SQS_MAX_VISIBILITY = 43_200  # 12 hours, SQS's limit
SQS_MAX_DELAY = 900  # 15 minutes, SQS's limit for DelaySeconds


def backoff_seconds(attempt: int, *, base: int, maximum: int) -> int:
    """Exponential backoff after attempt ``attempt`` (1-based): base, 2·base, 4·base, ..."""
    delay = base * 2 ** max(attempt - 1, 0)
    return int(min(delay, maximum, SQS_MAX_VISIBILITY))


class JobQueue:
    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        *,
        send_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sqs = sqs_client
        self.queue_url = queue_url
        self._send_attempts = send_attempts
        self._sleep = sleep

    def send(self, message: dict[str, Any], *, delay_seconds: int = 0) -> str:
        """Queue one message, delivered after ``delay_seconds`` (SQS allows up to 15 minutes)."""
        response = self._call(
            "send_message",
            QueueUrl=self.queue_url,
            MessageBody=_body(message),
            DelaySeconds=max(0, min(int(delay_seconds), SQS_MAX_DELAY)),
        )
        return response["MessageId"]

    def send_batch(self, messages: Iterable[dict[str, Any]]) -> int:
        """Send in batches of 10; entries SQS reports as failed are retried (with a short
        backoff) up to ``send_attempts`` times, then QueueUnavailableError. Returns the count."""
        pending = [_body(m) for m in messages]
        sent = 0
        for start in range(0, len(pending), SQS_BATCH_LIMIT):
            chunk = {
                str(i): body for i, body in enumerate(pending[start : start + SQS_BATCH_LIMIT])
            }
            for attempt in range(1, self._send_attempts + 1):
                response = self._call(
                    "send_message_batch",
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": key, "MessageBody": body} for key, body in chunk.items()],
                )
                sent += len(response.get("Successful", []))
                failed = response.get("Failed", [])
                sender_faults = [f for f in failed if f.get("SenderFault")]
                if sender_faults:
                    raise QueueUnavailableError(
                        f"SQS rejected {len(sender_faults)} messages: "
                        f"{sender_faults[0].get('Code')}"
                    )
                chunk = {f["Id"]: chunk[f["Id"]] for f in failed}
                if not chunk:
                    break
                if attempt < self._send_attempts:
                    self._sleep(0.2 * 2 ** (attempt - 1))
            else:
                raise QueueUnavailableError(
                    f"{len(chunk)} messages could not be queued "
                    f"after {self._send_attempts} attempts"
                )
        return sent

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Hide a received message for ``seconds`` (retry backoff) or show it now (0)."""
        self._call(
            "change_message_visibility",
            QueueUrl=self.queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(int(seconds), SQS_MAX_VISIBILITY)),
        )

    def approximate_counts(self) -> dict[str, int]:
        response = self._call(
            "get_queue_attributes",
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        attributes = response.get("Attributes", {})
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        }

    def arn(self) -> str:
        response = self._call(
            "get_queue_attributes", QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )
        return response["Attributes"]["QueueArn"]

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._sqs, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise QueueUnavailableError(f"SQS {operation} failed: {code}", sqs_error=code) from exc
        except BotoCoreError as exc:
            raise QueueUnavailableError(f"SQS {operation} failed: {exc}") from exc


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    body: dict[str, Any] | str
    receive_count: int
    first_received_at: int | None  # epoch ms
    sent_at: int | None  # epoch ms
    # What Lambda attaches to an asynchronous invocation it dead-letters (its message
    # attributes RequestID, ErrorCode, ErrorMessage); None for a job SQS moved here.
    error: dict[str, str] | None = None


class DeadLetterQueue(JobQueue):
    """The DLQ: look at what failed, and move it back to the jobs queue."""

    def peek(self, max_messages: int = 10) -> list[DeadLetter]:
        """Messages without taking them: received with a zero visibility timeout, so they
        stay available (a DLQ has no redrive policy, the receive count does not matter)."""
        seen: dict[str, DeadLetter] = {}
        for _ in range(3):  # SQS samples servers: a few receives find more messages
            response = self._call(
                "receive_message",
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(max_messages, SQS_BATCH_LIMIT),
                VisibilityTimeout=0,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=list(LAMBDA_ERROR_ATTRIBUTES),
            )
            for message in response.get("Messages", []):
                attributes = message.get("Attributes", {})
                seen[message["MessageId"]] = DeadLetter(
                    message_id=message["MessageId"],
                    body=_parsed(message.get("Body", "")),
                    receive_count=int(attributes.get("ApproximateReceiveCount", 0)),
                    first_received_at=_int_or_none(
                        attributes.get("ApproximateFirstReceiveTimestamp")
                    ),
                    sent_at=_int_or_none(attributes.get("SentTimestamp")),
                    error=_lambda_error(message.get("MessageAttributes", {})),
                )
            if len(seen) >= max_messages or not response.get("Messages"):
                break
        return list(seen.values())[:max_messages]

    def redrive(self, destination_arn: str) -> str:
        """Start moving every DLQ message to ``destination_arn``; returns the move task handle.
        The destination is always named: messages Lambda dead-lettered have no source queue."""
        return self._call(
            "start_message_move_task", SourceArn=self.arn(), DestinationArn=destination_arn
        )["TaskHandle"]


# Message attribute -> field of DeadLetter.error.
LAMBDA_ERROR_ATTRIBUTES = {
    "ErrorMessage": "message",
    "ErrorCode": "code",
    "RequestID": "request_id",
}


def _lambda_error(attributes: dict[str, Any]) -> dict[str, str] | None:
    error = {
        field: str(attributes[name]["StringValue"])
        for name, field in LAMBDA_ERROR_ATTRIBUTES.items()
        if "StringValue" in attributes.get(name, {})
    }
    return error or None


def _body(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), sort_keys=True)


def _parsed(body: str) -> dict[str, Any] | str:
    try:
        value = json.loads(body)
    except ValueError:
        return body
    return value if isinstance(value, dict) else body


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
