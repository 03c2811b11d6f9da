"""The worker's work on one queued message, at least once and safe to repeat.

Per message: claim the job (conditional PENDING/RETRY -> STARTED, attempts + 1); a job that
is finished or cancelled is acknowledged without work; run the fit or forecast; SUCCESS with
the result in the job item (in S3 when large). Permanent errors fail the job at once.
Transient ones put it back to RETRY with exponential backoff (the message's visibility) until
the last attempt, then FAILURE with the error. A message is acknowledged by returning, and
kept in the queue by raising ``KeepMessage``.

SQS counts every delivery, with or without an outcome, towards the queue's maxReceiveCount
(= ``MAX_ATTEMPTS``). A message handed back without an attempt (too little Lambda time left, the
job running in another worker) would use up that budget and reach the dead-letter queue with
its job still waiting. So on a message's last delivery, a job that cannot run now is queued
again as a fresh message (sent first, then the old one acknowledged: at least once) instead;
the job's own ``attempts`` still bounds its retries.

A message may come before its job's item: the submit routes queue a job, then record it, so
that a submit that dies in between leaves a job that runs rather than a PENDING one that
nothing runs. The message carries the whole job (``Job.message``): when the claim finds no
item, the job is recorded from it, already claimed, with one conditional put (the submit's
own put then finds it and leaves it). Only then: the normal path has no extra request. A job
past its expiry is not recorded again (its item was deleted by TTL).

A worker that stops without an outcome (Lambda timeout, crash) records nothing. On a message's
last delivery, a STARTED job whose start is stale (its worker stopped) is therefore not run a
third time: it fails with ``worker_stopped``, marked ``dead_lettered``, and its message is kept
so that SQS moves it to the dead-letter queue. A later delivery of that message can only be a
redrive from the DLQ (after the cause was fixed): the job starts again and runs. A train_all
child's failure is already counted on its parent (one transaction): redriven while the parent
runs, the child takes that failure back and its new outcome is counted; after the parent has
finished, its outcome is recorded on the child alone (``JobStore.mark_redriven``).

A train_all child's outcome, whichever write records it, is counted on its parent in the same
transaction, which also finishes the parent when the child was its last one pending: the
worker has nothing left to do for the parent afterwards.

A message may also be a train_all trigger (``{"parent_id": ...}`` or the nightly rule's event):
Lambda puts one in the dead-letter queue when every attempt of train_all's asynchronous
invocation failed, and the DLQ's redrive brings it here. The worker starts train_all again,
asynchronously, with the same payload, and acknowledges the message. That is safe twice:
train_all on the same parent is idempotent, and does nothing for a parent that has finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from siprems.errors import (
    ConflictError,
    InsufficientDataError,
    PermanentError,
    SipremsError,
    UnknownSkuError,
    WorkerBusyError,
    WorkerStoppedError,
)
from siprems.jobs.model import Job, JobError, JobStatus, JobType, TrainAllTrigger, pack_json
from siprems.jobs.services import Services
from siprems.jobs.store import Outcome, Transition
from siprems.observability import MetricUnit, add_metric, job_context, logger, tracer
from siprems.queue import backoff_seconds

# A job item keeps a result up to this size, packed (a 30-day forecast is ~3 KB): one write
# instead of an S3 object and its key, and a status read gets it with the item. Larger ones
# (a forecast with its full history) go to S3: an item is at most 400 KB, paid by its size.
INLINE_RESULT_MAX_BYTES = 16 * 1024


class KeepMessage(Exception):  # noqa: N818 - a signal, not an error
    """Leave the message in the queue (it comes back after its visibility timeout)."""


@dataclass(frozen=True)
class Message:
    task_id: str
    receipt_handle: str | None
    product_sku: str | None = None
    body: dict[str, Any] | None = None  # as received, to queue it again
    receive_count: int = 1  # SQS's ApproximateReceiveCount of this delivery

    @property
    def delivery(self) -> str:
        """Names this delivery (each receive has its own receipt handle), not the handle
        itself, which would let its reader delete the message."""
        if not self.receipt_handle:
            return "unknown"
        return hashlib.sha256(self.receipt_handle.encode()).hexdigest()[:16]


def parse_message(
    body: str, receipt_handle: str | None, receive_count: int = 1
) -> Message | TrainAllTrigger:
    """A job message, or a train_all trigger (redriven from the DLQ); anything else is a
    PermanentError. The body is decoded once for both."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise PermanentError(f"not a job message: {body[:200]!r}") from exc
    trigger = TrainAllTrigger.from_payload(data)
    if trigger is not None:
        return trigger
    try:
        task_id = data["task_id"]
    except (KeyError, TypeError) as exc:
        raise PermanentError(f"not a job message: {body[:200]!r}") from exc
    if not isinstance(task_id, str) or not task_id:
        raise PermanentError(f"not a job message: {body[:200]!r}")
    return Message(
        task_id=task_id,
        receipt_handle=receipt_handle,
        product_sku=data.get("product_sku"),
        body=data,
        receive_count=receive_count,
    )


