"""Settings from the environment, loaded in one place.

Every function and tool reads its settings through ``load_settings()``; nothing else
reads ``os.environ`` for service configuration. Secrets (database password, JWT signing
key) are never stored here in clear: the settings name *where* to get them (a Secrets
Manager secret or an SSM parameter), and ``siprems.secrets`` fetches them on demand.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from siprems.errors import ConfigurationError


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int) -> int:
    return _number(name, default, int)


def _float(name: str, default: float) -> float:
    return _number(name, default, float)


def _number[N: (int, float)](name: str, default: N, kind: type[N]) -> N:
    text = _env(name, str(default))
    try:
        return kind(text)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigurationError(
            f"{name} must be a number ({kind.__name__}), not {text!r}"
        ) from None


@dataclass(frozen=True)
class Settings:
    # AWS resources (names come from the template's environment variables)
    jobs_table: str
    jobs_queue_url: str | None
    dlq_url: str | None
    models_bucket: str
    aws_endpoint_url: str | None  # LocalStack / moto server; None on AWS
    # Lambda's API where it is served apart from the others (sam local start-lambda); else
    # aws_endpoint_url. AWS_ENDPOINT_URL_LAMBDA is also what the AWS SDKs read for it.
    lambda_endpoint_url: str | None

    # Sales database: DATABASE_URL (local) or a Secrets Manager secret (AWS)
    database_url: str | None
    database_secret_name: str | None

    # JWT: the key itself only locally; on AWS the name of the SSM parameter / secret
    jwt_secret: str | None
    jwt_secret_parameter: str | None

    # Jobs
    job_ttl_days: int
    max_attempts: int
    retry_base_seconds: int
    retry_max_seconds: int
    sync_wait_seconds: float
    nightly_schedule: str
    nightly_enabled: bool  # the rule's state (template parameter NightlyScheduleEnabled)
    train_all_function: str | None  # the function the training-all route invokes asynchronously
    worker_timeout_seconds: int  # a STARTED job older than this belongs to a dead worker

    # Forecasting
    backtest_days: int  # the hold-out window of every training
    min_fit_seconds_left: float  # worker: do not start a fit with less Lambda time left
    work_dir: Path
    forecast_profile: str  # "default" (improved) or "legacy" (the original settings)
    forecast_overrides: str | None  # JSON object of ForecastOptions fields to override
    shop_timezone: str  # IANA name: sales are counted per calendar day of the shop


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    return Settings(
        jobs_table=_env("JOBS_TABLE", "siprems-jobs"),  # type: ignore[arg-type]
        jobs_queue_url=_env("JOBS_QUEUE_URL"),
        dlq_url=_env("JOBS_DLQ_URL"),
        models_bucket=_env("MODELS_BUCKET", "siprems-models"),  # type: ignore[arg-type]
        aws_endpoint_url=_env("AWS_ENDPOINT_URL"),
        lambda_endpoint_url=_env("AWS_ENDPOINT_URL_LAMBDA"),
        database_url=_env("DATABASE_URL"),
        database_secret_name=_env("DATABASE_SECRET_NAME"),
        jwt_secret=_env("JWT_SECRET_KEY"),
        jwt_secret_parameter=_env("JWT_SECRET_PARAMETER"),
        job_ttl_days=_int("JOB_TTL_DAYS", 30),
        max_attempts=_int("MAX_ATTEMPTS", 3),
        retry_base_seconds=_int("RETRY_BASE_SECONDS", 10),
        retry_max_seconds=_int("RETRY_MAX_SECONDS", 300),
        sync_wait_seconds=_float("SYNC_WAIT_SECONDS", 20.0),
        nightly_schedule=_env("NIGHTLY_SCHEDULE", "cron(0 2 * * ? *)"),  # type: ignore[arg-type]
        nightly_enabled=_env("NIGHTLY_ENABLED", "true") == "true",
        train_all_function=_env("TRAIN_ALL_FUNCTION"),
        worker_timeout_seconds=_int("WORKER_TIMEOUT_SECONDS", 120),
        backtest_days=_int("BACKTEST_DAYS", 28),
        min_fit_seconds_left=_float("MIN_FIT_SECONDS_LEFT", 20.0),
        # Lambda's only writable folder is /tmp, which is what gettempdir() gives there.
        work_dir=Path(_env("SIPREMS_WORK_DIR") or Path(tempfile.gettempdir()) / "siprems"),
        forecast_profile=_env("FORECAST_PROFILE", "default"),  # type: ignore[arg-type]
        forecast_overrides=_env("FORECAST_OPTIONS"),
        shop_timezone=_env("SHOP_TIMEZONE", "UTC"),  # type: ignore[arg-type]
    )
