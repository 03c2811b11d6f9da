"""A training's time per SKU: hold-out backtest + refit on all data, cold and warm.

    .venv/bin/python -m bench.train_speed [--repeats 5] [--profile default]

What ``train_product`` computes (no database or S3 time), per Kiel product, median of
``--repeats``, wall and CPU milliseconds (CPU includes cmdstan's child processes):

- **cold**: the first training of a product (both fits from Prophet's initial values), its
  two fits at the same time (two cmdstan processes, as the service runs them);
- **cold, serial**: the same, the fits one after the other (what one CPU allows);
- **warm**: a nightly training: the fit states of the night before's training (its data up
  to the day before) start both fits (``warm_start_nights``);
- **warm, shared matrix**: the same, with the feature matrix already built by an earlier
  training of the process (products of a train-all whose histories span the same days).

Cold and warm build their feature matrix and holiday frame (the process caches are cleared
before each).

Also the original settings' single fit (``legacy``, no hold-out), timed the same way in the
same run: the original's training, the reference for the target of a training with its
hold-out under 250 ms per SKU. Writes ``bench/results/train_speed.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "layers" / "common" / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))

from bench.perf_common import write_result  # noqa: E402

HORIZON = 28
TARGET_MS = 250.0


def _timed(function) -> tuple[Any, float, float]:
    from siprems.forecasting.train import cpu_seconds

    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function()
    return result, (time.perf_counter() - wall) * 1000, (cpu_seconds() - cpu) * 1000


def run_sku(sku, daily, events, options, repeats, work_dir) -> dict[str, Any]:
    from siprems.forecasting import train
    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.preprocess import sales_frame
    from siprems.forecasting.train import fit, train_with_holdout

    frame = sales_frame(daily, options)
    observed = sales_frame(daily, ForecastOptions(missing_days="skip"))
    night_before = observed["ds"] < observed["ds"].max()
    previous, _ = train_with_holdout(
        frame[frame["ds"] < observed["ds"].max()],
        observed[night_before],
        events,
        options,
        sku,
        HORIZON,
        work_dir,
    )
    states = previous.extra["fit_states"]
    legacy = ForecastOptions.legacy()
    legacy_frame = sales_frame(daily, legacy)
    runs: dict[str, list[float]] = {}
    iterations: dict[str, list[int]] = {
        "cold": [],
        "cold_serial": [],
        "warm": [],
        "warm_shared": [],
    }
    cases = (
        ("cold", None, True),
        ("cold_serial", None, False),
        ("warm", states, True),
        ("warm_shared", states, True),
    )
    for _ in range(repeats):  # interleaved: all see the same load
        for name, prior, concurrent in cases:
            if name != "warm_shared":
                train._FEATURES.clear()
                train._HOLIDAYS.clear()
            trained, wall, cpu = _timed(
                lambda prior=prior, concurrent=concurrent: train_with_holdout(
                    frame,
                    observed,
                    events,
                    options,
                    sku,
                    HORIZON,
                    work_dir,
                    previous=prior,
                    concurrent=concurrent,
                )[0]
            )
            runs.setdefault(f"{name}_ms", []).append(wall)
            runs.setdefault(f"{name}_cpu_ms", []).append(cpu)
            iterations[name].append(trained.extra["iterations"])
        _, wall, cpu = _timed(lambda: fit(legacy_frame, events, legacy, sku, work_dir))
        runs.setdefault("original_fit_ms", []).append(wall)
        runs.setdefault("original_fit_cpu_ms", []).append(cpu)
    figures = {name: round(statistics.median(values), 1) for name, values in runs.items()}
    figures["refit_iterations"] = {k: statistics.median(v) for k, v in iterations.items()}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train_speed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--skus", default=None, help="comma-separated (default: all)")
    parser.add_argument("--name", default="train_speed", help="bench/results/NAME.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".state" / "matplotlib"))

    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.train import fit  # noqa: F401  (import Prophet before timing)

    from scripts.demo import kiel_sales

    options = ForecastOptions.named(args.profile)
    work_dir = ROOT / ".state" / "work"
    started = time.perf_counter()
    load_before = os.getloadavg()
    with kiel_sales(quiet=True) as sales:
        events = sales.prediction_events()
        skus = args.skus.split(",") if args.skus else sales.list_skus()
        daily = {sku: sales.daily_sales(sku) for sku in skus}
    per_sku = {}
    print(f"train with hold-out backtest, {args.profile} options, median of {args.repeats}")
    print(
        f"{'sku':9s}{'cold ms':>9s}{'(cpu)':>7s}{'serial ms':>10s}{'(cpu)':>7s}"
        f"{'warm ms':>9s}{'(cpu)':>7s}"
        f"{'shared ms':>10s}{'(cpu)':>7s}"
        f"{'original fit ms':>17s}{'(cpu)':>7s}{'refit iterations cold/warm':>28s}"
    )
    for sku in skus:
        f = per_sku[sku] = run_sku(sku, daily[sku], events, options, args.repeats, work_dir)
        it = f["refit_iterations"]
        print(
            f"{sku:9s}{f['cold_ms']:9.0f}{f['cold_cpu_ms']:7.0f}"
            f"{f['cold_serial_ms']:10.0f}{f['cold_serial_cpu_ms']:7.0f}{f['warm_ms']:9.0f}"
            f"{f['warm_cpu_ms']:7.0f}{f['warm_shared_ms']:10.0f}{f['warm_shared_cpu_ms']:7.0f}"
            f"{f['original_fit_ms']:17.0f}{f['original_fit_cpu_ms']:7.0f}"
            f"{it['cold']:>20}/{it['warm']}"
        )
    summary = {
        name: round(statistics.median(per_sku[s][name] for s in skus), 1)
        for name in (
            "cold_ms",
            "cold_cpu_ms",
            "cold_serial_ms",
            "cold_serial_cpu_ms",
            "warm_ms",
            "warm_cpu_ms",
            "warm_shared_ms",
            "warm_shared_cpu_ms",
            "original_fit_ms",
            "original_fit_cpu_ms",
        )
    }
    load = os.getloadavg()
    print(
        f"median of SKUs: cold {summary['cold_ms']:.0f} ms wall / {summary['cold_cpu_ms']:.0f} "
        f"ms CPU (fits one after the other {summary['cold_serial_ms']:.0f} / "
        f"{summary['cold_serial_cpu_ms']:.0f}), warm {summary['warm_ms']:.0f} / "
        f"{summary['warm_cpu_ms']:.0f}, warm with a "
        f"shared matrix {summary['warm_shared_ms']:.0f} / {summary['warm_shared_cpu_ms']:.0f}, "
        f"the original's "
        f"single fit {summary['original_fit_ms']:.0f} / {summary['original_fit_cpu_ms']:.0f} "
        f"(target < {TARGET_MS:.0f} ms); load average {load_before[0]:.1f} → {load[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    write_result(
        args.name,
        {
            "protocol": {"profile": args.profile, "repeats": args.repeats, "horizon_days": HORIZON},
            "load_average_at_start": load_before,
            "summary": summary,
            "per_sku": per_sku,
            "elapsed_s": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
