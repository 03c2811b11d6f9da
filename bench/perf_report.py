"""Markdown tables from bench/results/perf_*.json (for docs/PERFORMANCE.md).

    .venv/bin/python -m bench.perf_report
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.perf_common import RESULTS_DIR


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def spread(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} ({s['p10']:.{digits}f}–{s['p90']:.{digits}f}, n={s['n']})"


def main() -> int:
    compute, worker = load("perf_compute"), load("perf_worker")
    enqueues = [
        json.loads(path.read_text()) for path in sorted(RESULTS_DIR.glob("perf_enqueue*.json"))
    ]
    if compute:
        m = compute["machine"]
        print(f"compute run {compute['generated_at']}, load average {m['load_average']}\n")
        print(
            "| SKU | train ms | original train ms | forecast ms | original forecast ms | "
            "ratio | answer bytes default / full / original |"
        )
        print("|---|---|---|---|---|---|---|")
        for sku, row in compute["per_sku"].items():
            original_train = row.get("original_train_ms")
            print(
                f"| {sku} | {spread(row['train_ms'])} | "
                f"{spread(original_train) if original_train else 'n/a'} | "
                f"{spread(row['forecast_ms'])} | {spread(row['original_forecast_ms'])} | "
                f"{row['original_over_forecast']:.2f} | {row['answer_bytes_default']:,} / "
                f"{row['answer_bytes_full_history']:,} / {row['answer_bytes_original']:,} |"
            )
        print(f"\noverall: {json.dumps(compute['overall'])}\n")
    if worker:
        m = worker["machine"]
        print(f"worker run {worker['generated_at']}, load average {m['load_average']}\n")
        print("| import (fresh process) | ms median (p10–p90) |\n|---|---|")
        for module, s in worker["import_ms"].items():
            print(f"| {module} | {spread(s)} |")
        t = worker["throughput"]
        print(f"\ncold start ms: {spread(worker['cold_start_ms'])}")
        reports = worker["cold_start_reports"]
        print(
            f"handler import ms: {[round(r['handler_import_ms']) for r in reports]}; "
            f"first record ms: {[round(r['batches'][0]['ms']) for r in reports]}"
        )
        print(
            f"forecasts/min: {t['forecasts_per_minute']} ({t['forecasts']} in {t['seconds']} s), "
            f"per record ms (batch of 5 / 5): {spread(t['per_record_ms'])}, "
            f"peak RSS {t['peak_rss_mib']} MiB, modules loaded {t['modules_loaded']}"
        )
        print(f"cold peak RSS MiB: {spread(worker['peak_rss_mib_cold'])}\n")
    train_all = load("perf_train_all")
    if train_all:
        for run in train_all["runs"].values():
            print(f"train-all: {json.dumps(run)}")
    for enqueue in enqueues:
        print(
            f"enqueue: {enqueue['children']} children in {enqueue['seconds']} s "
            f"({enqueue['children_per_second']}/s; SQS sends {enqueue.get('sqs_send_seconds')} s, "
            f"the rest {enqueue.get('other_seconds')} s), re-run {enqueue['rerun_seconds']} s, "
            f"load average {enqueue['machine']['load_average']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
