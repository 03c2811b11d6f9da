"""The job: one DynamoDB item per task, its statuses and the transitions allowed between them.

Status names are those of the original Celery API, so its clients keep working. A terminal
status (SUCCESS, FAILURE, REVOKED) never changes again, with one exception outside the table
below: a job failed because its worker stopped on its message's last delivery carries the
``dead_lettered`` marker, and the redrive of that message from the DLQ starts it again
(``JobStore.mark_redriven``).
"""

from __future__ import annotations

import functools
import json
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from siprems.errors import SipremsError


class JobStatus(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class JobType(StrEnum):
    PREDICT = "predict"
    TRAIN = "train"
    TRAIN_ALL = "train_all"


TERMINAL = frozenset({JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.REVOKED})

# Allowed transitions. STARTED -> STARTED is the takeover of a job whose worker died (its
# Lambda timed out): only once the previous attempt is certainly over (see JobStore).
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.STARTED, JobStatus.FAILURE, JobStatus.REVOKED}),
    JobStatus.STARTED: frozenset(
        {
            JobStatus.STARTED,
            JobStatus.SUCCESS,
            JobStatus.FAILURE,
            JobStatus.RETRY,
            JobStatus.REVOKED,
        }
    ),
    JobStatus.RETRY: frozenset({JobStatus.STARTED, JobStatus.FAILURE, JobStatus.REVOKED}),
    JobStatus.SUCCESS: frozenset(),
    JobStatus.FAILURE: frozenset(),
    JobStatus.REVOKED: frozenset(),
}


def sources_of(target: JobStatus) -> list[JobStatus]:
    """The statuses from which ``target`` may be reached (for conditional writes)."""
    return [s for s, targets in TRANSITIONS.items() if target in targets]


