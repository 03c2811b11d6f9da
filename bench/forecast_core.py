"""Forecasting benchmark on the Kiel bakery data (``make bench``).

    .venv/bin/python -m bench.forecast_core [--repeats 3] [--windows 6] [--profiles default,legacy]

Seeds the embedded PostgreSQL (``.state/postgres``, or ``DATABASE_URL``), then for each
options profile (the improved ``default`` and the original ``legacy`` settings):

1. per SKU: fit on all data and a 28-day predict with uncertainty sampling, timed (median of
   ``--repeats``), and the hold-out backtest of training (last 28 days): MASE, WAPE, 80 %
   interval coverage, seasonal-naive MASE;
2. the rolling-origin backtest: ``--windows`` windows of 28 days, 56 days apart, the latest
   ending on the last day of data; mean MASE over BRD, RLL, CRS, CNF, CKE, SEA-001 on its own.

Prints tables and writes ``bench/results/forecast_core.json``. Timings depend on the load of
the machine: the load average is recorded next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "layers" / "common" / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))

FULL_HISTORY = ["BRD-001", "RLL-001", "CRS-001", "CNF-001", "CKE-001"]
SEASONAL = "SEA-001"
HORIZON = 28
TARGET_MS = 250.0
TARGET_MASE = 0.72
RESULTS = ROOT / "bench" / "results" / "forecast_core.json"


def _timed_fit_predict(frame, events, options, sku, repeats, work_dir) -> dict[str, float]:
    """Median wall and CPU milliseconds of a fit on all data and of a 28-day predict."""
    from siprems.forecasting.predict import future_frame, predict_horizon
    from siprems.forecasting.train import cpu_seconds, fit

    runs: dict[str, list[float]] = {
        "fit_ms": [],
        "fit_cpu_ms": [],
        "predict_ms": [],
        "predict_cpu_ms": [],
    }
    for _ in range(repeats):
        trained = fit(frame, events, options, sku, work_dir)
        runs["fit_ms"].append(trained.fit_ms)
        runs["fit_cpu_ms"].append(trained.extra["fit_cpu_ms"])
        wall, cpu = time.perf_counter(), cpu_seconds()
        predict_horizon(trained, future_frame(trained, HORIZON))
        runs["predict_ms"].append((time.perf_counter() - wall) * 1000)
        runs["predict_cpu_ms"].append((cpu_seconds() - cpu) * 1000)
    return {name: round(statistics.median(values), 1) for name, values in runs.items()}


def _add_one_step_naive(rolling: dict[str, Any], observed, horizon: int = HORIZON) -> None:
    """Score the one-step seasonal naive (actuals inside the window; the baseline of the
    reference figures quoted for this backtest) on each scored window, with the window's own
    MASE scale."""
    import numpy as np
    import pandas as pd
    from siprems.forecasting import metrics

    series = observed.set_index("ds")["y"]
    values = []
    for window in rolling["windows"]:
        if "model" not in window:
            continue
        cutoff = pd.Timestamp(window["cutoff"])
        end = cutoff + pd.Timedelta(days=horizon)
        test = series[(series.index > cutoff) & (series.index <= end)]
        scale = metrics.seasonal_naive_scale(series[series.index <= cutoff])
        naive = metrics.one_step_seasonal_naive(series, test.index)
        ok = ~np.isnan(naive)
        window["seasonal_naive_one_step"] = (
            metrics.score(test.to_numpy()[ok], naive[ok], scale) if ok.any() else None
        )
        if (window["seasonal_naive_one_step"] or {}).get("mase") is not None:
            values.append(window["seasonal_naive_one_step"]["mase"])
    rolling["seasonal_naive_one_step_mean"] = {
        "mase": round(float(np.mean(values)), 4) if values else None
    }


def run_profile(name, options, sales, skus, args, work_dir) -> dict[str, Any]:
    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.preprocess import sales_frame
    from siprems.forecasting.train import holdout_backtest, rolling_origin_backtest

    events = sales.prediction_events()
    per_sku: dict[str, Any] = {}
    print(f"\n== {name} (config {options.config_hash()}) ==")
    print(
        f"{'sku':9s}{'fit ms':>8s}{'(cpu)':>7s}{'pred ms':>8s}{'(cpu)':>7s}"
        f"{'MASE':>7s}{'WAPE':>7s}{'cov80':>7s}"
        f"{'naive':>7s}  | rolling: {'MASE':>6s}{'naive':>7s}{'1-step':>7s}{'WAPE':>7s}"
        f"{'cov80':>7s}"
    )
    for sku in skus:
        daily = sales.daily_sales(sku)
        frame = sales_frame(daily, options)
        observed = sales_frame(daily, ForecastOptions(missing_days="skip"))
        timing = _timed_fit_predict(frame, events, options, sku, args.repeats, work_dir)
        holdout = holdout_backtest(frame, observed, events, options, sku, HORIZON, work_dir)
        rolling = rolling_origin_backtest(
            frame, observed, events, options, sku, HORIZON, args.windows, 56, work_dir
        )
        _add_one_step_naive(rolling, observed)
        validation = None
        if args.validation_end:
            validation = rolling_origin_backtest(
                frame,
                observed,
                events,
                options,
                sku,
                HORIZON,
                args.windows,
                56,
                work_dir,
                last_day=args.validation_end,
            )
            _add_one_step_naive(validation, observed)
        m, n = holdout.get("model") or {}, holdout.get("seasonal_naive") or {}
        r, rn = rolling["mean"], rolling["seasonal_naive_mean"]
        print(
            f"{sku:9s}{timing['fit_ms']:8.0f}{timing['fit_cpu_ms']:7.0f}"
            f"{timing['predict_ms']:8.0f}{timing['predict_cpu_ms']:7.0f}{_f(m.get('mase'))}{_f(m.get('wape'))}"
            f"{_f(m.get('coverage_80'), 2)}{_f(n.get('mase'))}  |          "
            f"{_f(r['mase'], w=6)}{_f(rn['mase'])}"
            f"{_f(rolling['seasonal_naive_one_step_mean']['mase'])}"
            f"{_f(r['wape'])}{_f(r['coverage_80'], 2)}"
            + (
                f"  | validation: {_f(validation['mean']['mase'], w=6)}"
                f"{_f(validation['seasonal_naive_mean']['mase'])}"
                if validation
                else ""
            )
        )
        per_sku[sku] = {
            "timing": timing,
            "holdout": holdout,
            "rolling": rolling,
            "validation": validation,
        }
    totals = [per_sku[s]["timing"]["fit_ms"] + per_sku[s]["timing"]["predict_ms"] for s in per_sku]
    cpu_totals = [
        per_sku[s]["timing"]["fit_cpu_ms"] + per_sku[s]["timing"]["predict_cpu_ms"] for s in per_sku
    ]
    five = _five(per_sku, "rolling", "mean")
    summary = {
        "median_fit_plus_predict_ms": round(statistics.median(totals), 1),
        "median_fit_plus_predict_cpu_ms": round(statistics.median(cpu_totals), 1),
        "rolling_mean_mase_five": _mean(five),
        # the multi-step seasonal naive: the baseline the service reports
        "rolling_naive_mean_mase_five": _mean(_five(per_sku, "rolling", "seasonal_naive_mean")),
        "below_naive_on_each_of_five": _below(per_sku, "seasonal_naive_mean"),
        # the one-step seasonal naive: the baseline of the quoted reference figures
        "rolling_naive_one_step_mean_mase_five": _mean(
            _five(per_sku, "rolling", "seasonal_naive_one_step_mean")
        ),
        "below_one_step_naive_on_each_of_five": _below(per_sku, "seasonal_naive_one_step_mean"),
        "validation_mean_mase_five": _mean(_five(per_sku, "validation", "mean")),
        "validation_naive_mean_mase_five": _mean(
            _five(per_sku, "validation", "seasonal_naive_mean")
        ),
        "validation_naive_one_step_mean_mase_five": _mean(
            _five(per_sku, "validation", "seasonal_naive_one_step_mean")
        ),
        "rolling_mase_seasonal": (per_sku.get(SEASONAL) or {})
        .get("rolling", {})
        .get("mean", {})
        .get("mase"),
    }
    print(
        f"median fit + 28-day predict: {summary['median_fit_plus_predict_ms']:.0f} ms wall, "
        f"{summary['median_fit_plus_predict_cpu_ms']:.0f} ms CPU (target < {TARGET_MS:.0f} ms; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"rolling-origin mean MASE over {', '.join(s[:3] for s in FULL_HISTORY)}: "
        f"{_f(summary['rolling_mean_mase_five'], w=0)} (target <= {TARGET_MASE}); "
        f"{SEASONAL}: {_f(summary['rolling_mase_seasonal'], w=0)}\n"
        f"  seasonal naive, multi-step (the service's baseline): "
        f"{_f(summary['rolling_naive_mean_mase_five'], w=0)}, "
        f"below it on each: {summary['below_naive_on_each_of_five']}\n"
        f"  seasonal naive, one-step (actuals inside the window; the reference figures'): "
        f"{_f(summary['rolling_naive_one_step_mean_mase_five'], w=0)}, "
        f"below it on each: {summary['below_one_step_naive_on_each_of_five']}"
    )
    if summary["validation_mean_mase_five"] is not None:
        print(
            f"validation year (windows ending {args.validation_end:%Y-%m-%d}, not used to choose "
            f"the options): mean MASE {_f(summary['validation_mean_mase_five'], w=0)} "
            f"(seasonal naive multi-step {_f(summary['validation_naive_mean_mase_five'], w=0)}, "
            f"one-step {_f(summary['validation_naive_one_step_mean_mase_five'], w=0)})"
        )
    return {
        "options": options.to_dict(),
        "config_hash": options.config_hash(),
        "summary": summary,
        "per_sku": per_sku,
    }


def _five(per_sku: dict[str, Any], period: str, mean: str) -> list[float]:
    """MASE means of one period (rolling | validation) and source over the five products."""
    return [
        per_sku[s][period][mean]["mase"]
        for s in FULL_HISTORY
        if s in per_sku and per_sku[s][period] and per_sku[s][period][mean]["mase"] is not None
    ]


def _mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 4) if values else None


def _below(per_sku: dict[str, Any], baseline: str) -> bool | None:
    """The model's rolling MASE below the baseline's on each of the five (None: not all run)."""
    if not all(s in per_sku for s in FULL_HISTORY):
        return None
    return all(
        per_sku[s]["rolling"]["mean"]["mase"] < per_sku[s]["rolling"][baseline]["mase"]
        for s in FULL_HISTORY
    )


def _f(value, digits=3, w=7) -> str:
    text = "n/a" if value is None else f"{value:.{digits}f}"
    return f"{text:>{w}s}" if w else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.forecast_core", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per SKU (median)")
    parser.add_argument("--windows", type=int, default=6, help="rolling-origin windows")
    parser.add_argument("--profiles", default="default,legacy")
    parser.add_argument(
        "--validation-end",
        type=lambda text: datetime.fromisoformat(text) if text else None,
        default=datetime(2017, 7, 31),
        help="also score windows ending on this day (a year the options were not chosen on); "
        "'' to skip",
    )
    parser.add_argument("--skus", default=None, help="comma-separated (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".state" / "matplotlib"))

    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.train import fit  # noqa: F401  (import Prophet before timing)

    from scripts.demo import kiel_sales

    work_dir = ROOT / ".state" / "work"
    started = time.perf_counter()
    with kiel_sales() as sales:
        skus = args.skus.split(",") if args.skus else sales.list_skus()
        profiles = {
            name: run_profile(name, ForecastOptions.named(name), sales, skus, args, work_dir)
            for name in args.profiles.split(",")
        }
    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "protocol": {
            "horizon_days": HORIZON,
            "rolling_windows": args.windows,
            "rolling_step_days": 56,
            "timing_repeats": args.repeats,
            "mase_scale": "in-sample seasonal naive, m=7 calendar days",
            "seasonal_naive": "multi-step: the last observed same weekday before the window",
            "seasonal_naive_one_step": "y[t-7] from actuals, inside the window too",
            "scored_days": "days with sales (as stored)",
            "validation_end": (
                args.validation_end.date().isoformat() if args.validation_end else None
            ),
        },
        "profiles": profiles,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"\nwritten {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
        f" ({result['elapsed_s']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