JobFunction = Callable[[Job, Services, Path], dict[str, Any]]

# Failures of a product's data, not of the service (a product with too few days of sales
# fails every night until it has them): counted as JobsRejected, so that JobsFailed and its
# alarm mean a fault.
DATA_REJECTIONS = (InsufficientDataError, UnknownSkuError)

# The records of a batch run in threads (siprems.jobs.batch), but one training at a time per
# process: a fit is CPU-bound (its two cmdstan runs already use a second vCPU where there is
# one) and peaks at ~140 MiB, so trainings side by side would only multiply the memory the
# worker was sized and measured for. Forecasts, which mostly wait for AWS, still overlap.
TRAINING_SLOT = threading.BoundedSemaphore(1)
# Per record (each runs in a thread of its own): until when a fit may still start in this
# invocation, and how long the record waited for the slot (not part of its FitSeconds).
_FIT_DEADLINE: ContextVar[float | None] = ContextVar("siprems_fit_deadline", default=None)
_SLOT_WAITED: ContextVar[float] = ContextVar("siprems_slot_waited", default=0.0)
_SLOT_HELD: ContextVar[bool] = ContextVar("siprems_slot_held", default=False)


@contextlib.contextmanager
def training_slot() -> Iterator[None]:
    """TRAINING_SLOT, waited for only while a fit still fits in the invocation's time: the
    records of a batch pass the time check together, and trainings queued behind each other
    would otherwise start with too little time left and run into the Lambda timeout.
    WorkerBusyError when the wait runs out. A record that holds it already (the runner takes
    it for a training before claiming the job) goes on."""
    if _SLOT_HELD.get():
        yield
        return
    deadline = _FIT_DEADLINE.get()
    started = time.monotonic()
    timeout = None if deadline is None else max(deadline - started, 0.0)
    if not TRAINING_SLOT.acquire(timeout=timeout):
        raise WorkerBusyError(
            "the worker's training slot stayed busy until too little time was left for a fit"
        )
    _SLOT_WAITED.set(_SLOT_WAITED.get() + time.monotonic() - started)
    held = _SLOT_HELD.set(True)
    try:
        yield
    finally:
        _SLOT_HELD.reset(held)
        TRAINING_SLOT.release()


def run_job(job: Job, services: Services, work_dir: Path) -> dict[str, Any]:
    """Train or forecast through the forecasting service (imported here: pandas/Prophet
    load only in the worker)."""
    from siprems.forecasting.service import forecast_product, train_product

    if not job.product_sku:
        raise PermanentError(f"job {job.task_id} has no product_sku")
    backtest_days = services.settings.backtest_days
    if job.type is JobType.PREDICT:
        days = job.params.get("days")
        if not isinstance(days, int):
            raise PermanentError(f"predict job {job.task_id} has no number of days")
        history: dict[str, Any] = {}
        if "history_days" in job.params:  # absent: the service's default window
            asked = job.params["history_days"]
            history["history_days"] = None if asked == "all" else int(asked)
        with services.sales.repository() as sales:
            return forecast_product(
                job.product_sku,
                days,
                sales=sales,
                store=services.models,
                work_dir=work_dir,
                training_slot=training_slot(),  # a product without a model is trained first
                backtest_days=backtest_days,
                **history,
            )
    if job.type is JobType.TRAIN:
        with training_slot(), services.sales.repository() as sales:
            return train_product(
                job.product_sku,
                sales=sales,
                store=services.models,
                horizon_days=backtest_days,
                work_dir=work_dir,
                before_store=lambda: _refuse_if_cancelled(services, job),
            )
    raise PermanentError(f"the worker does not run {job.type.value} jobs")


def _revoked(services: Services, task_id: str) -> bool:
    job = services.store.get(task_id)
    return job is not None and job.status is JobStatus.REVOKED


def _refuse_if_cancelled(services: Services, job: Job) -> None:
    """A training cancelled while it ran must not replace the model that is served (the job's
    status write is refused anyway; storing the model would not be). A cancel after this
    read still lets the model through: the window is the model's three PUTs."""
    if _revoked(services, job.task_id):
        logger.info("training cancelled while it ran: its model is not stored")
        raise ConflictError(
            f"the training of {job.product_sku} was cancelled before its model was stored: "
            "the model served is unchanged"
        )