STATUS_MESSAGES = {
    JobStatus.PENDING: "Task is waiting in the queue",
    JobStatus.STARTED: "Task is running",
    JobStatus.RETRY: "Task failed and will be retried",
    JobStatus.SUCCESS: "Task completed",
    JobStatus.FAILURE: "Task failed",
    JobStatus.REVOKED: "Task was cancelled",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Sortable UTC timestamps (the status index sorts on created_at)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_task_id() -> str:
    return str(uuid.uuid4())


def child_task_id(parent_id: str, sku: str) -> str:
    """Deterministic: a retried fan-out finds the children it already created."""
    return str(uuid.uuid5(uuid.UUID(parent_id), sku))


# Namespace of the ids of scheduled (nightly) train_all parents: one parent per schedule tick.
SCHEDULE_NAMESPACE = uuid.UUID("6f1c1c36-5f8c-4a4e-9d4b-3f0f4a3b9a51")


def scheduled_parent_id(tick: str) -> str:
    return str(uuid.uuid5(SCHEDULE_NAMESPACE, f"nightly/{tick}"))


@dataclass(frozen=True)
class TrainAllTrigger:
    """What starts the train_all function: the API's ``{"parent_id": ..., "parent": ...}``
    (``for_parent``; without "parent" before 2026-11-30) or the nightly rule's scheduled
    event. Lambda dead-letters such a payload as it was sent when every
    attempt failed, so the DLQ view and the worker recognise it as well as the function."""

    payload: dict[str, Any]
    parent_id: str  # the parent job: given, or derived from the schedule tick
    scheduled_time: str | None = None
    # The API's parent, as its message carries it (``Job.message``): the route invokes
    # train_all before it records the parent, and train_all records it if it is missing.
    parent: Job | None = None

    @classmethod
    def for_parent(cls, parent: Job) -> TrainAllTrigger:
        """What the training-all route invokes train_all with: the parent to run, and to
        record if its route died before it did."""
        payload = {"parent_id": parent.task_id, "parent": parent.message()}
        return cls(payload, parent.task_id, parent=parent)

    @classmethod
    def from_payload(cls, payload: Any) -> TrainAllTrigger | None:
        """The trigger in ``payload``, or None (a job message, which has a task_id, is not)."""
        if not isinstance(payload, dict) or "task_id" in payload:
            return None
        parent_id = payload.get("parent_id")
        if isinstance(parent_id, str) and parent_id:
            parent = Job.from_message(payload.get("parent"))
            if parent is not None and (
                parent.task_id != parent_id or parent.type is not JobType.TRAIN_ALL
            ):
                parent = None  # not this trigger's parent: only one that exists is run
            return cls(payload, parent_id, parent=parent)
        tick = payload.get("time")
        if payload.get("detail-type") == "Scheduled Event" and isinstance(tick, str) and tick:
            return cls(payload, scheduled_parent_id(tick), scheduled_time=tick)
        return None


class JobError(BaseModel):
    type: str
    message: str

    @classmethod
    def of(cls, exc: SipremsError) -> JobError:
        """What a job records of an error (clients read it): its public message."""
        return cls(type=exc.code, message=exc.public_message)


class ChildCounts(BaseModel):
    """Progress of a train_all parent, kept as atomic counters on the parent item."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    revoked: int = 0
    pending: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.revoked


class Job(BaseModel):
    model_config = ConfigDict(use_enum_values=False)

    task_id: str
    type: JobType
    status: JobStatus = JobStatus.PENDING
    product_sku: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: str
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    # The attempts used before the job's last redrive from the DLQ: its retries count from
    # there (``attempts`` itself only grows: a worker's writes are conditional on it).
    attempts_before_redrive: int | None = None
    error: JobError | None = None
    parent_id: str | None = None
    result_key: str | None = None  # the result in S3, when too large for the item
    # The result kept in the item, packed (``pack_json``): unpacked only when read (``result``),
    # so listings and the worker's own completion never decompress it.
    result_gz: bytes | None = Field(default=None, repr=False)
    requested_by: str | None = None
    expires_at: int
    children: ChildCounts | None = None
    # Set when the job failed because its worker stopped on the message's last delivery (the
    # message goes to the DLQ): which delivery did it, so that only a redrive restarts the job.
    dead_lettered: str | None = None
    # Set on a train_all child redriven from the DLQ after its parent finished: its failure
    # stays counted there, so what it does from then on is recorded on the child alone.
    parent_counted: bool | None = None

    @property
    def attempts_since_redrive(self) -> int:
        """The attempts that count towards the job's retries (all, if never redriven)."""
        return self.attempts - (self.attempts_before_redrive or 0)

    @property
    def counts_on_parent(self) -> bool:
        """Whether finishing this job changes its parent's counters."""
        return bool(self.parent_id) and not self.parent_counted

    @classmethod
    def new(
        cls,
        type: JobType,
        *,
        product_sku: str | None = None,
        params: dict[str, Any] | None = None,
        task_id: str | None = None,
        parent_id: str | None = None,
        requested_by: str | None = None,
        ttl_days: int = 30,
        now: datetime | None = None,
    ) -> Job:
        now = now or utc_now()
        return cls(
            task_id=task_id or new_task_id(),
            type=type,
            product_sku=product_sku,
            params=params or {},
            created_at=iso(now),
            updated_at=iso(now),
            parent_id=parent_id,
            requested_by=requested_by,
            expires_at=int((now + timedelta(days=ttl_days)).timestamp()),
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def expired(self) -> bool:
        """Past ``expires_at``: gone for clients, and deleted by DynamoDB's TTL (days later)."""
        return self.expires_at <= time.time()

    @functools.cached_property
    def result(self) -> dict[str, Any] | None:
        """The result kept in the item, or None (then ``result_key`` names it in S3)."""
        return None if self.result_gz is None else unpack_json(self.result_gz)

    # --- DynamoDB item mapping --------------------------------------------------------------
    def to_item(self) -> dict[str, Any]:
        item = self.model_dump(mode="json", exclude_none=True, exclude={"children", "result_gz"})
        if not item.get("params"):
            item.pop("params", None)
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Job:
        data = _plain(item)
        counters = {k[len("children_") :]: v for k, v in data.items() if k.startswith("children_")}
        for key in list(data):
            if key.startswith("children_"):
                del data[key]
        if counters:
            data["children"] = ChildCounts(**counters)
        packed = data.get("result_gz")
        if packed is not None:  # DynamoDB's binary values come wrapped in ``Binary``
            data["result_gz"] = bytes(getattr(packed, "value", packed))
        return cls(**data)

    def message(self) -> dict[str, Any]:
        """The SQS message body: the job as it is recorded before it runs. The submit routes
        queue a job before they record it (``jobs.service.submit``), so a worker may meet the
        message of a job whose item does not exist yet, or never will (its submit died in
        between): it records the job from here (``from_message``). Once the item exists, it
        is the source of truth and the rest of the message is for logs."""
        body = self.model_dump(mode="json", exclude_none=True, include=MESSAGE_FIELDS)
        if not body.get("params"):
            body.pop("params", None)
        return body

    @classmethod
    def from_message(cls, body: Any) -> Job | None:
        """The job a message carries, PENDING as it was submitted; None if the body does not
        carry one (a message queued before messages carried their job, or not a job's)."""
        if not isinstance(body, dict):
            return None
        try:
            return cls(**{name: body[name] for name in MESSAGE_FIELDS if name in body})
        except ValueError:  # pydantic's ValidationError: a field missing or malformed
            return None

    def claimed(self, now: datetime | None = None) -> Job:
        """This PENDING job as a worker's claim leaves it (``JobStore.mark_started``): what a
        worker records for a job it meets before its item exists, the record and the claim in
        one conditional put."""
        moment = iso(now or utc_now())
        return self.model_copy(
            update={
                "status": JobStatus.STARTED,
                "attempts": self.attempts + 1,
                "started_at": moment,
                "updated_at": moment,
            }
        )


# What a job's message carries: everything its item holds before it runs (``Job.message``).
MESSAGE_FIELDS = frozenset(
    {
        "task_id",
        "type",
        "product_sku",
        "params",
        "parent_id",
        "requested_by",
        "created_at",
        "updated_at",
        "expires_at",
    }
)


def pack_json(value: Any) -> bytes:
    """A value kept in a job item, as compressed JSON: an item is at most 400 KB, and its
    writes and reads are paid by its size (1 KB a write unit, 4 KB a read unit)."""
    return zlib.compress(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())


def unpack_json(packed: Any) -> Any:
    """``pack_json``'s value back (DynamoDB's binary values come wrapped in ``Binary``)."""
    return json.loads(zlib.decompress(bytes(getattr(packed, "value", packed))))


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
