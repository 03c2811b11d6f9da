"""The worker: cold start, import times, forecasts per minute, peak memory.

    .venv/bin/python -m bench.perf_worker [--cold-runs 3] [--forecasts 60] [--import-runs 5]

AWS is a moto server on 127.0.0.1 started here (the worker processes reach it over HTTP, as
a Lambda reaches AWS); sales come from the embedded PostgreSQL with the Kiel data. A model of
BRD-001 is trained and stored first, then:

- cold start: a fresh ``python`` process (with the environment variables Lambda sets)
  imports ``functions/worker/app.py`` and runs one SQS record (a 30-day forecast from the
  stored model); wall time from spawning the process to the handler's return, and the
  process's CPU time until then;
- import time of each heavy module, each in a fresh process;
- a training worker: a fresh process running one training job (peak RSS, modules loaded);
- forecasts per minute: one process, a first batch to warm it, then ``--forecasts`` 30-day
  forecasts in SQS batches of the template's default size (5), per minute of wall time and
  per minute of the worker's CPU time; peak RSS (VmHWM) of that process. Its batches
  alternate between the records one after another (1 thread, as before) and at the same
  time (the worker's processor, a thread per record), so that both see the same machine;
  each mode gets ``--forecasts`` forecasts.

Writes ``bench/results/perf_worker.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from siprems.jobs.batch import MAX_RECORD_THREADS
from siprems.queue import SQS_MAX_VISIBILITY

from bench.perf_common import (
    ROOT,
    create_resources,
    database_url,
    fake_aws_environment,
    summary,
    write_result,
)
from tests.fixtures.sqs_events import sqs_event

SKU = "BRD-001"
BATCH_SIZE = 5  # template.yaml WorkerBatchSize default
HEAVY_MODULES = [
    "numpy",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "cmdstanpy",
    "prophet",
    "boto3",
    "aws_lambda_powertools",
    "pg8000",
    "siprems.forecasting.service",
]
PYTHON = sys.executable
# What Lambda's runtime sets for the worker's process. Libraries read it: the X-Ray SDK, for
# one, builds its centralised-sampling client (an extra botocore client, ~0.3 s of CPU at
# import) only outside Lambda.
LAMBDA_ENVIRONMENT = {
    "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "worker"),
    "AWS_LAMBDA_FUNCTION_NAME": "siprems-worker-perf",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
}


# Tracing as the template deploys it (Tracing: Active): Powertools' Tracer on, the X-Ray SDK
# patching botocore; Lambda's runtime sets the invocation's trace header. With no X-Ray daemon
# here the segments go to 127.0.0.1:2000 over UDP and are dropped.
TRACING_ENVIRONMENT = {
    "_X_AMZN_TRACE_ID": "Root=1-67890abc-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=1"
}
TRACING = {"on": False}


def worker_environment() -> dict[str, str]:
    env = {**os.environ, **LAMBDA_ENVIRONMENT}
    if TRACING["on"]:
        env.pop("POWERTOOLS_TRACE_DISABLED", None)
        env.update(TRACING_ENVIRONMENT)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sqs_events(
    services: Any, count: int, batch: int, job_type: str = "predict"
) -> list[dict[str, Any]]:
    """``count`` forecast (or training) jobs, created and queued as the submit function does,
    received and shaped into SQS events as the event source mapping delivers them."""
    from siprems.jobs.model import Job, JobType

    kind = JobType(job_type)
    params = {"days": 30} if kind is JobType.PREDICT else {}
    for _ in range(count):
        job = Job.new(kind, product_sku=SKU, params=params)
        services.store.create(job)
        services.queue.send(job.message())
    records = received_records(count)
    return [{"Records": records[i : i + batch]} for i in range(0, count, batch)]


def received_records(count: int) -> list[dict[str, Any]]:
    """``count`` queued messages, received as SQS event records (the sample event's shape)."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        received = sqs.receive_message(
            # As long as SQS allows: the records are the benchmark's now, and must not come
            # back during a long run (1,000 first trainings take over ten minutes).
            QueueUrl=os.environ["JOBS_QUEUE_URL"],
            MaxNumberOfMessages=10,
            VisibilityTimeout=SQS_MAX_VISIBILITY,
        ).get("Messages", [])
        if not received:
            break
        messages.extend(received)
    if len(messages) != count:
        raise RuntimeError(f"queued {count} messages, received {len(messages)}")
    return sqs_event(messages)["Records"]


