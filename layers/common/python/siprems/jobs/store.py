"""The jobs table (DynamoDB): every status change is one conditional write.

A write whose condition does not hold (the job moved on, was cancelled, or another worker
owns it) is not an exception for the caller: it returns a ``Transition`` whose ``outcome``
says why, with the job as it is now. Statuses are queried through the ``by_status_summary``
index (status + created_at; it projects what a listing shows, never a result or a parent's SKU
list) and children through ``by_parent``; nothing scans the table.

A train_all parent keeps atomic counters of its children (``children_total``, ``_pending``,
``_succeeded``, ``_failed``, ``_revoked``). A child's final transition and its parent's
counter change are one transaction, so a crash between them cannot lose a count; when the
child is the last one pending of a running parent, that transaction also finishes the parent,
so no crash can leave a parent STARTED with nothing pending. Its children are created
unconditionally in batches only by the run holding the parent's fan-out lease
(``FanOutLease``; see siprems.jobs.fanout). Its frozen SKU list is kept out of its item, in
shard items of the same table (``start_parent``), so that the parent stays small: DynamoDB
bills each of those counter updates by the whole item's size.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError

from siprems.errors import JobStoreUnavailableError, NotFoundError
from siprems.jobs.model import (
    ChildCounts,
    Job,
    JobError,
    JobStatus,
    iso,
    pack_json,
    sources_of,
    unpack_json,
    utc_now,
)

STATUS_INDEX = "by_status_summary"
DYNAMODB_BATCH_LIMIT = 25  # items per BatchWriteItem
DYNAMODB_BATCH_GET_LIMIT = 100  # keys per BatchGetItem
PARENT_INDEX = "by_parent"
# SKUs per shard item of a parent's frozen list. The sales database's SKUs are at most 64
# characters; in the JSON that pack_json compresses, a character outside the BMP is 12 bytes
# (a \uXXXX surrogate pair), so 500 of the longest take 386 KB even if nothing compressed:
# under DynamoDB's 400 KB item limit in the worst case (they pack to ~128 KB). 500 random
# 10-character SKUs pack to ~4 KB.
SKUS_PER_SHARD = 500
# Tries of a child + parent transaction that DynamoDB cancels without a failed condition
# (about 3 s of backoff in all); also of a child's count whose parent changed between the read
# of its counters and the transaction pinned to them.
TRANSACTION_ATTEMPTS = 8
# The parent's counter of each outcome a child finishes with (``children_<counter>``).
CHILD_COUNTERS = {
    JobStatus.SUCCESS: "succeeded",
    JobStatus.FAILURE: "failed",
    JobStatus.REVOKED: "revoked",
}

_NAMES = {"#s": "status"}


class Outcome(StrEnum):
    APPLIED = "applied"
    NOT_FOUND = "not_found"
    TERMINAL = "terminal"  # the job had already finished (or was cancelled)
    IN_PROGRESS = "in_progress"  # another worker holds the job right now
    CONFLICT = "conflict"  # any other state that forbids the transition


@dataclass(frozen=True)
class Transition:
    outcome: Outcome
    job: Job | None  # after the write if applied, else as found (None if it does not exist)

    @property
    def applied(self) -> bool:
        return self.outcome is Outcome.APPLIED


@dataclass(frozen=True)
class FanOutLease:
    """Who writes a train_all parent's children, and until when (that run's own deadline)."""

    owner: str
    until: datetime


@dataclass(frozen=True)
class FanOutState:
    parent: Job
    started: bool  # the first run froze the SKU list and started the parent
    skus: list[str] | None  # that list (None before, or when not read)
    owner: str | None
    lease_until: str | None  # ISO time, as stored
    fanned_out: bool

    @property
    def status(self) -> JobStatus:
        return self.parent.status

    def lease_active(self, now: datetime) -> bool:
        return bool(self.lease_until) and str(self.lease_until) >= iso(now)


class JobStore:
    def __init__(self, dynamodb_resource: Any, table_name: str) -> None:
        # The resource's client takes and returns plain Python values, like a Table, and
        # unlike a Table it is thread-safe (the train_all fan-out writes from threads).
        self._client = dynamodb_resource.meta.client
        self.table_name = table_name

    # --- create / read ----------------------------------------------------------------------
    def create(self, job: Job) -> bool:
        """Put a new job; False (and nothing written) if one with this id exists."""
        return self.create_or_get(job)[0]

    def create_or_get(self, job: Job) -> tuple[bool, Job | None]:
        """Put a new job: (True, job), or (False, the existing job) if one with this id
        exists, read from the failed condition's answer rather than another round trip."""
        try:
            self._call(
                "put_item",
                Item=_dynamo(job.to_item()),
                ConditionExpression="attribute_not_exists(task_id)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _ConditionFailed as failed:
            if failed.item is not None:
                return False, Job.from_item(failed.item)
            return False, self.get(job.task_id)
        return True, job

    def get(self, task_id: str) -> Job | None:
        response = self._call("get_item", Key={"task_id": task_id}, ConsistentRead=True)
        item = response.get("Item")
        return Job.from_item(item) if item else None

    def list_by_status(self, status: JobStatus, *, limit: int = 50) -> list[Job]:
        """Newest first, from the status index (eventually consistent, as any GSI). Each job
        holds what the index projects (template.yaml): everything a listing shows, but not its
        result, ``requested_by`` or ``updated_at``; ``get`` reads a whole job."""
        response = self._call(
            "query",
            IndexName=STATUS_INDEX,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames=_NAMES,
            ExpressionAttributeValues={":s": status.value},
            ScanIndexForward=False,
            Limit=limit,
        )
        return [Job.from_item(item) for item in response.get("Items", [])]

    def count_by_status(self, status: JobStatus) -> int:
        """How many jobs have this status (a COUNT query on the status index, paged)."""
        count = 0
        kwargs: dict[str, Any] = {
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#s = :s",
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {":s": status.value},
            "Select": "COUNT",
        }
        while True:
            response = self._call("query", **kwargs)
            count += int(response.get("Count", 0))
            if "LastEvaluatedKey" not in response:
                return count
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def child_ids(self, parent_id: str) -> list[str]:
        ids: list[str] = []
        kwargs: dict[str, Any] = {
            "IndexName": PARENT_INDEX,
            "KeyConditionExpression": "parent_id = :p",
            "ExpressionAttributeValues": {":p": parent_id},
        }
        while True:
            response = self._call("query", **kwargs)
            ids.extend(item["task_id"] for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return ids
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # --- worker transitions -------------------------------------------------------------------
    def mark_started(
        self, task_id: str, *, stale_after: timedelta, now: datetime | None = None
    ) -> Transition:
        """PENDING/RETRY -> STARTED, attempts + 1. A STARTED job is taken over only when its
        start is older than ``stale_after`` (the worker timeout: that worker is dead)."""
        now = now or utc_now()
        return self._update(
            task_id,
            update="SET #s = :started, started_at = :now, updated_at = :now ADD attempts :one",
            condition=(
                "attribute_exists(task_id) AND (#s IN (:pending, :retry)"
                " OR (#s = :started AND started_at < :stale))"
            ),
            values={
                ":started": JobStatus.STARTED.value,
                ":pending": JobStatus.PENDING.value,
                ":retry": JobStatus.RETRY.value,
                ":now": iso(now),
                ":stale": iso(now - stale_after),
                ":one": 1,
            },
            busy_if_started=True,
        )

    def mark_worker_stopped(
        self,
        job: Job,
        *,
        stale_after: timedelta,
        error: JobError,
        delivery: str,
        now: datetime | None = None,
    ) -> Transition:
        """STARTED (as read in ``job``) with a start older than ``stale_after``: its worker
        stopped without an outcome -> FAILURE with the error and the ``dead_lettered`` marker
        naming this ``delivery``. Conditional on the attempt read, so a worker that took the
        job over since keeps it; a child's parent counters change in the same transaction."""
        stale = iso((now or utc_now()) - stale_after)
        if job.status is not JobStatus.STARTED or not job.started_at or job.started_at >= stale:
            return _classified(job, busy_if_started=True)
        return self._finish(
            job,
            JobStatus.FAILURE,
            changes={"error": error.model_dump(), "dead_lettered": delivery},
        )

    def mark_redriven(self, job: Job, *, delivery: str) -> Transition:
        """A dead-lettered FAILURE -> STARTED, attempts + 1, error and marker cleared: its
        message came back from the DLQ. Only from a delivery other than the one that
        dead-lettered it (a repeat of that one changes nothing). The attempts it had used are
        kept as ``attempts_before_redrive``: redriven after its cause was fixed, it gets its
        retries again (crashes had used them up).

        A train_all child's failure is already counted on its parent. While the parent runs,
        the child takes that failure back in the same transaction (children_failed - 1,
        children_pending + 1), and its new outcome is counted as any child's. A parent that
        has finished keeps its outcome: the child is marked ``parent_counted`` and what it
        does from then on is its own."""
        values: dict[str, Any] = {
            ":started": JobStatus.STARTED.value,
            ":failure": JobStatus.FAILURE.value,
            ":now": iso(utc_now()),
            ":delivery": delivery,
            ":one": 1,
            ":before": job.attempts,  # a FAILURE's attempts do not change
        }
        condition = (
            "#s = :failure AND attribute_exists(dead_lettered) AND dead_lettered <> :delivery"
        )
        sets = (
            "#s = :started, started_at = :now, updated_at = :now, attempts_before_redrive = :before"
        )
        remove = " REMOVE #e, dead_lettered, finished_at ADD attempts :one"
        if job.counts_on_parent:
            assert job.parent_id is not None
            child_update = self._update_request(
                job.task_id,
                update=f"SET {sets}{remove}",
                condition=condition,
                values=values,
                names={"#e": "error"},
            )
            parent_update = self._update_request(
                job.parent_id,
                update="ADD children_failed :minus_one, children_pending :one",
                condition="#s = :started AND children_failed > :zero",
                values={
                    ":minus_one": -1,
                    ":one": 1,
                    ":zero": 0,
                    ":started": JobStatus.STARTED.value,
                },
            )
            written, _ = self._child_with_parent(child_update, parent_update)
            if written == "applied":
                return Transition(Outcome.APPLIED, self.get(job.task_id))
            if written == "child_condition_failed":
                return self._classify(job.task_id)
            # the parent has finished (or is gone): it keeps its outcome
        if job.parent_id:
            sets += ", parent_counted = :counted"
            values[":counted"] = True
        return self._update(
            job.task_id,
            update=f"SET {sets}{remove}",
            condition=condition,
            values=values,
            names={"#e": "error"},
        )

    def mark_retry(self, task_id: str, *, attempt: int, error: JobError) -> Transition:
        """STARTED -> RETRY, only by the worker that owns ``attempt``."""
        now = iso(utc_now())
        return self._update(
            task_id,
            update="SET #s = :retry, updated_at = :now, #e = :error",
            condition="#s = :started AND attempts = :attempt",
            values={
                ":retry": JobStatus.RETRY.value,
                ":started": JobStatus.STARTED.value,
                ":attempt": attempt,
                ":now": now,
                ":error": error.model_dump(),
            },
            names={"#e": "error"},
        )

    def mark_succeeded(
        self, job: Job, *, result: bytes | None = None, result_key: str | None = None
    ) -> Transition:
        """STARTED -> SUCCESS, only by the worker that owns the job's current attempt, with
        its result: packed into the item (``pack_json``), or the S3 key of a larger one."""
        if (result is None) == (result_key is None):
            raise ValueError("a job succeeds with either its packed result or its result's key")
        kept = {"result_gz": result} if result is not None else {"result_key": result_key}
        return self._finish(job, JobStatus.SUCCESS, changes=kept, remove=("error",))

    def mark_failed(self, job: Job, *, error: JobError) -> Transition:
        """-> FAILURE with the error, by the worker that runs the job's current attempt."""
        return self._finish(job, JobStatus.FAILURE, changes={"error": error.model_dump()})

    def revoke(self, job: Job) -> Transition:
        """Cancel a job that has not finished (PENDING, STARTED or RETRY)."""
        return self._finish(job, JobStatus.REVOKED, owned=False)

    # --- train_all parents --------------------------------------------------------------------
    def start_parent(
        self, parent_id: str, *, skus: list[str], lease: FanOutLease, expires_at: int
    ) -> Transition:
        """PENDING -> STARTED with the counters, before any child is queued, so that no child
        can finish before its parent knows the total. The run that applies it holds the
        fan-out lease: until ``lease.until`` no other run writes children.

        The SKU list is written first, in shards of ``SKUS_PER_SHARD`` named by this run
        (``lease.owner``, unique per run) and expiring with the parent (``expires_at``), and
        the start records whose shards and how many. A run that loses the start (another run
        started the parent first) leaves its shards unreferenced, to TTL."""
        shards = [skus[i : i + SKUS_PER_SHARD] for i in range(0, len(skus), SKUS_PER_SHARD)]
        self._put_new_items(
            [
                # No status and no parent_id: a shard is in neither index.
                {
                    "task_id": sku_shard_id(parent_id, lease.owner, k),
                    "skus_gz": pack_json(shard),
                    "expires_at": expires_at,
                }
                for k, shard in enumerate(shards)
            ],
            what="SKU list shards",
        )
        n = len(skus)
        now = iso(utc_now())
        return self._update(
            parent_id,
            update=(
                "SET #s = :started, started_at = :now, updated_at = :now,"
                " skus_owner = :owner, skus_shards = :shards,"
                " children_total = :n, children_pending = :n, children_succeeded = :zero,"
                " children_failed = :zero, children_revoked = :zero,"
                " fanout_owner = :owner, fanout_until = :until ADD attempts :one"
            ),
            condition="#s = :pending",
            values={
                ":started": JobStatus.STARTED.value,
                ":pending": JobStatus.PENDING.value,
                ":now": now,
                ":shards": len(shards),
                ":n": n,
                ":zero": 0,
                ":one": 1,
                ":owner": lease.owner,
                ":until": iso(lease.until),
            },
        )

    def fan_out_state(self, parent_id: str, *, with_skus: bool = True) -> FanOutState | None:
        """A train_all parent and its fan-out (None if there is none): the parent's item,
        then, ``with_skus``, its SKU list's shards (a run waiting on another's fan-out polls
        without them)."""
        response = self._call("get_item", Key={"task_id": parent_id}, ConsistentRead=True)
        item = response.get("Item")
        if item is None:
            return None
        return FanOutState(
            parent=Job.from_item(item),
            started="skus_owner" in item or "skus_gz" in item,
            skus=self._frozen_skus(parent_id, item) if with_skus else None,
            owner=item.get("fanout_owner"),
            lease_until=item.get("fanout_until"),
            fanned_out=bool(item.get("fanned_out_at")),
        )

    def _frozen_skus(self, parent_id: str, item: dict[str, Any]) -> list[str] | None:
        """The list the run that started the parent wrote (None before it started), in order."""
        if "skus_gz" in item:  # a parent started before the list moved to shard items
            return list(unpack_json(item["skus_gz"]))
        owner = item.get("skus_owner")
        if owner is None:
            return None
        keys = [sku_shard_id(parent_id, owner, k) for k in range(int(item["skus_shards"]))]
        shards: dict[str, Any] = {}
        for start in range(0, len(keys), DYNAMODB_BATCH_GET_LIMIT):
            request = {
                "Keys": [
                    {"task_id": key} for key in keys[start : start + DYNAMODB_BATCH_GET_LIMIT]
                ],
                "ConsistentRead": True,
            }
            for shard in self._batch("batch_get_item", request, what="SKU list shards"):
                shards[shard["task_id"]] = shard["skus_gz"]
        missing = [key for key in keys if key not in shards]
        if missing:
            # Only past the parent's expiry: TTL deletes the parent and its shards, not at once.
            raise NotFoundError(
                f"train_all parent {parent_id}: {len(missing)} of {len(keys)} shards of its "
                "SKU list are gone",
                task_id=parent_id,
            )
        return [sku for key in keys for sku in unpack_json(shards[key])]

    def take_fan_out_lease(
        self, parent_id: str, *, lease: FanOutLease, expired: FanOutState, now: datetime
    ) -> bool:
        """Take over the fan-out of a run whose lease ran out (it stopped part way): True if
        this run now holds it. Only one of several runs taking over at once gets it."""
        condition = "#s = :started AND attribute_not_exists(fanned_out_at) AND " + (
            "fanout_owner = :previous AND fanout_until < :now"
            if expired.owner
            else "attribute_not_exists(fanout_owner)"  # started before fan-out leases existed
        )
        values: dict[str, Any] = {
            ":started": JobStatus.STARTED.value,
            ":owner": lease.owner,
            ":until": iso(lease.until),
        }
        if expired.owner:
            values.update({":previous": expired.owner, ":now": iso(now)})
        return self._update(
            parent_id,
            update="SET fanout_owner = :owner, fanout_until = :until",
            condition=condition,
            values=values,
        ).applied

    def release_fan_out_lease(self, parent_id: str, *, lease: FanOutLease) -> bool:
        """A run that failed part way lets the next one take over at once."""
        return self._update_lease(
            parent_id,
            update="SET fanout_until = :now",
            condition="fanout_owner = :owner AND attribute_not_exists(fanned_out_at)",
            lease=lease,
        )

    def mark_fanned_out(self, parent_id: str, *, lease: FanOutLease) -> bool:
        """Every child is written and queued: later runs of this parent have nothing to do."""
        return self._update_lease(
            parent_id,
            update="SET fanned_out_at = :now REMOVE fanout_until",
            condition="fanout_owner = :owner",
            lease=lease,
        )

    def _update_lease(
        self, parent_id: str, *, update: str, condition: str, lease: FanOutLease
    ) -> bool:
        request = {
            "Key": {"task_id": parent_id},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": {":owner": lease.owner, ":now": iso(utc_now())},
        }
        try:
            self._call("update_item", **request)
        except _ConditionFailed:
            return False
        return True

    def put_new_children(self, children: list[Job]) -> None:
        """Write children that cannot exist yet (their parent's fan-out lease is held)."""
        self._put_new_items([child.to_item() for child in children], what="children")

    def _put_new_items(self, items: list[dict[str, Any]], *, what: str) -> None:
        """BatchWriteItem, 25 a request: unconditional, hence only for items no one else
        writes (new children under the lease, a run's own SKU list shards)."""
        for start in range(0, len(items), DYNAMODB_BATCH_LIMIT):
            self._batch(
                "batch_write_item",
                [
                    {"PutRequest": {"Item": _dynamo(item)}}
                    for item in items[start : start + DYNAMODB_BATCH_LIMIT]
                ],
                what=what,
            )

    def _batch(self, operation: str, request: Any, *, what: str, attempts: int = 5) -> list:
        """One batch request on the table: what DynamoDB leaves unprocessed (throttling, or
        a read's 16 MB answer limit) is sent again with backoff. Returns the items read."""
        unprocessed = "UnprocessedKeys" if operation == "batch_get_item" else "UnprocessedItems"
        read: list[dict[str, Any]] = []
        pending = {self.table_name: request}
        for attempt in range(attempts):
            if attempt:
                _pause_before_retry(attempt)
            response = self._call(operation, RequestItems=pending)
            read += response.get("Responses", {}).get(self.table_name, [])
            pending = response.get(unprocessed) or {}
            if not pending:
                return read
        raise JobStoreUnavailableError(
            f"DynamoDB left part of a batch of {what} unprocessed after {attempts} attempts"
        )

    def finalize_parent(self, parent_id: str) -> Transition:
        """STARTED -> SUCCESS (every child succeeded) or FAILURE, once no child is pending.
        Idempotent. A parent with children finishes in its last child's transaction
        (``_count_on_parent``); this finishes one that has none, and one left STARTED with
        nothing pending by a version that finished parents in a second write."""
        parent = self.get(parent_id)
        if parent is None:
            return Transition(Outcome.NOT_FOUND, None)
        if parent.terminal:
            return Transition(Outcome.TERMINAL, parent)
        counts = parent.children
        if parent.status is not JobStatus.STARTED or counts is None or counts.pending > 0:
            return Transition(Outcome.CONFLICT, parent)
        update, values, names = _parent_finished(counts)
        return self._update(
            parent_id,
            update=update,
            condition="#s = :started AND children_pending <= :zero",
            values={**values, ":started": JobStatus.STARTED.value, ":zero": 0},
            names=names,
        )

    # --- internals ----------------------------------------------------------------------------
    def _finish(
        self,
        job: Job,
        target: JobStatus,
        *,
        changes: dict[str, Any] | None = None,
        remove: tuple[str, ...] = (),
        owned: bool = True,
    ) -> Transition:
        """``job`` -> ``target`` with ``changes`` set and ``remove`` removed. ``owned``: only
        by the worker running the job's current attempt, and then the job after the write
        is known without reading it back (the condition pins every other attribute), so
        nothing is returned: a result kept in the item is not sent back to the worker that
        wrote it."""
        now = iso(utc_now())
        written = {"status": target.value, "finished_at": now, "updated_at": now, **(changes or {})}
        names = {f"#a{i}": attribute for i, attribute in enumerate(written)}
        all_values: dict[str, Any] = {f":a{i}": value for i, value in enumerate(written.values())}
        update = "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(written)))
        if remove:
            names.update({f"#r{i}": attribute for i, attribute in enumerate(remove)})
            update += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
        if owned:
            condition = "#s = :started AND attempts = :attempt"
            all_values[":started"] = JobStatus.STARTED.value
            all_values[":attempt"] = job.attempts
        else:
            sources = [s.value for s in sources_of(target)]
            placeholders = []
            for i, source in enumerate(sources):
                placeholders.append(f":src{i}")
                all_values[f":src{i}"] = source
            condition = f"#s IN ({', '.join(placeholders)})"
        child_update = self._update_request(
            job.task_id, update=update, condition=condition, values=all_values, names=names
        )
        after = _written(job, written, remove) if owned else None
        if not job.counts_on_parent:
            return self._update_raw(job.task_id, child_update, after=after)
        assert job.parent_id is not None
        written = self._count_on_parent(child_update, job.parent_id, CHILD_COUNTERS[target])
        if written == "child_condition_failed":
            return self._classify(job.task_id)
        if written == "parent_condition_failed":
            # The parent is gone (expired) or has no counters: finish the child alone.
            return self._update_raw(job.task_id, child_update, after=after)
        return Transition(Outcome.APPLIED, after or self.get(job.task_id))

    def _count_on_parent(
        self, child_update: dict[str, Any], parent_id: str, counter: str
    ) -> Literal["applied", "child_condition_failed", "parent_condition_failed"]:
        """A child's final update and its count on its parent (``children_<counter>``), in one
        transaction; when the child is the last one pending of a running parent, the same
        transaction finishes the parent. A worker that stops after a child's outcome then
        leaves nothing undone: its message may have no next delivery (a ``worker_stopped``
        failure goes to the DLQ without one), and a second write would wait for it.

        Tried first as a count among others pending, which needs no read: its condition says
        so. When that fails (the last child), the parent the failed condition sent back (read,
        if it did not) gives the counters its outcome is computed from, and the finishing
        transaction is pinned to them. Children finishing together: DynamoDB applies their
        transactions one after the other, each child is counted once (its own update's
        condition), and the one applied last finds the others counted and finishes the parent
        (one whose pinned counters changed meanwhile is cancelled and tries again with those it
        gets back).
        "parent_condition_failed": the parent is gone (expired) or has no counters."""
        parent: Job | None = None  # not read: assumed to have other children pending
        for _ in range(TRANSACTION_ATTEMPTS):
            parent_update = self._parent_count_request(parent_id, counter, parent)
            written, found = self._child_with_parent(child_update, parent_update)
            if written != "parent_condition_failed":
                return written
            parent = Job.from_item(found) if found is not None else self.get(parent_id)
            if parent is None or parent.children is None:
                return "parent_condition_failed"
        raise JobStoreUnavailableError(
            f"train_all parent {parent_id}: its counters changed between each read and a "
            f"child's count {TRANSACTION_ATTEMPTS} times",
            task_id=parent_id,
        )

    def _parent_count_request(
        self, parent_id: str, counter: str, parent: Job | None
    ) -> dict[str, Any]:
        """The parent's side of a child's final transaction, given the parent as last seen
        (None: not read). Its last pending child while it runs: the count and the parent's
        outcome, on condition that its counters are those seen. Otherwise the count alone, on
        condition that the parent keeps running without it (or is not running)."""
        values: dict[str, Any] = {":one": 1, ":minus_one": -1, ":started": JobStatus.STARTED.value}
        count = f"ADD children_{counter} :one, children_pending :minus_one"
        counts = parent.children if parent is not None else None
        last = (
            parent is not None
            and parent.status is JobStatus.STARTED
            and counts is not None
            and counts.pending <= 1
        )
        if not last:
            request = self._update_request(
                parent_id,
                update=count,
                condition=(
                    "attribute_exists(children_total)"
                    " AND (#s <> :started OR children_pending > :one)"
                ),
                values=values,
            )
        else:
            assert counts is not None
            after = counts.model_copy(
                update={counter: getattr(counts, counter) + 1, "pending": counts.pending - 1}
            )
            finish, finished_values, names = _parent_finished(after)
            request = self._update_request(
                parent_id,
                update=f"{finish} {count}",
                # pending <= 1, not = 1: a parent whose counters went wrong still finishes
                condition=(
                    "#s = :started AND children_pending <= :one"
                    " AND children_failed = :failed AND children_revoked = :revoked"
                ),
                values={
                    **values,
                    **finished_values,
                    ":failed": counts.failed,
                    ":revoked": counts.revoked,
                },
                names=names,
            )
        request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return request

    def _child_with_parent(
        self, child_update: dict[str, Any], parent_update: dict[str, Any]
    ) -> tuple[
        Literal["applied", "child_condition_failed", "parent_condition_failed"],
        dict[str, Any] | None,
    ]:
        """A child's update and its parent's in one transaction: both, or neither. With the
        outcome, the parent as its failed condition found it (when the request asked for it
        and DynamoDB sent it back).

        Only a failed condition is an answer. Children of one parent finish at the same time
        and their transactions all write the parent's item: DynamoDB cancels one that meets
        another in progress (``TransactionConflict``), or throttles it; that one is sent
        again with backoff, and after ``TRANSACTION_ATTEMPTS`` tries a JobStoreUnavailableError
        (transient: the message comes back) rather than a child finished without its count."""
        reasons: list[str] = []
        for attempt in range(TRANSACTION_ATTEMPTS):
            if attempt:
                _pause_before_retry(attempt)
            try:
                self._call(
                    "transact_write_items",
                    TransactItems=[{"Update": child_update}, {"Update": parent_update}],
                )
            except _TransactionCancelled as cancelled:
                if cancelled.condition_failed(0):
                    return "child_condition_failed", None
                if cancelled.condition_failed(1):
                    return "parent_condition_failed", cancelled.item(1)
                reasons = cancelled.codes()
                continue
            return "applied", None
        raise JobStoreUnavailableError(
            f"DynamoDB cancelled a child's and its parent's update {TRANSACTION_ATTEMPTS} times "
            f"({', '.join(reasons)})",
            dynamodb_error="TransactionCanceledException",
        )

    def _update(self, task_id: str, *, busy_if_started: bool = False, **parts: Any) -> Transition:
        """One job's conditional update; ``parts`` as ``_update_request`` takes them."""
        request = self._update_request(task_id, **parts)
        return self._update_raw(task_id, request, busy_if_started=busy_if_started)

    def _update_request(
        self,
        task_id: str,
        *,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """An UpdateItem request on one job (also an item of a transaction). ``#s`` names the
        status wherever an expression uses it (DynamoDB refuses names that none uses)."""
        request = {
            "TableName": self.table_name,
            "Key": {"task_id": task_id},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": _dynamo(values),
        }
        all_names = {**(_NAMES if "#s" in update + condition else {}), **(names or {})}
        if all_names:
            request["ExpressionAttributeNames"] = all_names
        return request

    def _update_raw(
        self,
        task_id: str,
        request: dict[str, Any],
        *,
        busy_if_started: bool = False,
        after: Job | None = None,
    ) -> Transition:
        """``after``: the job as the write leaves it, when the caller knows it (then the
        item is not sent back)."""
        try:
            response = self._call(
                "update_item",
                **request,
                ReturnValues="NONE" if after is not None else "ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _ConditionFailed as failed:
            if failed.item is None:
                # DynamoDB sends the item back whenever one exists (ALL_OLD): there was none at
                # the write. Not read again: an item written since (a submit records its job
                # after queuing it) would pass for the state the write was refused in.
                return Transition(Outcome.NOT_FOUND, None)
            return _classified(Job.from_item(failed.item), busy_if_started)
        return Transition(Outcome.APPLIED, after or Job.from_item(response["Attributes"]))

    def _classify(self, task_id: str) -> Transition:
        """The job, read as it is now, of a transaction whose write on it was refused."""
        job = self.get(task_id)
        if job is None:
            return Transition(Outcome.NOT_FOUND, None)
        return _classified(job, busy_if_started=False)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        if not operation.startswith(("batch_", "transact_")):  # these name tables per item
            kwargs["TableName"] = self.table_name
        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise _ConditionFailed(_deserialized(exc.response.get("Item"))) from exc
            if code == "TransactionCanceledException":
                raise _TransactionCancelled(exc.response) from exc
            raise JobStoreUnavailableError(
                f"DynamoDB {operation} on {self.table_name} failed: {code}", dynamodb_error=code
            ) from exc
        except BotoCoreError as exc:
            raise JobStoreUnavailableError(
                f"DynamoDB {operation} on {self.table_name} failed: {exc}"
            ) from exc


def _pause_before_retry(attempt: int) -> None:
    """Before try ``attempt`` + 1 of a request DynamoDB throttled, left partly unprocessed or
    cancelled against another: doubling from 0.05 s up to 1 s, jittered so that writers
    turned away together do not meet again."""
    time.sleep(random.uniform(0.5, 1.0) * min(0.025 * 2**attempt, 1.0))  # noqa: S311


def sku_shard_id(parent_id: str, owner: str, k: int) -> str:
    """The key of shard ``k`` of the SKU list written by run ``owner`` ('#' is not in any
    task id the API accepts, so no request reads or writes a shard as a job)."""
    return f"{parent_id}#skus#{owner}#{k}"


def _parent_finished(counts: ChildCounts) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The SET clause that finishes a train_all parent whose children are all done, as
    ``counts`` say: SUCCESS if every child succeeded, else FAILURE with how many did not; with
    its values (``:final``, ``:now``, ``:error``) and names."""
    ok = counts.failed == 0 and counts.revoked == 0
    values: dict[str, Any] = {
        ":final": (JobStatus.SUCCESS if ok else JobStatus.FAILURE).value,
        ":now": iso(utc_now()),
    }
    update = "SET #s = :final, finished_at = :now, updated_at = :now"
    if ok:
        return update, values, {}
    values[":error"] = {
        "type": "children_failed",
        "message": f"{counts.failed} of {counts.total} products failed to train"
        + (f", {counts.revoked} cancelled" if counts.revoked else ""),
    }
    return update + ", #e = :error", values, {"#e": "error"}


def _written(job: Job, written: dict[str, Any], remove: tuple[str, ...]) -> Job:
    """``job`` as an update that sets ``written`` and removes ``remove`` leaves it."""
    item = {**job.to_item(), **written}
    for attribute in remove:
        item.pop(attribute, None)
    return Job.from_item(item)


def _classified(job: Job, busy_if_started: bool) -> Transition:
    if job.terminal:
        return Transition(Outcome.TERMINAL, job)
    if busy_if_started and job.status is JobStatus.STARTED:
        return Transition(Outcome.IN_PROGRESS, job)
    return Transition(Outcome.CONFLICT, job)


def _deserialized(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """The item in a failed condition's error comes in the wire format."""
    if not raw:
        return None
    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in raw.items()}


def _dynamo(value: Any) -> Any:
    """DynamoDB takes Decimal, not float (binary values pass as they are)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict) and any(isinstance(v, bytes) for v in value.values()):
        return {key: _dynamo(v) for key, v in value.items()}
    return json.loads(json.dumps(value), parse_float=Decimal)


class _ConditionFailed(Exception):
    def __init__(self, item: dict[str, Any] | None) -> None:
        super().__init__("condition failed")
        self.item = item


class _TransactionCancelled(Exception):
    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = response.get("CancellationReasons") or []

    def condition_failed(self, index: int) -> bool:
        """Whether item ``index``'s condition failed (not a conflict, throttling, ...)."""
        if index >= len(self.reasons):
            return False
        return self.reasons[index].get("Code") == "ConditionalCheckFailed"

    def item(self, index: int) -> dict[str, Any] | None:
        """The item whose condition failed, when the request asked for it (ALL_OLD)."""
        if index >= len(self.reasons):
            return None
        return _deserialized(self.reasons[index].get("Item"))

    def codes(self) -> list[str]:
        return [str(reason.get("Code") or "None") for reason in self.reasons]
