"""The AWS and database adapters a function needs, built once per Lambda container."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from siprems.config import Settings, load_settings
from siprems.errors import SipremsError, TransientError
from siprems.jobs.store import JobStore
from siprems.model_store import ModelStore
from siprems.queue import DeadLetterQueue, JobQueue

if TYPE_CHECKING:
    from siprems.sales.repository import SalesRepository

# Connections each AWS client keeps: as many as the train_all fan-out's threads (32: 10,000
# children against LocalStack in 11.7-13.3 s, 14.0-15.2 s with 16, docs/PERFORMANCE.md).
CLIENT_POOL_SIZE = 32
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=5,
    max_pool_connections=CLIENT_POOL_SIZE,
)
# SQS and Lambda's Invoke answer in milliseconds; one that hangs must fail while its caller
# can still answer. With botocore's defaults (a 60 s read timeout, three attempts) a hanging
# SendMessage or Invoke outlasts the submit function's 28 s (template.yaml), which then dies
# without answering; bounded, it gives up after at most (2 + 3) s x 2 attempts + a retry
# backoff of up to 1 s = 11 s, while the route can still answer (503). Every function's SQS
# and Lambda clients are built here, so they all take it.
BOUNDED_CALL_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2},  # the first and one retry
    connect_timeout=2,
    read_timeout=3,
)


class LazyClient:
    """A boto3 client built on its first use. Building one loads the service's model (tens of
    ms of CPU each): a worker that never retries needs no SQS client, and only the
    training-all route needs a Lambda client. Safe from threads: clients are built one at a
    time (boto3's default session is not safe to build clients from several threads at
    once), and a client itself is thread-safe."""

    _building = threading.Lock()  # one for all: they share boto3's default session

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Any = None

    @property
    def built(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        client = self._client
        if client is None:
            with LazyClient._building:
                if self._client is None:
                    self._client = self._build()
                client = self._client
        return getattr(client, name)


class InvokeFailedError(TransientError):
    code = "invoke_failed"


class SalesDatabase:
    """Connections to the sales database, reused by the jobs of a warm container: a new one
    costs the server a process and an authentication (5 ms on this project's embedded
    PostgreSQL; a TLS handshake more on AWS). Lambda freezes a container between requests,
    so a connection idle for ``IDLE_SECONDS`` is closed rather than trusted, one that saw an
    error is never reused, and a kept one answers a ``SELECT 1`` before it is handed out."""

    # A product found in the database is not looked up again for this long by the same
    # container: the check before every submit is then no connection and no query. Only
    # products that exist are remembered, so a new product is accepted at once; a deleted
    # one can still be submitted for this long, and its job then fails as an unknown SKU.
    KNOWN_PRODUCT_SECONDS = 300.0
    IDLE_SECONDS = 30.0
    KEPT_CONNECTIONS = 10  # a batch's records run at the same time (jobs.batch)

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._known_until: dict[str, float] = {}
        self._idle: list[tuple[float, Any]] = []  # (returned at, connection), newest last
        self._lock = threading.Lock()

    def product_exists(self, sku: str) -> bool:
        if self._known_until.get(sku, 0.0) > self._clock():
            return True
        with self.repository() as sales:
            exists = sales.product_exists(sku)
        if exists:
            if len(self._known_until) >= 10_000:  # bounded: a warm container's memory
                self._known_until.clear()
            self._known_until[sku] = self._clock() + self.KNOWN_PRODUCT_SECONDS
        return exists

    @contextmanager
    def repository(self) -> Iterator[SalesRepository]:
        from siprems.sales.repository import SalesRepository

        conn = self._checkout()
        try:
            yield SalesRepository(conn, self._settings.shop_timezone)
        except BaseException:
            _close_quietly(conn)
            raise
        self._checkin(conn)

    def close(self) -> None:
        """Close the kept connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            _close_quietly(conn)

    def _checkout(self) -> Any:
        from siprems.sales.db import connect

        with self._lock:
            if self._idle and self._clock() - self._idle[-1][0] < self.IDLE_SECONDS:
                stale, kept = [], self._idle.pop()[1]
            else:
                stale, self._idle, kept = self._idle, [], None  # the rest idled even longer
        for _, conn in stale:
            _close_quietly(conn)
        if kept is not None:
            try:
                kept.run("SELECT 1")  # 0.1 ms: the server may have ended it meanwhile
                return kept
            except Exception:  # noqa: BLE001 - any failure: a new connection instead
                _close_quietly(kept)
        return connect(self._settings)

    def _checkin(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < self.KEPT_CONNECTIONS:
                self._idle.append((self._clock(), conn))
                return
        _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - closing a broken connection
        pass


class AsyncInvoker:
    """Starts another function without waiting for it (Lambda retries it on error)."""

    def __init__(self, lambda_client: Any, function_name: str) -> None:
        self._lambda = lambda_client
        self.function_name = function_name

    def invoke(self, payload: dict[str, Any]) -> None:
        self._call(
            "invoke",
            FunctionName=self.function_name,
            InvocationType="Event",
            Payload=json.dumps(payload).encode(),
        )

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._lambda, operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise InvokeFailedError(f"could not start {self.function_name}: {exc}") from exc


@dataclass
class Services:
    settings: Settings
    store: JobStore
    queue: JobQueue | None
    dead_letters: DeadLetterQueue | None
    models: ModelStore
    sales: SalesDatabase
    invoker: AsyncInvoker | None

    def require_queue(self) -> JobQueue:
        if self.queue is None:
            raise SipremsError("JOBS_QUEUE_URL is not configured")
        return self.queue

    def require_dead_letters(self) -> DeadLetterQueue:
        if self.dead_letters is None:
            raise SipremsError("JOBS_DLQ_URL is not configured")
        return self.dead_letters


def build_services(settings: Settings | None = None) -> Services:
    settings = settings or load_settings()

    def client(
        name: str, endpoint_url: str | None = settings.aws_endpoint_url, *, bounded: bool = False
    ) -> LazyClient:
        config = _BOTO_CONFIG.merge(BOUNDED_CALL_CONFIG) if bounded else _BOTO_CONFIG
        return LazyClient(lambda: boto3.client(name, endpoint_url=endpoint_url, config=config))

    # Every function that builds services reads or writes jobs: built now. JobStore takes
    # the resource's client, so it would be built at once anyway.
    dynamodb = boto3.resource(
        "dynamodb", endpoint_url=settings.aws_endpoint_url, config=_BOTO_CONFIG
    )
    sqs = client("sqs", bounded=True)
    return Services(
        settings=settings,
        store=JobStore(dynamodb, settings.jobs_table),
        queue=JobQueue(sqs, settings.jobs_queue_url) if settings.jobs_queue_url else None,
        dead_letters=DeadLetterQueue(sqs, settings.dlq_url) if settings.dlq_url else None,
        models=ModelStore(client("s3"), settings.models_bucket),
        sales=SalesDatabase(settings),
        invoker=(
            AsyncInvoker(
                client(
                    "lambda",
                    settings.lambda_endpoint_url or settings.aws_endpoint_url,
                    bounded=True,
                ),
                settings.train_all_function,
            )
            if settings.train_all_function
            else None
        ),
    )


@lru_cache(maxsize=1)
def get_services() -> Services:
    """Built on first use and kept for the container's life (clients are reusable)."""
    return build_services()
