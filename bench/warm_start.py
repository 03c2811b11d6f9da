"""Warm-starting the nightly fit from the previous night's model: speed and accuracy.

    .venv/bin/python -m bench.warm_start [--windows 6] [--nights 7] [--profile default]

On the rolling-origin backtest of ``make bench`` (windows of 28 days, 56 days apart, the
latest ending on the last day of data), for each Kiel product and window cutoff c:

- **cold**: the fit on the days up to c from Prophet's usual initial values (what training
  does now);
- **warm**: the nightly chain that ends in the fit of c: a cold fit ``--nights`` days
  before c, then one fit per night, each started from the night before's parameters
  (carried over to the new window's scales, ``train.warm_start``). A chain longer than one
  night shows whether warm starts drift away from the cold fit night after night.

Both fits of c are scored on the 28 days after c (MASE, as the backtest). Prints, per
product, the optimiser's iterations and the fit's CPU time, cold and warm, and the mean
MASE of each; writes ``bench/results/warm_start.json``. The decision rule:
warm starts become the default only if the mean MASE over BRD, RLL, CRS, CNF, CKE stays
within 2 % of the cold fits'.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "layers" / "common" / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))

from bench.forecast_core import FULL_HISTORY, HORIZON  # noqa: E402
from bench.perf_common import write_result  # noqa: E402

STEP_DAYS = 56
MASE_TOLERANCE = 0.02


def run_sku(sku, sales, events, options, args, work_dir) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    from siprems.errors import InsufficientDataError
    from siprems.forecasting.events import holiday_frame
    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.preprocess import sales_frame
    from siprems.forecasting.train import (
        FeatureMatrix,
        FitState,
        evaluate_window,
        fit,
        kernel_of,
        training_start,
    )

    daily = sales.daily_sales(sku)
    frame = sales_frame(daily, options)
    observed = sales_frame(daily, ForecastOptions(missing_days="skip"))
    last = observed["ds"].max()
    windows = []
    for k in range(args.windows):
        cutoff = last - pd.Timedelta(days=HORIZON + k * STEP_DAYS)
        if observed[(observed["ds"] > cutoff)].empty or frame[frame["ds"] <= cutoff].empty:
            continue
        first_night = cutoff - pd.Timedelta(days=args.nights)
        first = training_start(frame[frame["ds"] <= first_night], options)
        end = cutoff + pd.Timedelta(days=HORIZON)
        holidays = holiday_frame(events, options, first.date(), end.date())
        features = FeatureMatrix.build(options, holidays, first, end)
        # the window's fit and its scores, cold or from a fit state
        window = functools.partial(
            evaluate_window, observed, events, options, sku, cutoff, HORIZON, frame, work_dir
        )
        try:
            cold_scores, cold = window(features=features)
        except InsufficientDataError:
            continue  # no sales after the cutoff (SEA-001 out of season)
        previous = fit(
            frame[frame["ds"] <= first_night], events, options, sku, work_dir, features=features
        )
        chain_cpu, chain_iterations = [], []
        for night in range(args.nights - 1, 0, -1):
            day = cutoff - pd.Timedelta(days=night)
            previous = fit(
                frame[frame["ds"] <= day],
                events,
                options,
                sku,
                work_dir,
                features=features,
                init=FitState.of(previous),
            )
            chain_cpu.append(previous.extra["fit_cpu_ms"])
            chain_iterations.append(previous.extra["iterations"])
        warm_scores, warm = window(features=features, init=FitState.of(previous))
        chain_cpu.append(warm.extra["fit_cpu_ms"])
        chain_iterations.append(warm.extra["iterations"])
        days = pd.date_range(cutoff + pd.Timedelta(days=1), periods=HORIZON).to_numpy()
        moved = np.abs(kernel_of(warm).point(days) - kernel_of(cold).point(days)).max()
        windows.append(
            {
                "cutoff": cutoff.date().isoformat(),
                "cold": _fit_figures(cold, cold_scores),
                "warm": _fit_figures(warm, warm_scores),
                "chain_fit_cpu_ms": [round(c, 1) for c in chain_cpu],
                "chain_iterations": chain_iterations,
                "max_point_difference_log_scale": round(float(moved), 5),
            }
        )
    summary = {
        side: {
            "iterations_median": statistics.median(w[side]["iterations"] for w in windows),
            "fit_cpu_ms_median": round(
                statistics.median(w[side]["fit_cpu_ms"] for w in windows), 1
            ),
            "mean_mase": round(statistics.mean(w[side]["mase"] for w in windows), 4),
        }
        for side in ("cold", "warm")
    }
    return {"windows": windows, "summary": summary}


def _fit_figures(trained, scores) -> dict[str, Any]:
    return {
        "iterations": trained.extra["iterations"],
        "fit_ms": round(trained.fit_ms, 1),
        "fit_cpu_ms": round(trained.extra["fit_cpu_ms"], 1),
        "mase": scores["model"]["mase"],
        "wape": scores["model"]["wape"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.warm_start", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--nights", type=int, default=7, help="warm-started fits per chain")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--skus", default=None, help="comma-separated (default: all)")
    parser.add_argument("--name", default="warm_start", help="bench/results/NAME.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".state" / "matplotlib"))

    from siprems.forecasting.options import ForecastOptions

    from scripts.demo import kiel_sales

    options = ForecastOptions.named(args.profile)
    work_dir = ROOT / ".state" / "work"
    started = time.perf_counter()
    per_sku: dict[str, Any] = {}
    print(f"warm starts: chains of {args.nights} nightly fits, {args.profile} options")
    print(
        f"{'sku':9s}{'iter cold':>10s}{'warm':>6s}{'cpu ms cold':>13s}{'warm':>6s}"
        f"{'MASE cold':>11s}{'warm':>7s}{'max Δ log':>11s}"
    )
    with kiel_sales(quiet=True) as sales:
        events = sales.prediction_events()
        skus = args.skus.split(",") if args.skus else sales.list_skus()
        for sku in skus:
            result = run_sku(sku, sales, events, options, args, work_dir)
            per_sku[sku] = result
            s = result["summary"]
            moved = max(w["max_point_difference_log_scale"] for w in result["windows"])
            print(
                f"{sku:9s}{s['cold']['iterations_median']:>10}{s['warm']['iterations_median']:>6}"
                f"{s['cold']['fit_cpu_ms_median']:>13.0f}{s['warm']['fit_cpu_ms_median']:>6.0f}"
                f"{s['cold']['mean_mase']:>11.3f}{s['warm']['mean_mase']:>7.3f}{moved:>11.4f}"
            )
    five = [s for s in FULL_HISTORY if s in per_sku]
    cold_mase = statistics.mean(per_sku[s]["summary"]["cold"]["mean_mase"] for s in five)
    warm_mase = statistics.mean(per_sku[s]["summary"]["warm"]["mean_mase"] for s in five)
    cold_cpu = [w["cold"]["fit_cpu_ms"] for s in five for w in per_sku[s]["windows"]]
    warm_cpu = [c for s in five for w in per_sku[s]["windows"] for c in w["chain_fit_cpu_ms"]]
    cold_it = [w["cold"]["iterations"] for s in five for w in per_sku[s]["windows"]]
    warm_it = [i for s in five for w in per_sku[s]["windows"] for i in w["chain_iterations"]]
    change = warm_mase / cold_mase - 1
    summary = {
        "mean_mase_five": {"cold": round(cold_mase, 4), "warm": round(warm_mase, 4)},
        "mase_change": round(change, 4),
        "within_tolerance": abs(change) <= MASE_TOLERANCE,
        "fit_cpu_ms_median_five": {
            "cold": statistics.median(cold_cpu),
            "warm": statistics.median(warm_cpu),
        },
        "iterations_median_five": {
            "cold": statistics.median(cold_it),
            "warm": statistics.median(warm_it),
        },
        "cpu_speedup": round(statistics.median(cold_cpu) / statistics.median(warm_cpu), 2),
    }
    print(
        f"five products: median fit CPU {statistics.median(cold_cpu):.0f} ms cold "
        f"({len(cold_cpu)} fits), {statistics.median(warm_cpu):.0f} ms warm ({len(warm_cpu)} "
        f"fits; {summary['cpu_speedup']}×), median iterations {statistics.median(cold_it)} → "
        f"{statistics.median(warm_it)}; mean MASE {cold_mase:.4f} → {warm_mase:.4f} "
        f"({change:+.2%}; tolerance ±{MASE_TOLERANCE:.0%}); load average {os.getloadavg()[0]:.1f}"
    )
    write_result(
        args.name,
        {
            "protocol": {
                "profile": args.profile,
                "nights": args.nights,
                "windows": args.windows,
                "horizon_days": HORIZON,
                "step_days": STEP_DAYS,
            },
            "summary": summary,
            "per_sku": per_sku,
            "elapsed_s": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
