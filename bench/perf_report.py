"""Markdown tables from bench/results/perf_*.json (for docs/PERFORMANCE.md).

    .venv/bin/python -m bench.perf_report

One section per benchmark that has results: compute per SKU, worker, train-all, fan-out,
the local stack, and what a nightly retrain costs on Lambda from the measured CPU per SKU.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.perf_common import RESULTS_DIR

# AWS Lambda, x86, us-east-1, first price tier: the prices on aws.amazon.com/lambda/pricing,
# unchanged since 1 ms billing began in December 2020 (as last read in 2025). Check before
# budgeting.
PRICE_PER_GB_SECOND = 0.0000166667
PRICE_PER_MILLION_REQUESTS = 0.20
# Lambda gives one full vCPU at 1,769 MB; a Prophet fit is single-threaded, so a worker of
# that size runs a fit in about the CPU time it takes here.
ONE_VCPU_MB = 1769
WORKER_BATCH_SIZE = 5  # template.yaml WorkerBatchSize default: one request per 5 SKUs


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def spread(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} ({s['p10']:.{digits}f}–{s['p90']:.{digits}f}, n={s['n']})"


def nightly_retrain(
    skus: int,
    cpu_s_per_sku: float,
    concurrency: int,
    *,
    memory_mb: int = ONE_VCPU_MB,
    fanout_s_per_child: float = 0.0,
) -> dict[str, float]:
    """Lambda time and cost of training ``skus`` products at ``concurrency`` workers of
    ``memory_mb`` (at 1,769 MB or more a fit takes its CPU time; below, proportionally longer)."""
    seconds_per_sku = cpu_s_per_sku * max(1.0, ONE_VCPU_MB / memory_mb)
    gb_seconds = skus * seconds_per_sku * memory_mb / 1024
    requests = -(-skus // WORKER_BATCH_SIZE)
    return {
        "gb_seconds": gb_seconds,
        "cost_usd": gb_seconds * PRICE_PER_GB_SECOND
        + requests * PRICE_PER_MILLION_REQUESTS / 1_000_000,
        "minutes": (skus * seconds_per_sku / concurrency + skus * fanout_s_per_child) / 60,
    }


def compute_section(compute: dict[str, Any]) -> None:
    m = compute["machine"]
    print(f"### compute run {compute['generated_at']}, load average {m['load_average']}\n")
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


def worker_section(worker: dict[str, Any]) -> None:
    m = worker["machine"]
    print(f"### worker run {worker['generated_at']}, load average {m['load_average']}\n")
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
        f"cold start CPU ms: {spread(worker['cold_start_cpu_ms'])}"
        if "cold_start_cpu_ms" in worker
        else ""
    )
    print(
        f"forecasts/min: {t['forecasts_per_minute']} ({t['forecasts']} in {t['seconds']} s), "
        f"per CPU minute {t['forecasts_per_cpu_minute']}, "
        f"per record ms (batch of 5 / 5): {spread(t['per_record_ms'])}, "
        f"peak RSS {t['peak_rss_mib']} MiB, modules loaded {t['modules_loaded']}"
    )
    if s := worker.get("throughput_sequential"):
        print(
            f"  the same process's batches run one record after another: forecasts/min "
            f"{s['forecasts_per_minute']}, per CPU minute {s['forecasts_per_cpu_minute']}, "
            f"per record ms {spread(s['per_record_ms'])}"
        )
    print(f"cold peak RSS MiB: {spread(worker['peak_rss_mib_cold'])}\n")


def train_all_runs() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    runs = []
    for path in sorted(RESULTS_DIR.glob("perf_train_all*.json")):
        result = json.loads(path.read_text())
        runs += [(result, run) for run in result["runs"].values()]
    return sorted(runs, key=lambda pair: (pair[1]["skus"], pair[1]["workers"]))


def train_all_section() -> None:
    runs = train_all_runs()
    if not runs:
        return
    print("### nightly train-all (embedded PostgreSQL, worker processes; AWS as each run says)\n")
    print(
        "| SKUs | worker processes | wall from cold s | SKUs/min (wall) | training batches s "
        "| SKUs/min (batches) | CPU s per SKU | parent | run (UTC), load average |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for result, run in runs:
        cpu = run.get("cpu_s_per_sku")
        print(
            f"| {run['skus']:,} | {run['workers']} | {run['wall_s']:.1f} | "
            f"{run['skus_per_minute_wall']:.0f} | {run['training_batches_s']:.1f} | "
            f"{run['skus_per_minute_training']:.0f} | {f'{cpu:.2f}' if cpu else 'n/a'} | "
            f"{run['parent_status']}, {run['failures']} failed | "
            f"{result['generated_at'][11:16]}, {result['machine']['load_average']}"
            f"{', LocalStack' if 'LocalStack' in result['protocol']['aws'] else ''} |"
        )
    print()


def enqueue_section() -> None:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("perf_enqueue*.json"))]
    if not results:
        return
    print("### train-all fan-out\n")
    print(
        "| backend | children | total s | children/s | fan-out CPU ms per child | "
        "re-run s (created / re-queued) | load average |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        backend = "LocalStack" if "LocalStack" in r["protocol"]["aws"] else "moto in-process"
        cpu = r.get("fanout_cpu_ms_per_child")
        rerun = (
            f"{r['rerun_seconds']} ({r['rerun_created']} / {r['rerun_queued']})"
            if r.get("rerun_seconds") is not None
            else "—"
        )
        print(
            f"| {backend} | {r['children']:,} | {r['seconds']} | {r['children_per_second']} | "
            f"{cpu if cpu is not None else 'n/a'} | {rerun} | "
            f"{r.get('load_average_before', r['machine']['load_average'])} |"
        )
    print()


def stack_section(stack: dict[str, Any]) -> None:
    submit = stack["submit"]
    s = submit["latency_ms"]
    print(f"### local stack run {stack['generated_at']}\n")
    print(
        f"submit ({submit['requests']} sequential requests): p50 {s['p50']} ms, p95 {s['p95']} "
        f"ms, p99 {s['p99']} ms, max {s['max']} ms; cold first request "
        f"{submit['cold_first_request_ms']} ms; handler duration "
        f"{spread(submit['handler_duration_ms'], 1) if submit['handler_duration_ms'] else 'n/a'}"
        f"; load average {submit['load_average_before']} → {submit['load_average_after']}\n"
    )
    print("| probe | ms median (p10–p90) |\n|---|---|")
    for name, value in stack["breakdown"].items():
        print(f"| {name} | {spread(value, 1)} |")
    r = stack["submit_to_result"]
    print(
        f"\nsubmit to result: stored model {spread(r['stored_model_ms'])} (first "
        f"{r['stored_model_first_ms']}); first train {spread(r['first_train_ms'])} (with the "
        f"worker's cold start {r['first_train_with_worker_cold_start_ms']})\n"
    )


def aws_section() -> None:
    runs = [run for _, run in train_all_runs() if run.get("cpu_s_per_sku")]
    if not runs:
        return
    run = max(runs, key=lambda r: (r["skus"], r["workers"]))
    fanouts = [
        json.loads(p.read_text())
        for p in sorted(RESULTS_DIR.glob("perf_enqueue*.json"))
        if "LocalStack" in json.loads(p.read_text())["protocol"]["aws"]
    ]
    # On AWS the fan-out is bound by its own CPU (LocalStack's time says nothing there).
    fanout = fanouts[-1]["fanout_cpu_ms_per_child"] / 1000 if fanouts else 0.0
    cpu = run["cpu_s_per_sku"]
    print(
        f"### AWS nightly retrain from {cpu:.2f} CPU s per SKU (train-all of {run['skus']:,} SKUs"
        f", {run['workers']} workers); ${PRICE_PER_GB_SECOND:.10f} per GB-s, "
        f"${PRICE_PER_MILLION_REQUESTS} per million requests; workers of {ONE_VCPU_MB} MB; "
        f"fan-out {fanout * 1000:.1f} ms of CPU per child\n"
    )
    print("| SKUs | GB-s | Lambda cost per night | time at 5 | at 50 | at 100 | at 500 |")
    print("|---|---|---|---|---|---|---|")
    for skus in (10_000, 100_000):
        row = [nightly_retrain(skus, cpu, c, fanout_s_per_child=fanout) for c in (5, 50, 100, 500)]
        print(
            f"| {skus:,} | {row[0]['gb_seconds']:,.0f} | ${row[0]['cost_usd']:.2f} | "
            + " | ".join(f"{r['minutes']:.1f} min" for r in row)
            + " |"
        )
    print()


def main() -> int:
    if compute := load("perf_compute"):
        compute_section(compute)
    if worker := load("perf_worker"):
        worker_section(worker)
    train_all_section()
    enqueue_section()
    if stack := load("perf_stack"):
        stack_section(stack)
    aws_section()
    return 0


if __name__ == "__main__":
    sys.exit(main())
