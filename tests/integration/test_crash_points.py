"""Crash-point injection: the process dies right after each external write of a path, and
SQS (or Lambda's asynchronous retries) delivers the same work again until it is acknowledged or
dead-lettered. Then the invariants of at-least-once delivery are checked.

How a crash is simulated: the adapters' single call points (``JobStore._call``,
``JobQueue._call``, ``ModelStore._call``, ``AsyncInvoker._call``) are wrapped. After the chosen
successful write the wrapper raises ``Killed``, a ``BaseException``: neither the runner's
``except Exception`` nor Powertools' batch processor (``except Exception``) sees it, so nothing
else of that invocation reaches AWS (every later call of it, from any thread, raises too). The
message is then neither deleted nor given a new visibility: it comes back after the queue's
visibility timeout with ApproximateReceiveCount + 1, and after maxReceiveCount receives moto
moves it to the DLQ, as SQS does. Lambda's asynchronous invoke of train_all is a write too: the
event is taken, and runs (with Lambda's retries) after the invoking invocation, whatever became
of it. Time is simulated: one clock drives the jobs' timestamps (the stale-start window, the
fan-out lease) and moto's SQS (visibility, delays), and the driver advances it to the next
moment a message becomes visible, so no test waits.

Each path is a list of the writes one invocation makes when nothing fails (``PATHS``; a test
checks the lists against a clean run). For every point ``k`` of that list, and for ``reply`` (the
handler returned but its answer was lost: the event source mapping never deletes the message,
Lambda retries the asynchronous invocation), the process dies there either once or on every
invocation that reaches the point (a deterministic crash: a poison message). "Every time" also
reaches the bookkeeping of a message's last delivery (a stopped worker's job failed and
dead-lettered), which a single crash of the first invocation never does. After the deliveries
settle the invariants are checked, then the cause is fixed, the DLQ redriven, and checked again.

The invariants (``check``): every job a message or an invoke named is recorded; every job
terminal, or FAILURE dead-lettered with its message in the DLQ (a train_all parent or child may
also wait on its parent's trigger there); a SUCCESS's result readable through the status route;
a train_all parent's counters equal its children's outcomes (each counted once), nothing
pending once all are done, and its status what they say.
A finished job's message may still reach the DLQ (its acknowledgements lost on every delivery, or
the original of a job queued again on its last delivery): a duplicate a redrive acknowledges.

Not covered: reads (a crash after one leaves what the write before it left), batches of several
records, the sync predict route, the DLQ redrive route (moto has no message move task), crashes
of two processes in one case, and DynamoDB's cancelled transactions (moto does not produce them).
Cases that fail are marked in ``KNOWN`` with why.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from siprems.jobs.model import Job, JobStatus, JobType, TrainAllTrigger

from tests.fixtures.app import ADMIN_CALLER, api_event, invoke, response_json
from tests.fixtures.train_all import started_parent

WRITES = {
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
    "send_message",
    "send_message_batch",
    "change_message_visibility",
    "delete_message",
    "put_object",
    "delete_object",
    "invoke",  # Lambda's asynchronous invoke of train_all
}
ADAPTER_MODULES = (
    "siprems.jobs.store",
    "siprems.queue",
    "siprems.model_store",
    "siprems.jobs.services",
)


class Killed(BaseException):  # noqa: N818 - the process's death, not an error it handles
    """The invocation's process dies here (a Lambda timeout, an OOM kill, SIGKILL)."""