def run_worker_process(
    events: list[dict[str, Any]], threads: str | None = None
) -> tuple[float, dict[str, Any]]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(events, handle)
        path = handle.name
    try:
        spawned = time.time()
        done = subprocess.run(  # noqa: S603 - our own interpreter and script
            [PYTHON, str(ROOT / "bench" / "perf_worker_process.py"), path]
            + ([] if threads is None else [str(threads)]),
            capture_output=True,
            text=True,
            env=worker_environment(),
            check=False,
        )
    finally:
        os.unlink(path)
    if done.returncode != 0:
        raise RuntimeError(f"worker process failed: {done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    failures = sum(b["failures"] for b in report["batches"])
    if failures:
        raise RuntimeError(
            f"{failures} records failed in the worker: {done.stderr[-2000:]}{done.stdout[-4000:]}"
        )
    return (report["first_result_epoch"] - spawned) * 1000, report


def throughput_figures(report: dict[str, Any], threads: int) -> dict[str, Any]:
    """Forecasts per minute of a warm worker process: its batches after the first (which
    warms it) run with ``threads``, per minute of wall time and of the process's CPU time
    (all its threads)."""
    timed = [b for b in report["batches"][1:] if b["threads"] == threads]
    seconds = sum(b["ms"] for b in timed) / 1000
    records = sum(b["records"] for b in timed)
    cpu_seconds = sum(b["cpu_ms"] for b in timed) / 1000
    return {
        "record_threads": threads,
        "forecasts_per_minute": round(records / seconds * 60, 1),
        "forecasts_per_cpu_minute": round(records / cpu_seconds * 60, 1),
        "cpu_seconds": round(cpu_seconds, 2),
        "forecasts": records,
        "seconds": round(seconds, 2),
        "per_record_ms": summary([b["ms"] / b["records"] for b in timed]),
        "per_batch_ms": summary([b["ms"] for b in timed]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def import_ms(module: str, runs: int) -> dict[str, float]:
    code = (
        "import sys,time;sys.path.insert(0,'layers/common/python');t=time.perf_counter();"
        f"import {module};print((time.perf_counter()-t)*1000)"
    )
    values = []
    for _ in range(runs):
        done = subprocess.run(  # noqa: S603
            [PYTHON, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
        )
        values.append(float(done.stdout.strip().splitlines()[-1]))
    return summary(values)


def interpreter_start_ms(runs: int) -> dict[str, float]:
    values = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", "pass"], check=True)  # noqa: S603
        values.append((time.perf_counter() - started) * 1000)
    return summary(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_worker")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--forecasts", type=int, default=60)
    parser.add_argument("--import-runs", type=int, default=5)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="the worker with tracing on, as deployed (writes perf_worker_tracing.json)",
    )
    args = parser.parse_args(argv)
    TRACING["on"] = args.tracing
    fake_aws_environment()

    print("import times (fresh process each, ms):")
    imports = {"python -c pass (interpreter start)": interpreter_start_ms(args.import_runs)}
    for module in HEAVY_MODULES:
        imports[module] = import_ms(module, args.import_runs)
        print(f"  {module:32s} {imports[module]['median']:7.0f}")

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with database_url():
            create_resources(f"http://127.0.0.1:{port}")
            from siprems.forecasting.service import train_product
            from siprems.jobs.services import get_services

            services = get_services()
            with services.sales.repository() as sales:
                train_product(SKU, sales=sales, store=services.models)

            cold = []
            cold_reports = []
            for _ in range(args.cold_runs):
                events = sqs_events(services, 1, 1)
                ms, report = run_worker_process(events)
                cold.append(ms)
                cold_reports.append(report)
                print(
                    f"cold start to first result: {ms:.0f} ms, "
                    f"{report['cpu_ms_to_first_result']:.0f} ms CPU (handler import "
                    f"{report['handler_import_ms']:.0f} ms, first record "
                    f"{report['batches'][0]['ms']:.0f} ms, peak RSS "
                    f"{report['peak_rss_kib'] / 1024:.0f} MiB)"
                )

            # a training worker: one cold process, one training job (Prophet, cmdstan)
            training_ms, training = run_worker_process(sqs_events(services, 1, 1, "train"))
            print(
                f"training worker, cold, one training job: {training_ms:.0f} ms, peak RSS "
                f"{training['peak_rss_kib'] / 1024:.0f} MiB, modules "
                f"{training['modules_loaded']}"
            )

            events = sqs_events(services, BATCH_SIZE + 2 * args.forecasts, BATCH_SIZE)
            # This process serves the moto server: its CPU meanwhile is what the fake AWS costs.
            aws_cpu_started = time.process_time()
            _, warm = run_worker_process(events, f"1,{MAX_RECORD_THREADS}")
            aws_cpu_ms_per_record = (
                (time.process_time() - aws_cpu_started)
                * 1000
                / sum(b["records"] for b in warm["batches"])
            )
            print(f"moto server CPU per forecast record: {aws_cpu_ms_per_record:.1f} ms")
            throughput = {}
            for mode, threads in (("sequential", 1), ("concurrent", MAX_RECORD_THREADS)):
                figures = throughput_figures(warm, threads)
                throughput[mode] = figures
                print(
                    f"forecasts per minute, one warm worker process, {mode} "
                    f"({threads} threads): {figures['forecasts_per_minute']:.0f} "
                    f"({figures['forecasts']} forecasts in {figures['seconds']:.1f} s; per "
                    f"batch of {BATCH_SIZE} {figures['per_batch_ms']['median']:.0f} ms median; "
                    f"{figures['forecasts_per_cpu_minute']:.0f} a minute of the worker's CPU "
                    f"time); load {figures['load_average']}"
                )
            print(f"peak RSS {warm['peak_rss_kib'] / 1024:.0f} MiB")
    finally:
        server.stop()

    write_result(
        "perf_worker_tracing" if args.tracing else "perf_worker",
        {
            "protocol": {
                "aws": "moto server on 127.0.0.1 (HTTP), resources from template.yaml",
                "sales": "PostgreSQL (embedded) seeded with the Kiel data",
                "sku": SKU,
                "forecast_days": 30,
                "batch_size": BATCH_SIZE,
                "cold_start": "spawn of a fresh python process -> first handler return",
                "lambda_environment": LAMBDA_ENVIRONMENT,
                "tracing": "on (X-Ray SDK, no daemon)" if args.tracing else "disabled",
            },
            "import_ms": imports,
            "cold_start_ms": summary(cold),
            "cold_start_cpu_ms": summary([r["cpu_ms_to_first_result"] for r in cold_reports]),
            "cold_start_reports": cold_reports,
            # the worker as deployed (a batch's records at the same time); its rounds and
            # the sequential ones beside it below
            "throughput": {
                **throughput["concurrent"],
                "peak_rss_mib": round(warm["peak_rss_kib"] / 1024, 1),
                "modules_loaded": warm["modules_loaded"],
                "clients_built": warm["clients_built"],
            },
            "throughput_sequential": throughput["sequential"],
            # CPU of the moto server (4 requests) per record, both modes together
            "moto_server_cpu_ms_per_record": round(aws_cpu_ms_per_record, 1),
            "peak_rss_mib_cold": summary([r["peak_rss_kib"] / 1024 for r in cold_reports]),
            "training_worker": {
                "cold_start_to_result_ms": round(training_ms, 1),
                "peak_rss_mib": round(training["peak_rss_kib"] / 1024, 1),
                "modules_loaded": training["modules_loaded"],
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
