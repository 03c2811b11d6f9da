"""One error hierarchy for the whole service.

Every error the service raises on purpose is a ``SipremsError``. It carries a stable
``code`` (machine readable) and an HTTP status for the API. Its class decides what the
worker does with a job that hit it: a ``PermanentError`` (bad input, unknown SKU, too little
data) fails the job at once; everything else, ``TransientError`` (database or storage down)
or not, is retried with backoff up to the job's maximum number of attempts.
"""

from __future__ import annotations

from typing import Any


class SipremsError(Exception):
    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    # A fixed sentence for clients where ``message`` names internals (hosts, buckets, tables)
    public_text: str | None = None

    @property
    def public_message(self) -> str:
        """The message for clients (API answers, a job's error); ``message`` goes to logs."""
        return self.public_text or self.message


class PermanentError(SipremsError):
    """Retrying cannot help: the job fails at once."""

    code = "permanent_error"
    http_status = 400


class TransientError(SipremsError):
    """A dependency is unavailable: the job is retried with backoff."""

    code = "transient_error"
    http_status = 503


class ConfigurationError(SipremsError):
    """The service's own settings are unusable (e.g. NIGHTLY_SCHEDULE): the operator's fault,
    never the client's, so a 500 and not a 400."""

    code = "configuration_error"
    http_status = 500


# --- permanent -------------------------------------------------------------------------
class InvalidInputError(PermanentError):
    code = "invalid_input"
    http_status = 400


class UnknownSkuError(PermanentError):
    code = "unknown_sku"
    http_status = 404

    def __init__(self, sku: str) -> None:
        super().__init__(f"unknown product SKU: {sku!r}", product_sku=sku)


class InsufficientDataError(PermanentError):
    code = "insufficient_data"
    http_status = 422


class NotFoundError(PermanentError):
    code = "not_found"
    http_status = 404


class ConflictError(PermanentError):
    """A state transition that is not allowed, e.g. cancelling a finished job."""

    code = "conflict"
    http_status = 409


class ModelNotFoundError(PermanentError):
    code = "model_not_found"
    http_status = 404


class SchemaMigrationError(PermanentError):
    """The database schema cannot be brought up to date (e.g. an applied migration changed)."""

    code = "schema_migration_error"
    http_status = 500


class TrainingFailedError(PermanentError):
    """The model fit itself failed on valid input (retrying the same data cannot help)."""

    code = "training_failed"
    http_status = 500


# --- transient -------------------------------------------------------------------------
class DatabaseUnavailableError(TransientError):
    code = "database_unavailable"
    public_text = "the sales database is unavailable; try again later"  # not its host and user


class StorageUnavailableError(TransientError):
    """S3 (the model store) failed."""

    code = "storage_unavailable"
    public_text = "the model store is unavailable; try again later"  # not its bucket and key


class JobStoreUnavailableError(StorageUnavailableError):
    """DynamoDB (the jobs table) failed: the same code and retries as S3's."""

    public_text = "the job store is unavailable; try again later"  # not its table


class WorkerStoppedError(TransientError):
    """The worker stopped without an outcome (Lambda timeout, crash) on a message's last
    delivery: the job fails and its message goes to the DLQ, to be redriven once the cause is
    fixed."""

    code = "worker_stopped"

    def __init__(self, runs: int) -> None:
        """``runs``: the job's runs that stopped, since the last redrive if it was redriven."""
        super().__init__(
            f"the worker stopped without an answer in {runs} run{'s' if runs != 1 else ''}"
            " (timeout or crash); the message is in the dead-letter queue: fix the cause and"
            " redrive it",
            attempts=runs,
        )


class UnauthorizedError(PermanentError):
    """No valid access token (missing, expired, badly signed, wrong algorithm or type)."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(PermanentError):
    """A valid token without the role a route needs."""

    code = "forbidden"
    http_status = 403


class QueueUnavailableError(TransientError):
    code = "queue_unavailable"


class WorkerBusyError(TransientError):
    """A training waited for the worker's training slot (one at a time) until too little of
    the invocation's time was left for a fit: retried from a later invocation."""

    code = "worker_busy"