# --- simulated time -------------------------------------------------------------------------
class Clock:
    """Real time plus an offset, for the jobs' timestamps and moto's SQS alike."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def now(self):  # datetime, as siprems.jobs.model.utc_now
        from datetime import UTC, datetime

        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import moto.sqs.models as sqs_models
        from moto.core.utils import unix_time, unix_time_millis
        from siprems.jobs import fanout, model, store

        for module in (model, store, fanout):
            monkeypatch.setattr(module, "utc_now", self.now)
        monkeypatch.setattr(sqs_models, "unix_time", lambda *a: unix_time(*a) + self.offset)
        monkeypatch.setattr(
            sqs_models, "unix_time_millis", lambda *a: unix_time_millis(*a) + self.offset * 1000
        )
        # a run waiting on another's fan-out lease sleeps in simulated time
        monkeypatch.setitem(fanout.train_all.__kwdefaults__, "sleep", self.advance)


# --- the crash injector -------------------------------------------------------------------
@dataclass
class Plan:
    process: str  # the invocations that may die: "worker:<task_id>", "train_all", "cancel"
    point: int | str  # the k-th successful write of the invocation (1-based), or "reply"
    every: bool  # die on every invocation reaching the point (poison), else only once


@dataclass
class _Invocation:
    name: str
    armed: bool
    writes: list[str] = field(default_factory=list)
    dead: bool = False


@dataclass
class Injector:
    plan: Plan | None = None
    crashes: int = 0
    history: list[_Invocation] = field(default_factory=list)  # every invocation, in order
    queued: set[str] = field(default_factory=set)  # every job a message or an invoke named
    _stack: list[_Invocation] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def invocation(self, name: str) -> Iterator[_Invocation]:
        """One Lambda invocation (calls within it count towards its points; one made inside
        another, like a cancel during a fit, is its own process and dies alone)."""
        plan = self.plan
        armed = plan is not None and name == plan.process and (plan.every or self.crashes == 0)
        current = _Invocation(name, armed)
        self.history.append(current)
        self._stack.append(current)
        try:
            yield current
        finally:
            self._stack.pop()

    def dies_on_reply(self, current: _Invocation) -> bool:
        """The invocation returned; at the ``reply`` point its answer is lost."""
        if current.armed and self.plan is not None and self.plan.point == "reply":
            self.crashes += 1
            return True
        return False

    def call(self, real: Callable[..., Any], adapter: Any, operation: str, kwargs: dict) -> Any:
        current = self._stack[-1] if self._stack else None
        if current is not None and current.dead:
            raise Killed(f"{current.name} is dead")
        result = real(adapter, operation, **kwargs)
        self.queued |= _queued_jobs(operation, kwargs)
        if current is None or operation not in WRITES:
            return result
        with self._lock:
            current.writes.append(f"{_caller()}.{operation}")
            if current.armed and self.plan is not None and len(current.writes) == self.plan.point:
                current.dead = True
                self.crashes += 1
                raise Killed(f"{current.name} killed after {current.writes[-1]}")
        return result

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from siprems.jobs.services import AsyncInvoker
        from siprems.jobs.store import JobStore
        from siprems.model_store import ModelStore
        from siprems.queue import JobQueue

        for cls in (JobStore, JobQueue, ModelStore, AsyncInvoker):
            real = cls._call

            def wrapped(adapter, operation, _real=real, **kwargs):
                return self.call(_real, adapter, operation, kwargs)

            monkeypatch.setattr(cls, "_call", wrapped)

    def writes_of(self, name: str) -> list[list[str]]:
        return [i.writes for i in self.history if i.name == name]


def _queued_jobs(operation: str, kwargs: dict[str, Any]) -> set[str]:
    """The jobs a successful call queued: their messages' task ids, the parent train_all is
    invoked on. Each must end recorded, whatever died after the call."""
    bodies = {
        "send_message": lambda: [kwargs["MessageBody"]],
        "send_message_batch": lambda: [entry["MessageBody"] for entry in kwargs["Entries"]],
        "invoke": lambda: [kwargs["Payload"]],
    }.get(operation, list)()
    named = [json.loads(body) for body in bodies]
    return {b.get("task_id") or b.get("parent_id") for b in named} - {None}


def _caller() -> str:
    """The adapter's public method that made the call (``mark_succeeded``, ``send``, ...)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_name
        if frame.f_globals.get("__name__") in ADAPTER_MODULES and not name.startswith("_"):
            return name
        frame = frame.f_back
    return "?"


# --- the world: Lambda, SQS and Lambda's asynchronous retries, driven in simulated time -------
ACCOUNT, REGION = "123456789012", "us-east-1"
ASYNC_ATTEMPTS = 3  # Lambda: the first attempt and two retries of an asynchronous invocation
ASYNC_RETRY_SECONDS = (60, 120)  # about one, then two minutes between them


