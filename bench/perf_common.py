"""What the performance benchmarks share: the Kiel sales database, AWS resources built from
template.yaml's definitions (moto, in this process or as a local moto server for
subprocesses), statistics and the machine description written next to every figure."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "layers" / "common" / "python", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

RESULTS_DIR = ROOT / "bench" / "results"
REGION = "us-east-1"
TABLE = "siprems-jobs-perf"
QUEUE = "siprems-jobs-perf"
DLQ = "siprems-jobs-dlq-perf"
BUCKET = "siprems-models-perf"


def fake_aws_environment() -> None:
    """Credentials that can only ever reach moto."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "SipremsForecastPerf",
        "POWERTOOLS_SERVICE_NAME": "siprems-perf",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "MPLCONFIGDIR": str(ROOT / ".state" / "matplotlib"),
    }.items():
        os.environ[key] = value
    os.environ.pop("AWS_PROFILE", None)


def summary(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    """Median, p10, p90, min, max and count of repeated measurements."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        deciles = statistics.quantiles(ordered, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = ordered[0]
    return {
        "median": round(statistics.median(ordered), digits),
        "p10": round(p10, digits),
        "p90": round(p90, digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = ""
    with contextlib.suppress(OSError):
        mem_total = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for package in (
        "prophet",
        "cmdstanpy",
        "pandas",
        "numpy",
        "boto3",
        "moto",
        "aws-lambda-powertools",
        "pg8000",
    ):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": mem_total,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **result,
    }
    out = RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return out


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    """A migrated PostgreSQL seeded with the Kiel data: ``DATABASE_URL`` if set, else the
    embedded server in ``.state/postgres`` (left running if it already was)."""
    from siprems.sales.db import connect_url, migrate
    from siprems.sales.seed import seed_kiel

    url = os.environ.get("DATABASE_URL")
    server = None
    started_here = False
    if not url:
        from siprems.sales.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(ROOT / ".state" / "postgres")
        started_here = not server.status().running
        url = server.start()
        os.environ["DATABASE_URL"] = url
    conn = connect_url(url)
    try:
        migrate(conn)
        seed_kiel(conn, ROOT / "data" / "kiel-bakery")
    finally:
        conn.close()
    try:
        yield url
    finally:
        if server is not None and started_here:
            server.stop()


def create_resources(endpoint_url: str | None = None) -> dict[str, str]:
    """The jobs table, queue (with its dead-letter queue) and versioned model bucket as
    template.yaml defines them."""
    import boto3
    from cfnlint.decode import decode_str

    from tests.fixtures.jobs_table import jobs_table_definition

    template, matches = decode_str((ROOT / "template.yaml").read_text())
    if matches:
        raise RuntimeError(f"template.yaml does not parse: {matches}")
    template = json.loads(json.dumps(template, default=str))
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint_url)
    dynamodb.create_table(TableName=TABLE, **jobs_table_definition(template))
    sqs = boto3.client("sqs", endpoint_url=endpoint_url)
    dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    max_receive = template["Parameters"]["MaxReceiveCount"]["Default"]
    queue_url = sqs.create_queue(
        QueueName=QUEUE,
        Attributes={
            "VisibilityTimeout": "720",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}
            ),
        },
    )["QueueUrl"]
    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    env = {
        "JOBS_TABLE": TABLE,
        "JOBS_QUEUE_URL": queue_url,
        "JOBS_DLQ_URL": dlq_url,
        "MODELS_BUCKET": BUCKET,
        "MAX_ATTEMPTS": str(max_receive),
        "SIPREMS_WORK_DIR": str(ROOT / ".state" / "perf-work"),
    }
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    os.environ.update(env)
    _reset_cached_settings()
    return env


def _reset_cached_settings() -> None:
    from siprems.config import load_settings
    from siprems.jobs.services import get_services

    load_settings.cache_clear()
    get_services.cache_clear()