class JobRunner:
    def __init__(self, services: Services, *, run: JobFunction = run_job) -> None:
        """One runner per invocation: what it remembers (a parent's cancel) lasts a batch."""
        self.services = services
        self.settings = services.settings
        self._run = run
        self._parents_cancelled: dict[str, bool] = {}
        self._parents_lock = threading.Lock()

    def process(
        self,
        body: str,
        receipt_handle: str | None,
        remaining_seconds: Callable[[], float],
        receive_count: int = 1,
    ) -> str:
        """Handle one message; returns what happened (for logs and tests), raises
        KeepMessage to leave it in the queue."""
        message = parse_message(body, receipt_handle, receive_count)
        if isinstance(message, TrainAllTrigger):
            return self._start_train_all(message)
        with job_context(message.task_id, message.product_sku):
            return self._process(message, remaining_seconds)

    def _process(self, message: Message, remaining_seconds: Callable[[], float]) -> str:
        if remaining_seconds() < self.settings.min_fit_seconds_left:
            # Not enough time for a fit: nothing is changed, the message comes back at once.
            logger.warning("too little time left, job goes back to the queue")
            return self._hand_back(message, 0, "too little Lambda time left")
        deadline = _FIT_DEADLINE.set(
            time.monotonic() + remaining_seconds() - self.settings.min_fit_seconds_left
        )
        waited = _SLOT_WAITED.set(0.0)
        try:
            with contextlib.ExitStack() as held:
                if (message.body or {}).get("type") == JobType.TRAIN.value:
                    # A training takes the slot before its job is claimed: when its turn does
                    # not come in time, nothing has changed (no attempt used).
                    try:
                        held.enter_context(training_slot())
                    except WorkerBusyError:
                        logger.warning("training slot busy: job goes back to the queue")
                        return self._hand_back(message, 0, "training slot busy")
                return self._claim_and_run(message)
        finally:
            _SLOT_WAITED.reset(waited)
            _FIT_DEADLINE.reset(deadline)

    def _claim_and_run(self, message: Message) -> str:
        store = self.services.store
        stale_after = timedelta(seconds=self.settings.worker_timeout_seconds)
        if self._last_delivery(message):
            current = self._dead_letter_if_worker_stopped(message, stale_after)
            if (current is None and _unrecorded(message) is not None) or (
                current is not None and _would_run(current, message)
            ):
                # No run starts on a message's last delivery: a worker stopped on it (a
                # timeout, a crash) would leave the job STARTED, its message in the DLQ and
                # nothing to notice. A fresh message runs it (recording it first if it is not
                # yet); the job's attempts still bound its runs, and its deliveries still end
                # in worker_stopped if it keeps dying.
                running = current is not None and current.status is JobStatus.STARTED
                delay = self.settings.worker_timeout_seconds if running else 0
                return self._hand_back(message, delay, "no run starts on a last delivery")
        claim = store.mark_started(message.task_id, stale_after=stale_after)
        if claim.outcome is Outcome.NOT_FOUND and (job := _unrecorded(message)) is not None:
            claim = self._record_and_claim(job, stale_after)
        if claim.outcome is Outcome.TERMINAL and claim.job and claim.job.dead_lettered:
            claim = self._redrive(message, claim.job)
        if claim.outcome is Outcome.NOT_FOUND:
            logger.warning("no such job, and none to record (expired, or an old message): dropped")
            return "missing"
        if claim.outcome is Outcome.TERMINAL:
            assert claim.job is not None
            logger.info("job already %s: acknowledged without work", claim.job.status.value)
            if claim.job.counts_on_parent:
                # Its parent may be one that an earlier version, which finished parents in a
                # second write, left STARTED when it stopped before that write (until such
                # parents have expired: JobTtlDays after this change).
                store.finalize_parent(claim.job.parent_id)
            return "skipped"
        if claim.outcome is Outcome.IN_PROGRESS:
            logger.info("job is running in another worker: message kept")
            # Checked again once that worker's time is up (it may have died).
            delay = self.settings.worker_timeout_seconds if self._last_delivery(message) else None
            return self._hand_back(message, delay, "in progress elsewhere")
        if not claim.applied:
            logger.warning("job cannot start from %s", claim.job.status.value if claim.job else "?")
            return "skipped"

        job = claim.job
        assert job is not None
        if job.parent_id and self._parent_cancelled(job):
            # The cancel's pass over the children misses those written after it (a fan-out
            # still running) or not yet in the by_parent index: they stop here. So does a
            # child redriven from the DLQ after the cancel (parent_counted: revoked alone).
            if store.revoke(job).applied:
                logger.info("train_all parent cancelled: child revoked without work")
            return "skipped"
        logger.info("job started", extra={"attempt": job.attempts, "job_type": job.type.value})
        work_dir = self.settings.work_dir / job.task_id
        started, waited_before = time.monotonic(), _SLOT_WAITED.get()
        try:
            result = self._run_traced(job, work_dir)
            waited = _SLOT_WAITED.get() - waited_before  # a forecast's training, queued
            add_metric(
                name="FitSeconds",
                unit=MetricUnit.Seconds,
                value=round(time.monotonic() - started - waited, 3),
            )
            recorded = self._result_to_record(job, result)
        except PermanentError as exc:
            return self._fail(job, exc)
        except SipremsError as exc:
            return self._retry_or_fail(job, message, exc)
        except Exception as exc:  # noqa: BLE001 - an unexpected error: retried, then fails
            logger.exception("unexpected error in job")
            return self._retry_or_fail(job, message, SipremsError(f"{type(exc).__name__}: {exc}"))
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

        done = store.mark_succeeded(job, **recorded)
        if not done.applied:
            return self._lost(done, "result not recorded")
        add_metric(name="JobsSucceeded", unit=MetricUnit.Count, value=1)
        logger.info(
            "job succeeded",
            extra={
                "result_bytes": len(recorded["result"]) if "result" in recorded else None,
                "result_key": recorded.get("result_key"),
            },
        )
        return "succeeded"

    def _record_and_claim(self, job: Job, stale_after: timedelta) -> Transition:
        """A job queued but not recorded: its submit queues first and records next, and may
        not have yet, or have died in between. Recorded from its message already claimed
        (one conditional put); if its submit recorded it meanwhile, claimed as any job."""
        claimed = job.claimed()
        if self.services.store.create(claimed):
            logger.info("job recorded from its message: its submit had not recorded it")
            return Transition(Outcome.APPLIED, claimed)
        return self.services.store.mark_started(job.task_id, stale_after=stale_after)

    def _result_to_record(self, job: Job, result: dict[str, Any]) -> dict[str, Any]:
        """``mark_succeeded``'s result argument: the packed result, or, above
        ``INLINE_RESULT_MAX_BYTES``, the key of the result written to S3."""
        packed = pack_json(result)
        if len(packed) <= INLINE_RESULT_MAX_BYTES:
            return {"result": packed}
        return {"result_key": self.services.models.save_forecast(job.task_id, result)}

    def _start_train_all(self, trigger: TrainAllTrigger) -> str:
        """A redriven train_all trigger: invoke train_all again (a failed invoke raises, and
        the message comes back)."""
        invoker = self.services.invoker
        if invoker is None:
            raise SipremsError("TRAIN_ALL_FUNCTION is not configured")
        with job_context(trigger.parent_id):
            invoker.invoke(trigger.payload)
            logger.info(
                "train_all trigger from the dead-letter queue: train_all invoked again",
                extra={"scheduled_time": trigger.scheduled_time},
            )
        return "train_all invoked"

    @tracer.capture_method(capture_response=False)
    def _run_traced(self, job: Job, work_dir: Path) -> dict[str, Any]:
        return self._run(job, self.services, work_dir)

    def _fail(self, job: Job, exc: SipremsError) -> str:
        done = self.services.store.mark_failed(job, error=JobError.of(exc))
        if not done.applied:
            return self._lost(done, "failure not recorded")
        rejected = isinstance(exc, DATA_REJECTIONS)
        add_metric(
            name="JobsRejected" if rejected else "JobsFailed", unit=MetricUnit.Count, value=1
        )
        logger.error("job failed", extra={"error_type": exc.code, "error": exc.message})
        return "failed"

    def _retry_or_fail(self, job: Job, message: Message, exc: SipremsError) -> str:
        if job.attempts_since_redrive >= self.settings.max_attempts:
            return self._fail(job, exc)
        retry = self.services.store.mark_retry(
            job.task_id, attempt=job.attempts, error=JobError.of(exc)
        )
        if not retry.applied:
            return self._lost(retry, "retry not recorded")
        delay = backoff_seconds(
            job.attempts_since_redrive,
            base=self.settings.retry_base_seconds,
            maximum=self.settings.retry_max_seconds,
        )
        logger.warning(
            "job will be retried",
            extra={
                "attempt": job.attempts,
                "retry_in_seconds": delay,
                "error_type": exc.code,
                "error": exc.message,
            },
        )
        return self._hand_back(message, delay, f"retry in {delay}s")

    def _dead_letter_if_worker_stopped(
        self, message: Message, stale_after: timedelta
    ) -> Job | None:
        """On the message's last delivery: a STARTED job whose worker stopped without an
        outcome fails (``worker_stopped``, marked dead-lettered) and the message is kept, to
        reach the DLQ at once (KeepMessage). Otherwise returns the job as read (None: no
        such job)."""
        store = self.services.store
        job = store.get(message.task_id)
        if job is None or job.status is not JobStatus.STARTED:
            return job
        error = WorkerStoppedError(job.attempts_since_redrive)
        stopped = store.mark_worker_stopped(
            job,
            stale_after=stale_after,
            error=JobError.of(error),
            delivery=message.delivery,
        )
        if not stopped.applied:
            return stopped.job  # running elsewhere, or it moved on
        add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
        logger.error(
            "job failed: its worker stopped on every delivery, message goes to the DLQ",
            extra={"error_type": error.code, "attempt": job.attempts},
        )
        self._dead_letter(message)

    def _redrive(self, message: Message, job: Job) -> Transition:
        """A delivery of a job that failed dead-lettered: its message came back from the DLQ,
        unless this is the very delivery that dead-lettered it (handled twice)."""
        if job.dead_lettered == message.delivery:
            self._dead_letter(message)
        redriven = self.services.store.mark_redriven(job, delivery=message.delivery)
        if redriven.applied:
            logger.info(
                "dead-lettered job redriven: it runs again",
                extra={"parent_counted": bool(redriven.job and redriven.job.parent_counted)},
            )
        return redriven

    def _dead_letter(self, message: Message) -> None:
        """Keep the message, visible at once: its next receive is past maxReceiveCount, so
        SQS moves it to the DLQ then."""
        self._show_again(message, 0)
        raise KeepMessage("worker stopped on every delivery: to the dead-letter queue")

    def _last_delivery(self, message: Message) -> bool:
        return message.receive_count >= self.settings.max_attempts

    def _hand_back(self, message: Message, seconds: int | None, why: str) -> str:
        """The job could not be finished now: the message comes back after ``seconds`` (None:
        the queue's visibility timeout). On its last delivery it is queued again as a fresh
        message and this one acknowledged; otherwise kept (KeepMessage)."""
        if self._last_delivery(message) and self.services.queue is not None and message.body:
            try:
                self.services.queue.send(message.body, delay_seconds=seconds or 0)
            except SipremsError:
                logger.exception("could not queue the job again: message kept")
            else:
                logger.info(
                    "last delivery of the message: job queued again",
                    extra={"receive_count": message.receive_count, "delay_seconds": seconds or 0},
                )
                return "requeued"
        if seconds is not None:
            self._show_again(message, seconds)
        raise KeepMessage(why)

    def _show_again(self, message: Message, seconds: int) -> None:
        if message.receipt_handle and self.services.queue is not None:
            try:
                self.services.queue.change_visibility(message.receipt_handle, seconds)
            except SipremsError:
                logger.exception("could not change the message visibility")

    def _lost(self, refused: Transition, what: str) -> str:
        """This attempt's outcome was refused: the job moved on without it (cancelled, or
        taken over by another worker). A child that finished that way (REVOKED while it ran)
        was counted on its parent by that change, which finished the parent if it was the
        last one pending."""
        now = refused.job
        logger.info("%s: job is now %s", what, now.status.value if now else "gone")
        return "lost"

    def _parent_cancelled(self, job: Job) -> bool:
        """Read once per invocation: a batch's children of one train_all share the answer
        (one GetItem instead of one per child on a night of trainings). A cancel during the
        batch still reaches its waiting children: the cancel revokes their items, and a
        revoked job is not claimed."""
        assert job.parent_id is not None
        with self._parents_lock:
            if job.parent_id not in self._parents_cancelled:
                self._parents_cancelled[job.parent_id] = _revoked(self.services, job.parent_id)
            return self._parents_cancelled[job.parent_id]


def _unrecorded(message: Message) -> Job | None:
    """The job a message carries, to record when its item does not exist: None if the
    message carries none (queued before messages carried their job) or the job has expired
    (its item was deleted by TTL, and stays gone)."""
    job = Job.from_message(message.body)
    return None if job is None or job.expired else job


def _would_run(job: Job, message: Message) -> bool:
    """Whether a claim of ``job`` by ``message`` could start a run: the job has not
    finished, or it failed dead-lettered by another delivery (a redrive)."""
    if not job.terminal:
        return True
    return job.dead_lettered is not None and job.dead_lettered != message.delivery