class World:
    def __init__(self, app: Any, clock: Clock, injector: Injector) -> None:
        self.app, self.clock, self.injector = app, clock, injector
        self.async_invoked: list[dict[str, Any]] = []
        self.async_accepted: list[dict[str, Any]] = []  # events Lambda took, not yet run

    @property
    def services(self) -> Any:
        return self.app.services

    @property
    def store(self) -> Any:
        return self.app.services.store

    def fresh_container(self) -> None:
        """A killed sandbox is replaced: nothing of its process state is kept."""
        from siprems.config import load_settings
        from siprems.jobs.services import get_services

        load_settings.cache_clear()
        get_services.cache_clear()

    # SQS (moto's backend only to learn when the next message is due)
    def _queue(self, url: str) -> Any:
        from moto.sqs.models import sqs_backends

        return sqs_backends[ACCOUNT][REGION].get_queue(url.rsplit("/", 1)[-1])

    def seconds_to_next_message(self) -> float | None:
        import moto.sqs.models as sqs_models

        due = [
            max(m.visible_at, m.delayed_until) for m in self._queue(self.app.queue_url)._messages
        ]
        if not due:
            return None
        return max(0.0, (min(due) - sqs_models.unix_time_millis()) / 1000.0)

    def dead_letters(self) -> list[Any]:
        return [json.loads(m.body) for m in self._queue(self.app.dlq_url)._messages]

    def deliver(self, max_rounds: int = 80) -> None:
        """The event source mapping, one message a batch, until the jobs queue is empty:
        a message is deleted when the worker acknowledged it, else it comes back when its
        visibility runs out (the clock is moved there), and after maxReceiveCount receives SQS
        (moto) moves it to the DLQ. Asynchronous invocations accepted meanwhile run first."""
        sqs = self.app.sqs
        for _ in range(max_rounds):
            while self.async_accepted:
                self.invoke_train_all(self.async_accepted.pop(0))
            messages = sqs.receive_message(
                QueueUrl=self.app.queue_url,
                MaxNumberOfMessages=1,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                wait = self.seconds_to_next_message()
                if wait is None:
                    return
                self.clock.advance(wait + 1)
                continue
            [message] = messages
            body = json.loads(message["Body"])
            name = f"worker:{body.get('task_id', 'trigger')}"
            with self.injector.invocation(name) as current:
                try:
                    response = invoke("worker", self.app.sqs_event([message]))
                except Killed:
                    self.fresh_container()
                    continue
                if self.injector.dies_on_reply(current):
                    continue
            if not response["batchItemFailures"]:
                sqs.delete_message(
                    QueueUrl=self.app.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        raise AssertionError(f"the queue did not settle in {max_rounds} deliveries")

    def accept_async_invoke(self, payload: dict[str, Any]) -> None:
        """Lambda's asynchronous invoke: the event is taken, and runs apart from its caller,
        later (``deliver`` runs it): the caller may die right after, and its own writes after
        the invoke come before the event runs."""
        self.async_accepted.append(payload)

    def invoke_train_all(self, payload: dict[str, Any], between: Callable[[], None] = None) -> str:
        """An asynchronous invocation of train_all: retried by Lambda when it fails (a crash
        included), then its event goes to the DLQ, as Lambda sends it there."""
        from siprems.errors import SipremsError

        self.async_invoked.append(payload)
        for attempt in range(ASYNC_ATTEMPTS):
            with self.injector.invocation("train_all") as current:
                try:
                    invoke("train_all", json.loads(json.dumps(payload)))
                    if not self.injector.dies_on_reply(current):
                        return "done"
                except Killed:
                    self.fresh_container()
                except SipremsError:
                    pass  # a function error: retried as well
            if attempt + 1 < ASYNC_ATTEMPTS:
                if between is not None:
                    between()  # what the workers do meanwhile
                self.clock.advance(ASYNC_RETRY_SECONDS[attempt])
        self.app.sqs.send_message(QueueUrl=self.app.dlq_url, MessageBody=json.dumps(payload))
        return "dead-lettered"

    def cancel(self, task_id: str) -> int | None:
        """The cancel route, its own Lambda invocation (admin); None if it died."""
        event = api_event(
            "status/cancel.json", path_parameters={"task_id": task_id}, caller=ADMIN_CALLER
        )
        with self.injector.invocation("cancel") as current:
            try:
                response = invoke("status", event)
            except Killed:
                return None
            if self.injector.dies_on_reply(current):
                return None
        return response["statusCode"]

    def redrive(self) -> int:
        """The operator fixed the cause and redrives the DLQ."""
        return self.app.redrive_dead_letters()


@pytest.fixture
def world(app, monkeypatch) -> World:
    clock, injector = Clock(), Injector()
    clock.install(monkeypatch)
    injector.install(monkeypatch)
    state = World(app, clock, injector)
    # Lambda's asynchronous invoke of train_all (from the API or a redriven trigger): its own
    # invocation, later, retried and dead-lettered as Lambda does, never the caller's failure.
    app.run_train_all = state.accept_async_invoke
    state.fresh_container()
    return state


def quick_training(
    monkeypatch: pytest.MonkeyPatch,
    during: Callable[[str], None] | None = None,
    *,
    before: Callable[[str], None] | None = None,
):
    """Training without Prophet (paths where the fit itself is not the point): the model is
    still stored through ModelStore.save_model, with its three S3 writes. ``before`` and
    ``during`` run before the model is stored and after."""
    from siprems.forecasting import service as forecasting

    def train_product(sku, *, sales, store, horizon_days, work_dir, before_store=None):
        if before is not None:
            before(sku)
        if before_store is not None:
            before_store()
        stored = store.save_model(
            sku, json.dumps({"sku": sku}), {"sku": sku, "quick": True}, serving={"sku": sku}
        )
        if during is not None:
            during(sku)
        return {"product_sku": sku, "model": {"version": stored["model_version_id"]}}

    monkeypatch.setattr(forecasting, "train_product", train_product)


# --- the invariants -------------------------------------------------------------------------
def status_body(task_id: str) -> tuple[int, dict[str, Any]]:
    response = invoke(
        "status",
        api_event("status/task.json", path_parameters={"task_id": task_id}, caller=ADMIN_CALLER),
    )
    return response["statusCode"], response_json(response)


def job_ids(world: World) -> list[str]:
    """Every job item (SKU list shards have no status)."""
    return [item["task_id"] for item in world.app.items() if "status" in item]


def check(world: World, *, settled_after_redrive: bool) -> list[str]:
    """The invariants; returns what is wrong (empty: all hold). ``settled_after_redrive``: the
    cause was fixed and the DLQ redriven, so nothing may be left there."""
    store, problems = world.store, []
    jobs = {task_id: store.get(task_id) for task_id in job_ids(world)}
    dead = world.dead_letters()
    dead_jobs = [d.get("task_id") for d in dead if isinstance(d, dict) and "task_id" in d]
    triggers = [TrainAllTrigger.from_payload(d) for d in dead]  # a job's message is none
    dead_triggers = [t.parent_id for t in triggers if t is not None]
    if settled_after_redrive and dead:
        problems.append(f"dead letters left after the redrive: {dead}")
    if world.seconds_to_next_message() is not None:
        problems.append("messages left in the jobs queue")

    for task_id, job in jobs.items():
        what = f"{job.type.value} {task_id[:8]} ({job.status.value}, attempts {job.attempts})"
        parent_triggered = job.parent_id in dead_triggers or task_id in dead_triggers
        if not job.terminal:
            if not parent_triggered:
                where = "its message is in the DLQ" if task_id in dead_jobs else "no message"
                problems.append(f"{what} not finished, {where}")
            continue
        if job.dead_lettered and task_id not in dead_jobs:
            problems.append(f"{what} dead-lettered but its message is not in the DLQ")
        if job.status is JobStatus.SUCCESS and job.type is not JobType.TRAIN_ALL:
            code, body = status_body(task_id)
            if code != 200 or not body.get("result"):
                problems.append(f"{what}: no result through the API ({code})")
            elif not world.services.models.load_metadata(job.product_sku):
                problems.append(f"{what}: no stored model")
    for task_id in sorted(world.injector.queued - jobs.keys()):
        problems.append(f"job {task_id[:8]} was queued but is not recorded")
    for task_id in dead_jobs:
        # A finished job's message may reach the DLQ when its acknowledgements were lost on
        # every delivery (the ``reply`` point every time): a duplicate that a redrive
        # acknowledges without work. Anything else there must be a dead-lettered failure.
        job = jobs.get(task_id)
        if job is None:
            problems.append(f"job {task_id[:8]} (missing) has a message in the DLQ")

    for parent in (j for j in jobs.values() if j.type is JobType.TRAIN_ALL):
        problems += check_parent(world, parent, jobs, dead_triggers)
    return problems


def check_parent(world: World, parent: Job, jobs: dict[str, Job], dead_triggers) -> list[str]:
    """Counters = the children's outcomes, each child counted once; finished once, when
    no child is left, with the outcome its children say."""
    problems: list[str] = []
    if parent.task_id in dead_triggers and not parent.terminal:
        return problems  # its trigger waits in the DLQ
    children = [j for j in jobs.values() if j.parent_id == parent.task_id]
    if parent.status is JobStatus.REVOKED and parent.children is None:
        return [] if not children else [f"parent revoked before start has {len(children)} children"]
    counts = parent.children
    if counts is None:
        return [f"parent {parent.status.value} without counters"]
    skus = sorted(c.product_sku for c in children)
    if len(skus) != len(set(skus)):
        problems.append(f"a product has two children: {skus}")
    if counts.total != len(children) and parent.status is not JobStatus.REVOKED:
        problems.append(f"total {counts.total} but {len(children)} children")

    def counted_as(child: Job) -> JobStatus | None:
        if child.parent_counted:
            return JobStatus.FAILURE  # redriven after its parent finished: counted failed
        return child.status if child.terminal else None

    tally = {s: sum(1 for c in children if counted_as(c) is s) for s in JobStatus}
    counted = (counts.succeeded, counts.failed, counts.revoked)
    actual = (tally[JobStatus.SUCCESS], tally[JobStatus.FAILURE], tally[JobStatus.REVOKED])
    if counted != actual:
        problems.append(f"parent counts (ok, failed, revoked) {counted}, children say {actual}")
    waiting = counts.total - counts.done
    if counts.pending != waiting:
        problems.append(f"pending {counts.pending}, but {waiting} of {counts.total} not done")
    if parent.status is JobStatus.STARTED and counts.pending <= 0:
        problems.append(f"parent STARTED with nothing pending: {counts}")
    if parent.terminal and parent.status is not JobStatus.REVOKED:
        ok = counts.failed == 0 and counts.revoked == 0
        expected = JobStatus.SUCCESS if ok else JobStatus.FAILURE
        if parent.status is not expected or counts.pending != 0:
            problems.append(f"parent {parent.status.value} with {counts}")
    return problems


# --- the paths -----------------------------------------------------------------------------
Setup = Callable[[World, pytest.MonkeyPatch], tuple[str, Callable[[], None]]]


def submitted(world: World, event: str, body: Any = None, **path: str) -> str:
    response = invoke("submit", api_event(event, body=body, path_parameters=path or None))
    assert response["statusCode"] == 202, response["body"]
    return response_json(response)["task_id"]


def forecast_of_a_stored_model(world: World, monkeypatch, *, large: bool = False):
    from siprems.forecasting.service import train_product

    with world.services.sales.repository() as sales:  # the stored model, outside the paths
        train_product(
            "BRD-001",
            sales=sales,
            store=world.services.models,
            horizon_days=world.services.settings.backtest_days,
            work_dir=world.services.settings.work_dir / "setup",
        )
    if large:  # the result goes to S3, the item keeps its key
        from siprems.jobs import runner

        monkeypatch.setattr(runner, "INLINE_RESULT_MAX_BYTES", 0)
    task_id = submitted(world, "submit/predict-async.json")
    return f"worker:{task_id}", world.deliver


def forecast_that_trains_first(world: World, monkeypatch):
    task_id = submitted(world, "submit/predict-async.json", body={"product_sku": "CRS-001"})
    return f"worker:{task_id}", world.deliver


def training(world: World, monkeypatch):
    task_id = submitted(world, "submit/train-product.json")
    return f"worker:{task_id}", world.deliver


def queued_children(world: World, skus: list[str]) -> tuple[Job, list[Job]]:
    parent, children = started_parent(world.store, skus)
    for child in children:
        world.services.queue.send(child.message())
    return parent, children


def child(which: int) -> Setup:
    """A train_all child of a parent with two: the first one delivered or the last."""

    def setup(world: World, monkeypatch):
        quick_training(monkeypatch)
        _, children = queued_children(world, ["BRD-001", "RLL-001"])
        return f"worker:{children[which].task_id}", world.deliver

    return setup


def fan_out(skus: int | None = None, *, children_first: bool = False) -> Setup:
    """train_all on a parent the API recorded (asynchronous invocation, Lambda's retries),
    then the workers run its children (quick trainings). ``children_first``: the workers run
    what was queued before Lambda retries a failed run. ``skus``: a product list of that many
    (None: the Kiel data's six)."""

    def setup(world: World, monkeypatch):
        quick_training(monkeypatch)
        if skus is not None:
            from siprems.sales.repository import SalesRepository

            listed = [f"SKU-{i}" for i in range(skus)]
            monkeypatch.setattr(SalesRepository, "list_skus", lambda self: list(listed))
        parent = Job.new(JobType.TRAIN_ALL, requested_by="admin")
        world.store.create(parent)

        def go():
            between = world.deliver if children_first else None
            world.invoke_train_all({"parent_id": parent.task_id}, between=between)
            world.deliver()

        return "train_all", go

    return setup


def cancelled_while_running(kind: str, process: str) -> Setup:
    """A cancel (its own invocation) while a fit runs, before its model is stored: ``kind``
    "job" (a training on its own), "child" (a train_all parent's only child) or "parent" (a
    parent cancelled while the first of its two children trains). ``process``: which of the
    two may die, the worker or the cancel."""

    def setup(world: World, monkeypatch):
        cancelled: list[str] = []

        def cancel_once(sku: str) -> None:
            if not cancelled:
                cancelled.append(sku)
                world.cancel(target)

        quick_training(monkeypatch, before=cancel_once)
        if kind == "job":
            running = submitted(world, "submit/train-product.json")
            target = running
        else:
            skus = ["BRD-001"] if kind == "child" else ["BRD-001", "RLL-001"]
            parent, children = queued_children(world, skus)
            running = children[0].task_id
            target = running if kind == "child" else parent.task_id
        name = f"worker:{running}" if process == "worker" else "cancel"
        return name, world.deliver

    return setup


def transient_error_first(world: World, monkeypatch):
    """A training whose first attempt meets a transient error (the sales database away):
    RETRY with backoff, then the next delivery trains."""
    from siprems.errors import DatabaseUnavailableError

    failures = [DatabaseUnavailableError("the sales database is unavailable")]

    def fit(sku: str) -> None:
        if failures:
            raise failures.pop()

    quick_training(monkeypatch, before=fit)
    task_id = submitted(world, "submit/train-product.json")
    return f"worker:{task_id}", world.deliver


def waiting_on_a_last_delivery(world: World, monkeypatch):
    """A PENDING job whose message's earlier deliveries ended without an attempt (handed back:
    too little Lambda time): its last delivery queues it again as a fresh message."""
    quick_training(monkeypatch)
    task_id = submitted(world, "submit/train-product.json")
    received_without_work(world, times=2)
    return f"worker:{task_id}", world.deliver


def received_without_work(world: World, *, times: int) -> None:
    for _ in range(times):
        [message] = world.app.receive(visibility=0)


def failing_child(world: World, monkeypatch):
    """A train_all parent's only child whose product cannot be trained (a permanent error)."""
    from siprems.errors import InsufficientDataError

    def fit(sku: str) -> None:
        raise InsufficientDataError(f"{sku}: too few days of sales")

    quick_training(monkeypatch, before=fit)
    _, [only] = queued_children(world, ["BRD-001"])
    return f"worker:{only.task_id}", world.deliver


def stopped_twice(world: World, task_id: str) -> None:
    """The job's worker stopped on two deliveries (Lambda timeouts): STARTED long ago, its
    message received twice; the next delivery is its last."""
    claim = world.store.mark_started(
        task_id, stale_after=timedelta(0), now=world.clock.now() - timedelta(hours=1)
    )
    assert claim.applied
    received_without_work(world, times=2)


def dead_lettering(kind: str) -> Setup:
    """The last delivery of a job whose worker stopped on the two before: FAILURE
    (worker_stopped), the message to the DLQ. ``kind``: "job" (a training on its own) or
    "child" (a train_all parent's only child: its failure is counted, the parent finishes)."""

    def setup(world: World, monkeypatch):
        quick_training(monkeypatch)
        if kind == "job":
            task_id = submitted(world, "submit/train-product.json")
        else:
            _, [only] = queued_children(world, ["BRD-001"])
            task_id = only.task_id
        stopped_twice(world, task_id)
        return f"worker:{task_id}", world.deliver

    return setup


def redriven_child(parent_running: bool) -> Setup:
    """A train_all child dead-lettered (worker_stopped), redriven once the cause is fixed:
    while its parent still has another child pending (the failure is taken back from the
    parent's counters), or after the parent finished on it (its outcome is its own)."""

    def setup(world: World, monkeypatch):
        quick_training(monkeypatch)
        skus = ["BRD-001", "RLL-001"] if parent_running else ["BRD-001"]
        parent, children = started_parent(world.store, skus)
        world.services.queue.send(children[0].message())
        stopped_twice(world, children[0].task_id)
        world.deliver()  # the last delivery: FAILURE, to the DLQ
        assert world.store.get(children[0].task_id).dead_lettered
        assert world.redrive() == 1
        for other in children[1:]:
            world.services.queue.send(other.message())
        return f"worker:{children[0].task_id}", world.deliver

    return setup


def child_of_a_cancelled_parent(world: World, monkeypatch):
    """A child the cancel's pass missed (written later, or not yet in the by_parent index):
    the worker that claims it revokes it without work, counted on the parent."""
    quick_training(monkeypatch)
    parent, [only] = queued_children(world, ["BRD-001"])
    assert world.store.revoke(world.store.get(parent.task_id)).applied
    return f"worker:{only.task_id}", world.deliver


def submitting(event: str) -> Setup:
    """The submit route itself (its own invocation): the job is queued (or train_all invoked
    on a new parent), then recorded."""

    def setup(world: World, monkeypatch):
        quick_training(monkeypatch)

        def go() -> None:
            with world.injector.invocation("submit") as current:
                try:
                    response = invoke("submit", api_event(event))
                    if not world.injector.dies_on_reply(current):
                        assert response["statusCode"] == 202, response["body"]
                except Killed:
                    world.fresh_container()  # the client got a 5xx: nothing was accepted
            world.deliver()

        return "submit", go

    return setup


S, F, R = JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.REVOKED


@dataclass(frozen=True)
class Path:
    setup: Setup
    process: str  # "worker", "train_all" or "cancel": whose writes ``writes`` lists
    writes: tuple[str, ...]  # that invocation's writes on a clean run (its first one)
    final: dict[JobType, frozenset[JobStatus]]  # what each job ends as, the cause fixed


TRAINS = (
    "mark_started.update_item",
    "save_model.put_object",  # the model
    "save_model.put_object",  # its serving document
    "save_model.put_object",  # the metadata: the commit point
)
ALL_OK = {
    JobType.PREDICT: frozenset({S}),
    JobType.TRAIN: frozenset({S}),
    JobType.TRAIN_ALL: frozenset({S}),
}
PATHS: dict[str, Path] = {
    "forecast, stored model": Path(
        forecast_of_a_stored_model,
        "worker",
        ("mark_started.update_item", "mark_succeeded.update_item"),
        ALL_OK,
    ),
    "forecast, stored model, result in S3": Path(
        functools.partial(forecast_of_a_stored_model, large=True),
        "worker",
        ("mark_started.update_item", "save_forecast.put_object", "mark_succeeded.update_item"),
        ALL_OK,
    ),
    "forecast that trains first": Path(
        forecast_that_trains_first, "worker", (*TRAINS, "mark_succeeded.update_item"), ALL_OK
    ),
    "train": Path(training, "worker", (*TRAINS, "mark_succeeded.update_item"), ALL_OK),
    "train_all child, first of two": Path(
        child(0), "worker", (*TRAINS, "mark_succeeded.transact_write_items"), ALL_OK
    ),
    "train_all child, last of two": Path(
        child(1),
        "worker",
        # its count finishes the parent (a first try, as one of several pending, is cancelled)
        (*TRAINS, "mark_succeeded.transact_write_items"),
        ALL_OK,
    ),
    "train_all fan-out": Path(
        fan_out(),
        "train_all",
        (
            "start_parent.batch_write_item",  # the SKU list's shard
            "start_parent.update_item",  # the parent STARTED, its counters, the lease
            "put_new_children.batch_write_item",
            "send_batch.send_message_batch",
            "mark_fanned_out.update_item",
        ),
        ALL_OK,
    ),
    "train_all fan-out, workers first": Path(
        fan_out(children_first=True),
        "train_all",
        (
            "start_parent.batch_write_item",
            "start_parent.update_item",
            "put_new_children.batch_write_item",
            "send_batch.send_message_batch",
            "mark_fanned_out.update_item",
        ),
        ALL_OK,
    ),
    "train_all fan-out, no products": Path(
        fan_out(0),
        "train_all",
        (
            "start_parent.update_item",
            "finalize_parent.update_item",  # before the fan-out is marked done
            "mark_fanned_out.update_item",
        ),
        ALL_OK,
    ),
    "cancel a training while it runs: worker dies": Path(
        cancelled_while_running("job", "worker"),
        "worker",
        TRAINS[:1],  # nothing is stored: the job was cancelled before the store
        {JobType.TRAIN: frozenset({R})},
    ),
    "cancel a training while it runs: cancel dies": Path(
        cancelled_while_running("job", "cancel"),
        "cancel",
        ("revoke.update_item",),
        {JobType.TRAIN: frozenset({R})},
    ),
    "cancel the last child while it runs: worker dies": Path(
        cancelled_while_running("child", "worker"),
        "worker",
        TRAINS[:1],
        {JobType.TRAIN: frozenset({R}), JobType.TRAIN_ALL: frozenset({F})},
    ),
    "cancel the last child while it runs: cancel dies": Path(
        cancelled_while_running("child", "cancel"),
        "cancel",
        ("revoke.transact_write_items",),
        {JobType.TRAIN: frozenset({R}), JobType.TRAIN_ALL: frozenset({F})},
    ),
    "cancel a parent while a child runs: worker dies": Path(
        cancelled_while_running("parent", "worker"),
        "worker",
        (*TRAINS, "mark_succeeded.transact_write_items"),
        {JobType.TRAIN: frozenset({S, R}), JobType.TRAIN_ALL: frozenset({R})},
    ),
    "cancel a parent while a child runs: cancel dies": Path(
        cancelled_while_running("parent", "cancel"),
        "cancel",
        ("revoke.update_item", "revoke.transact_write_items"),  # the parent, then its waiting child
        {JobType.TRAIN: frozenset({S, R}), JobType.TRAIN_ALL: frozenset({R})},
    ),
    "train, a transient error first": Path(
        transient_error_first,
        "worker",
        (
            "mark_started.update_item",
            "mark_retry.update_item",
            "change_visibility.change_message_visibility",
        ),
        # FAILURE too: when crashes used up its attempts, the transient error meets the last one
        {JobType.TRAIN: frozenset({S, F})},
    ),
    "train, waiting on its message's last delivery": Path(
        waiting_on_a_last_delivery, "worker", ("send.send_message",), ALL_OK
    ),
    "train_all child failing for good": Path(
        failing_child,
        "worker",
        (
            "mark_started.update_item",
            "mark_failed.transact_write_items",
        ),
        {JobType.TRAIN: frozenset({F}), JobType.TRAIN_ALL: frozenset({F})},
    ),
    "dead-lettering a job whose worker stopped": Path(
        dead_lettering("job"),
        "worker",
        ("mark_worker_stopped.update_item", "change_visibility.change_message_visibility"),
        ALL_OK,  # redriven once the cause is fixed, it trains
    ),
    "dead-lettering a train_all child whose worker stopped": Path(
        dead_lettering("child"),
        "worker",
        (
            "mark_worker_stopped.transact_write_items",
            "change_visibility.change_message_visibility",
        ),
        ALL_OK,
    ),
    "redriven child, parent running": Path(
        redriven_child(parent_running=True),
        "worker",
        ("mark_redriven.transact_write_items", *TRAINS[1:], "mark_succeeded.transact_write_items"),
        ALL_OK,
    ),
    "redriven child, parent finished": Path(
        redriven_child(parent_running=False),
        "worker",
        ("mark_redriven.update_item", *TRAINS[1:], "mark_succeeded.update_item"),
        ALL_OK,
    ),
    "child of a cancelled parent": Path(
        child_of_a_cancelled_parent,
        "worker",
        ("mark_started.update_item", "revoke.transact_write_items"),
        {JobType.TRAIN: frozenset({R}), JobType.TRAIN_ALL: frozenset({R})},
    ),
    "submit a training": Path(
        submitting("submit/train-product.json"),
        "submit",
        ("send.send_message", "create_or_get.put_item"),
        ALL_OK,
    ),
    "submit a training of all products": Path(
        submitting("submit/train-all.json"),
        "submit",
        ("invoke.invoke", "create_or_get.put_item"),
        ALL_OK,
    ),
}


def final_statuses(world: World, path: Path) -> list[str]:
    problems = []
    jobs = [world.store.get(task_id) for task_id in job_ids(world)]
    for job in jobs:
        task_id = job.task_id
        redriven_late = any(j.parent_id == task_id and j.parent_counted for j in jobs)
        if redriven_late and job.status is JobStatus.FAILURE:
            continue  # a child dead-lettered and redriven after its parent finished on it
        if job.status not in path.final[job.type]:
            problems.append(f"{job.type.value} {task_id[:8]} ended {job.status.value}")
    return problems


@pytest.mark.parametrize("name", list(PATHS))
def test_each_paths_writes_are_those_listed(world, monkeypatch, name):
    """A clean run (no crash) of each path: its invocation makes the listed writes, in order
    (a change of a path's writes must come with its crash points), and the invariants hold."""
    path = PATHS[name]
    target, go = path.setup(world, monkeypatch)
    before = len(world.injector.history)
    go()
    first = next(i for i in world.injector.history[before:] if i.name == target)
    assert tuple(first.writes) == path.writes
    problems = settle(world, path)
    assert not problems, "\n".join(problems)


# Cases that fail, with why (each a finding; see the reasons): strict, so a fix shows.
KNOWN: dict[tuple[str, int | str, bool], str] = {}
CASES = [
    pytest.param(
        name,
        point,
        every,
        id=f"{name} | {point} | {'every time' if every else 'once'}",
        marks=[pytest.mark.xfail(reason=KNOWN[name, point, every], strict=True)]
        if (name, point, every) in KNOWN
        else [],
    )
    for name, path in PATHS.items()
    for point in [*range(1, len(path.writes) + 1), "reply"]
    for every in (False, True)
]


@pytest.mark.parametrize(("name", "point", "every"), CASES)
def test_a_crash_after_each_write(world, monkeypatch, name, point, every):
    """The process dies right after write ``point`` of the path (or after it returned), once
    or on every invocation that gets there; the work is delivered again until acknowledged or
    dead-lettered. Then the cause is fixed, the DLQ redriven, and everything must finish."""
    path = PATHS[name]
    target, go = path.setup(world, monkeypatch)
    world.injector.plan = Plan(target, point, every)
    go()
    assert world.injector.crashes >= 1, "the crash point was never reached"
    problems = settle(world, path)
    assert not problems, "\n".join(problems)


def settle(world: World, path: Path) -> list[str]:
    """The invariants once the deliveries settled; then the cause is fixed, the DLQ redriven,
    and every job must have finished as the path says."""
    problems = check(world, settled_after_redrive=False)
    world.injector.plan = None
    if world.redrive():
        world.deliver()
    problems += [f"after the redrive: {p}" for p in check(world, settled_after_redrive=True)]
    problems += [f"after the redrive: {p}" for p in final_statuses(world, path)]
    return problems
