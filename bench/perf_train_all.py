"""Nightly train-all of the Kiel products with 1 and 2 worker processes.

    .venv/bin/python -m bench.perf_train_all [--workers 1,2]

AWS is a moto server on 127.0.0.1; sales the embedded PostgreSQL with the Kiel data (6
products). Per worker count: a train-all parent, ``train_all`` fans out one child per SKU,
the queued records are shared round-robin between the worker processes in batches of the
template's default size (5), the processes run at the same time from a cold start, and the
parent must end in SUCCESS. Reports the wall time (spawn to the last process's exit) and the
time of the training batches alone (the slowest process's sum), as SKUs per minute.

``--skus N`` (N > 6) trains N products: the 6 real ones plus N - 6 series **derived** from
the five full-history Kiel products (every sale's quantity scaled by a factor from 0.6 to
1.4, SKUs ``DRV-0000``...), in a separate database ``siprems_perf`` on the same server so
that other users of the Kiel database see nothing of them.

Writes ``bench/results/perf_train_all.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.perf_common import (
    ROOT,
    create_resources,
    database_url,
    fake_aws_environment,
    write_result,
)
from bench.perf_worker import BATCH_SIZE, PYTHON, free_port, received_records

FULL_HISTORY = ["BRD-001", "RLL-001", "CRS-001", "CNF-001", "CKE-001"]


def derived_database(url: str, skus: int) -> str:
    """A database ``siprems_perf`` with the Kiel data plus ``skus - 6`` derived products."""
    from urllib.parse import urlsplit, urlunsplit

    from siprems.sales.db import connect_url, migrate
    from siprems.sales.seed import seed_kiel

    admin = connect_url(url)
    try:
        if not admin.run("SELECT 1 FROM pg_database WHERE datname = 'siprems_perf'"):
            admin.run("CREATE DATABASE siprems_perf")
    finally:
        admin.close()
    parts = urlsplit(url)
    perf_url = urlunsplit(parts._replace(path="/siprems_perf"))
    conn = connect_url(perf_url)
    try:
        migrate(conn)
        seed_kiel(conn, ROOT / "data" / "kiel-bakery")
        conn.run(
            "DELETE FROM transactions WHERE product_id IN"
            " (SELECT product_id FROM products WHERE sku LIKE 'DRV-%')"
        )
        conn.run("DELETE FROM products WHERE sku LIKE 'DRV-%'")
        for i in range(max(0, skus - 6)):
            source = FULL_HISTORY[i % len(FULL_HISTORY)]
            factor = 0.6 + 0.8 * ((i * 37) % 100) / 99
            sku = f"DRV-{i:04d}"
            conn.run(
                "INSERT INTO products (sku, name, category, price, stock)"
                " SELECT :sku, 'derived from ' || name, category, price, stock"
                " FROM products WHERE sku = :source",
                sku=sku,
                source=source,
            )
            conn.run(
                "INSERT INTO transactions"
                " (product_id, quantity_sold, price_per_unit, transaction_date, is_promo)"
                " SELECT d.product_id,"
                "   GREATEST(0, round(t.quantity_sold * CAST(:factor AS numeric))),"
                "   t.price_per_unit, t.transaction_date, t.is_promo"
                " FROM transactions t JOIN products s ON s.product_id = t.product_id"
                " JOIN products d ON d.sku = :sku WHERE s.sku = :source",
                sku=sku,
                source=source,
                factor=str(round(factor, 3)),
            )
    finally:
        conn.close()
    return perf_url


def run_processes(groups: list[list[dict[str, Any]]]) -> tuple[float, list[dict[str, Any]]]:
    """One worker process per group of records, all at once; wall ms and their reports."""
    paths, processes = [], []
    started = time.perf_counter()
    for records in groups:
        events = [
            {"Records": records[i : i + BATCH_SIZE]} for i in range(0, len(records), BATCH_SIZE)
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(events, handle)
            paths.append(handle.name)
        processes.append(
            subprocess.Popen(  # noqa: S603 - our own interpreter and script
                [PYTHON, str(ROOT / "bench" / "perf_worker_process.py"), handle.name],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=os.environ.copy(),
            )
        )
    reports = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"worker process failed: {err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    wall_ms = (time.perf_counter() - started) * 1000
    for path in paths:
        os.unlink(path)
    return wall_ms, reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_train_all")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--skus", type=int, default=6, help="more than 6: add derived series")
    parser.add_argument(
        "--localstack",
        action="store_true",
        help="AWS is the running LocalStack, not a moto server (moto's SQS receives slow down "
        "with the square of a queue's length: 1,000 queued children take many minutes)",
    )
    args = parser.parse_args(argv)
    fake_aws_environment()

    from moto.server import ThreadedMotoServer

    from bench.perf_enqueue import delete_resources
    from bench.perf_stack import localstack_running

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    if args.localstack:
        server = contextlib.nullcontext()
        aws = localstack_running()
    else:
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        aws = contextlib.nullcontext(f"http://127.0.0.1:{port}")
    runs: dict[str, Any] = {}
    with aws as endpoint, contextlib.ExitStack() as cleanup:
        if args.localstack:
            delete_resources(endpoint)
            cleanup.callback(delete_resources, endpoint)
        else:
            server.start()
            cleanup.callback(server.stop)
        with database_url() as url:
            if args.skus > 6:
                os.environ["DATABASE_URL"] = derived_database(url, args.skus)
            create_resources(endpoint)
            from siprems.jobs.fanout import train_all
            from siprems.jobs.model import Job, JobType
            from siprems.jobs.services import get_services

            services = get_services()
            for night, workers in enumerate((int(w) for w in args.workers.split(",")), 1):
                parent = Job.new(JobType.TRAIN_ALL, params={"trigger": "perf"})
                services.store.create(parent)
                fan_out = train_all(services, parent.task_id)
                records = received_records(fan_out.queued)
                groups = [records[i::workers] for i in range(workers)]
                wall_ms, reports = run_processes(groups)
                failures = sum(b["failures"] for r in reports for b in r["batches"])
                busy_ms = max(sum(b["ms"] for b in r["batches"]) for r in reports)
                status = services.store.get(parent.task_id).status.value
                key = f"night {night}, {workers} worker(s)"
                runs[key] = {
                    "skus": fan_out.total,
                    "workers": workers,
                    # Night 1 trains every product cold; later nights start from its models.
                    "night": night,
                    "wall_s": round(wall_ms / 1000, 2),
                    "training_batches_s": round(busy_ms / 1000, 2),
                    "skus_per_minute_wall": round(fan_out.total / wall_ms * 60_000, 1),
                    "skus_per_minute_training": round(fan_out.total / busy_ms * 60_000, 1),
                    "failures": failures,
                    "parent_status": status,
                    "peak_rss_mib": [round(r["peak_rss_kib"] / 1024) for r in reports],
                    "cpu_s_per_sku": round(
                        sum(r["cpu_seconds"] for r in reports) / max(fan_out.total, 1), 3
                    ),
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                }
                print(
                    f"night {night}, {workers} worker process(es), {fan_out.total} SKUs: "
                    f"{wall_ms / 1000:.1f} s from cold "
                    f"({runs[key]['skus_per_minute_wall']:.0f} SKUs/min), "
                    f"training batches {busy_ms / 1000:.1f} s "
                    f"({runs[key]['skus_per_minute_training']:.0f} SKUs/min); "
                    f"parent {status}, {failures} failures; CPU "
                    f"{runs[key]['cpu_s_per_sku']:.2f} s per SKU"
                )
    name = "perf_train_all" if args.skus <= 6 else f"perf_train_all_{args.skus}"
    write_result(
        name + ("_localstack" if args.localstack else ""),
        {
            "protocol": {
                "aws": (
                    f"LocalStack on the host at {endpoint} (HTTP)"
                    if args.localstack
                    else "moto server on 127.0.0.1 (HTTP)"
                )
                + ", resources from template.yaml",
                "skus": "the 6 Kiel products (real series)"
                + (f" and {args.skus - 6} derived from them" if args.skus > 6 else ""),
                "batch_size": BATCH_SIZE,
                "distribution": "records round-robin between processes, batches of 5",
            },
            "runs": runs,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
