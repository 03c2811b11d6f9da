"""The AWS and database adapters a function needs, built once per Lambda container."""

from __future__ import annotations

import json
from collections.abc import Iterator
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

# Connections each AWS client keeps: as many as the train_all fan-out's threads.
CLIENT_POOL_SIZE = 16
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=5,
    max_pool_connections=CLIENT_POOL_SIZE,
)


class InvokeFailedError(TransientError):
    code = "invoke_failed"


class SalesDatabase:
    """A connection per use: Lambda containers freeze between requests, so a kept
    connection would often be dead; connecting costs milliseconds."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @contextmanager
    def repository(self) -> Iterator[SalesRepository]:
        from siprems.sales.db import connect
        from siprems.sales.repository import SalesRepository

        conn = connect(self._settings)
        try:
            yield SalesRepository(conn)
        finally:
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
        try:
            self._lambda.invoke(
                FunctionName=self.function_name,
                InvocationType="Event",
                Payload=json.dumps(payload).encode(),
            )
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


def build_services(settings: Settings | None = None) -> Services:
    settings = settings or load_settings()

    def client(name: str) -> Any:
        return boto3.client(name, endpoint_url=settings.aws_endpoint_url, config=_BOTO_CONFIG)

    dynamodb = boto3.resource(
        "dynamodb", endpoint_url=settings.aws_endpoint_url, config=_BOTO_CONFIG
    )
    sqs = client("sqs")
    return Services(
        settings=settings,
        store=JobStore(dynamodb, settings.jobs_table),
        queue=JobQueue(sqs, settings.jobs_queue_url) if settings.jobs_queue_url else None,
        dead_letters=DeadLetterQueue(sqs, settings.dlq_url) if settings.dlq_url else None,
        models=ModelStore(client("s3"), settings.models_bucket),
        sales=SalesDatabase(settings),
        invoker=(
            AsyncInvoker(client("lambda"), settings.train_all_function)
            if settings.train_all_function
            else None
        ),
    )


@lru_cache(maxsize=1)
def get_services() -> Services:
    """Built on first use and kept for the container's life (clients are reusable)."""
    return build_services()
