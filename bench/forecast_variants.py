"""Forecast variants scored on the backtest and the validation year from one grid of fits.

    .venv/bin/python -m bench.forecast_variants [--processes 2] [--inner 2,3,4] [--only A,B]

The evidence behind docs/FORECASTING.md "Towards 0.72". Every candidate configuration is fitted
on every 28-day cutoff of both periods (the six rolling-origin windows ending 2018-07-31 and
2017-07-31, plus the 28-day windows before each that an inner backtest needs), and from those
fits it scores: each variant on its own; a per-SKU choice among the candidates by an inner
rolling backtest on the training data only (the last n windows before the cutoff, exactly the
fits a nightly retrain would run); geometric-mean ensembles (also over history lengths); a
log-scale blend with last year's same weekday; post-processing of the same fits (the trend held
flat or damped over the horizon, the median of the posterior samples, the level error of the
training's own hold-out window removed). Further variants (``ALONE``, ``RESIDUAL_REFITS``) are
fitted on the scored windows only. Every row also gets its paired difference to ``default`` over
the same windows with a standard error. p50 only. ``--only`` fits just the named variants (and
``default``). Writes ``bench/results/forecast_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "layers" / "common" / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))

from bench.forecast_core import FULL_HISTORY, HORIZON  # noqa: E402

PERIODS = {"backtest": pd.Timestamp("2018-07-31"), "validation": pd.Timestamp("2017-07-31")}
WINDOWS, STEP = 6, 56
# candidates for the per-SKU choice; further variants are scored on their own only
CANDIDATES = {
    "default": {},
    "changepoint_prior_0.01": {"changepoint_prior_scale": 0.01},
    "changepoint_prior_0.2": {"changepoint_prior_scale": 0.2},
    "correction_last_56_days": {"correction_window_days": 56},
}
ALONE = {
    "school_holidays": {"school_holidays": True},
    "changepoints_12": {"n_changepoints": 12},
    "changepoints_50": {"n_changepoints": 50},
    "weekly_prior_0.5": {"weekly_prior_scale": 0.5},
    "outliers_clipped": {"outlier_action": "clip"},
    "outliers_by_weekday": {"outlier_scope": "weekday"},
    "outliers_by_weekday_clipped_3": {
        "outlier_scope": "weekday",
        "outlier_action": "clip",
        "outlier_sigma": 3.0,
    },
    "history_731_days": {"max_history_days": 731},
    "history_1095_days": {"max_history_days": 1095},
    "without_recent_level": {"recent_level_days": None},
    # the neighbours of today's values, re-scored with every later change in place
    **{f"yearly_order_{n}": {"yearly_seasonality": n} for n in (3, 4, 5, 7, 8)},
    **{f"changepoint_range_{r}": {"changepoint_range": r} for r in (0.9, 0.98, 1.0)},
    **{f"recent_level_{n}_days": {"recent_level_days": n} for n in (5, 10)},
    **{f"outliers_beyond_{x}_sigma": {"outlier_sigma": x} for x in (3.0, 4.0)},
    # the weekend's own yearly curve: without it, and its neighbouring orders
    "without_weekend_yearly": {"weekend_yearly_order": None},
    **{f"weekend_yearly_order_{n}": {"weekend_yearly_order": n} for n in (1, 2, 4, 6)},
    # the first round's other way of letting the week change with the season, again
    "summer_winter_weekly_instead": {"weekend_yearly_order": None, "summer_winter_weekly": True},
    "summer_winter_weekly_too": {"summer_winter_weekly": True},
}
# a robust-loss proxy: fit, then refit with the days whose residual (log scale) lies beyond
# this many σ of the residuals dropped ("drop") or pulled to that bound ("clip")
RESIDUAL_REFITS = {
    "residual_outliers_dropped_3": (3.0, "drop"),
    "residual_outliers_clipped_2.5": (2.5, "clip"),
}
ALONE |= {name: {} for name in RESIDUAL_REFITS}
# each weekday's mean residual over the last weeks of training, added with this weight
WEEKDAY_WEEKS, WEEKDAY_WEIGHT = (4, 8, 13), 0.25
RESULTS = ROOT / "bench" / "results" / "forecast_variants.json"

_DATA: dict[str, Any] = {}


def outer_cutoffs(end: pd.Timestamp) -> list[pd.Timestamp]:
    return [end - pd.Timedelta(days=HORIZON + k * STEP) for k in range(WINDOWS)]


def inner_cutoffs(cutoff: pd.Timestamp, n: int) -> list[pd.Timestamp]:
    """The n 28-day windows that end at or before ``cutoff`` (training data only)."""
    return [cutoff - pd.Timedelta(days=HORIZON * j) for j in range(1, n + 1)]


def _init(data: dict[str, Any]) -> None:
    _DATA.update(data)


def _fit_window(task: tuple[str, dict[str, Any], str, pd.Timestamp]) -> tuple[tuple, dict | None]:
    """p50 of one variant on one window, with what MASE needs."""
    from siprems.forecasting import metrics
    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.predict import predict_horizon
    from siprems.forecasting.preprocess import sales_frame
    from siprems.forecasting.train import fit

    name, overrides, sku, cutoff = task
    options = ForecastOptions.default().with_overrides(uncertainty_samples=0, **overrides)
    observed = _DATA["observed"][sku]
    frame = sales_frame(_DATA["daily"][sku], options)
    test = observed[
        (observed["ds"] > cutoff) & (observed["ds"] <= cutoff + pd.Timedelta(days=HORIZON))
    ]
    if test.empty:
        return (name, sku, cutoff), None
    trained = fit(frame[frame["ds"] <= cutoff], _DATA["events"], options, sku)
    if name in RESIDUAL_REFITS:
        trained = _refit_without_residual_outliers(
            trained, frame[frame["ds"] <= cutoff], *RESIDUAL_REFITS[name], sku
        )
    p50 = predict_horizon(trained, test[["ds", "promo"]]).frame["p50"].to_numpy()
    history = observed[observed["ds"] <= cutoff].set_index("ds")["y"]
    return (name, sku, cutoff), {
        "ds": test["ds"].to_numpy(),
        "actual": test["y"].to_numpy(),
        "p50": p50,
        "scale": metrics.seasonal_naive_scale(history),
        "correction_factor": trained.correction_factor,
        **_post_processed(trained, test, observed[observed["ds"] <= cutoff]),
    }


def _refit_without_residual_outliers(
    trained: Any, frame: pd.DataFrame, sigma: float, action: str, sku: str
) -> Any:
    from siprems.forecasting.predict import serving_model_of
    from siprems.forecasting.train import fit

    kernel = serving_model_of(trained).kernel
    days = frame["ds"].to_numpy().astype("datetime64[D]")
    fitted = kernel.point(days, frame["promo"].to_numpy(dtype=float))
    residual = np.log1p(frame["y"].to_numpy()) - fitted
    inside = (days >= np.datetime64(trained.first_day, "D")) & np.isfinite(residual)
    bound = sigma * residual[inside].std()
    outside = inside & (np.abs(residual) > bound)
    if action == "drop":
        frame = frame[~outside]
    else:
        frame = frame.copy()
        pulled = np.expm1(fitted + np.clip(residual, -bound, bound))
        frame["y"] = np.where(outside, pulled, frame["y"].to_numpy())
    return fit(frame, _DATA["events"], trained.options, sku)


def _post_processed(
    trained: Any, test: pd.DataFrame, history: pd.DataFrame
) -> dict[str, np.ndarray]:
    """p50 with the trend's slope over the horizon removed (flat) or halved (damped), the
    median of the posterior predictive samples, and p50 with each weekday's recent residual
    added, from the same fit (numpy kernel)."""
    from siprems.forecasting.predict import serving_model_of
    from siprems.forecasting.scale import to_original_scale

    serving = serving_model_of(trained)
    kernel, options, factor = serving.kernel, trained.options, trained.correction_factor
    days = test["ds"].to_numpy().astype("datetime64[D]")
    promo = test["promo"].to_numpy(dtype=float)
    point = kernel.point(days, promo)
    last = np.asarray([np.datetime64(trained.last_day, "D")])
    numbers = np.concatenate([last, days]).astype(np.int64)
    t = kernel._t(numbers)
    trend = kernel._trend(t, kernel.deltas, kernel.changepoints_t) * kernel.y_scale
    rise = trend[1:] - trend[0]
    draws = kernel.samples(days, promo, n=1000, seed=0)
    return {
        f"p50_weekday_recent_{weeks}w": to_original_scale(
            point + WEEKDAY_WEIGHT * _weekday_residual(kernel, history, days, weeks), options
        )
        * factor
        for weeks in WEEKDAY_WEEKS
    } | {
        "p50_flat_trend": to_original_scale(point - rise, options) * factor,
        "p50_half_trend": to_original_scale(point - rise / 2, options) * factor,
        "p50_sample_median": np.median(to_original_scale(draws, options), axis=1) * factor,
    }


def _weekday_residual(
    kernel: Any, history: pd.DataFrame, days: np.ndarray, weeks: int
) -> np.ndarray:
    """For each forecast day: the mean residual (model scale, clipped like the recent level's)
    of its weekday over the last ``weeks`` weeks of training, less the last 7 days' mean (the
    level, which the forecast already carries)."""
    seen = history["ds"].to_numpy().astype("datetime64[D]")
    residual = np.clip(
        np.log1p(history["y"].to_numpy()) - kernel.point(seen, history["promo"].to_numpy(float)),
        -0.5,
        0.5,
    )
    number = seen.astype(np.int64)
    recent = number > number[-1] - 7 * weeks
    level = residual[number > number[-1] - 7].mean()
    by_weekday = {
        weekday: residual[recent & (number % 7 == weekday)].mean() - level for weekday in range(7)
    }
    return np.asarray([by_weekday[d % 7] for d in days.astype(np.int64)])


def _mase(window: dict[str, Any], forecast: np.ndarray | None = None) -> float:
    predicted = window["p50"] if forecast is None else forecast
    return float(np.mean(np.abs(window["actual"] - predicted)) / window["scale"])


def last_year_naive(observed: pd.DataFrame, cutoff: pd.Timestamp, days: np.ndarray) -> np.ndarray:
    """Same weekday 364 days earlier (a week further back over a missing day), times the
    ratio of the last 28 days' level to the same 28 days a year before (log scale)."""
    history = observed[observed["ds"] <= cutoff].set_index("ds")["y"]
    recent = history[history.index > cutoff - pd.Timedelta(days=HORIZON)]
    year_ago = history[
        (history.index > cutoff - pd.Timedelta(days=HORIZON + 364))
        & (history.index <= cutoff - pd.Timedelta(days=364))
    ]
    shift = np.log1p(recent).mean() - np.log1p(year_ago).mean()
    values = []
    for day in pd.to_datetime(days):
        candidate = day - pd.Timedelta(days=364)
        for _ in range(3):
            if candidate in history.index:
                break
            candidate -= pd.Timedelta(days=7)
        values.append(history.get(candidate, np.nan))
    return np.expm1(np.log1p(np.asarray(values, dtype=float)) + shift)


def score(grid: dict, observed: dict[str, pd.DataFrame], inner: list[int]) -> dict[str, Any]:
    """Mean MASE per period and product for every way of turning the grid into a forecast."""
    ways: dict[str, Any] = {}

    def alone(name):
        return lambda sku, cutoff: _mase(grid[(name, sku, cutoff)])

    for name in [*CANDIDATES, *ALONE]:
        ways[name] = alone(name)

    def post_processed(key):
        return lambda sku, cutoff: _mase(
            grid[("default", sku, cutoff)], grid[("default", sku, cutoff)][key]
        )

    ways["default, trend flat over the horizon"] = post_processed("p50_flat_trend")
    ways["default, trend slope halved over the horizon"] = post_processed("p50_half_trend")
    ways["default, median of the posterior samples"] = post_processed("p50_sample_median")
    for weeks in WEEKDAY_WEEKS:
        ways[f"default + {WEEKDAY_WEIGHT} × each weekday's residual of the last {weeks} weeks"] = (
            post_processed(f"p50_weekday_recent_{weeks}w")
        )

    def holdout_bias(weight, n):
        # the level error of the forecasts of the n 28-day windows before the cutoff (the
        # training's own hold-out when n = 1), removed from the next forecast with a weight
        def way(sku, cutoff):
            window = grid[("default", sku, cutoff)]
            errors = np.concatenate(
                [
                    np.log(grid[("default", sku, c)]["actual"] / grid[("default", sku, c)]["p50"])
                    for c in inner_cutoffs(cutoff, n)
                ]
            )
            return _mase(window, window["p50"] * np.exp(weight * np.median(errors)))

        return way

    for weight, n in ((1.0, 1), (0.5, 1), (0.5, 2)):
        ways[f"default, hold-out bias of the last {n} window(s) removed, weight {weight}"] = (
            holdout_bias(weight, n)
        )

    def chosen(candidates, n):
        def way(sku, cutoff):
            def inner_score(name):
                return np.mean([_mase(grid[(name, sku, c)]) for c in inner_cutoffs(cutoff, n)])

            best = min(candidates, key=inner_score)
            return _mase(grid[(best, sku, cutoff)])

        return way

    flexible = ["default", "changepoint_prior_0.01"]
    for n in inner:
        ways[f"choice default|prior 0.01, last {n} windows"] = chosen(flexible, n)
        ways[f"choice among all four, last {n} windows"] = chosen(list(CANDIDATES), n)

    def ensemble(names):
        def way(sku, cutoff):
            logs = [np.log1p(grid[(name, sku, cutoff)]["p50"]) for name in names]
            return _mase(grid[(names[0], sku, cutoff)], np.expm1(np.mean(logs, axis=0)))

        return way

    for name in list(CANDIDATES)[1:]:
        ways[f"geometric mean default+{name}"] = ensemble(["default", name])
    ways["geometric mean of all four"] = ensemble(list(CANDIDATES))
    ways["geometric mean of 3 and 4 years of history"] = ensemble(["default", "history_1095_days"])
    ways["geometric mean of 2, 3 and 4 years of history"] = ensemble(
        ["default", "history_1095_days", "history_731_days"]
    )

    def blend(weight):
        def way(sku, cutoff):
            window = grid[("default", sku, cutoff)]
            naive = last_year_naive(observed[sku], cutoff, window["ds"])
            naive = np.where(np.isnan(naive), window["p50"], naive)
            mixed = (1 - weight) * np.log1p(window["p50"]) + weight * np.log1p(naive)
            return _mase(window, np.expm1(mixed))

        return way

    for weight in (0.1, 0.2, 0.3):
        ways[f"log blend with last year's same weekday, weight {weight}"] = blend(weight)

    def oracle(sku, cutoff):
        # not a forecast: each window's own median log bias removed, to show how much of the
        # error a perfectly known level would remove
        window = grid[("default", sku, cutoff)]
        bias = np.median(np.log(window["actual"]) - np.log(window["p50"]))
        return _mase(window, window["p50"] * np.exp(bias))

    ways["oracle: default with each window's level known (not a forecast)"] = oracle

    def oracle_by_weekday(sku, cutoff):
        # not a forecast either: each weekday's median log bias in the window removed (about
        # four days a weekday), the bound of any correction by weekday
        window = grid[("default", sku, cutoff)]
        error = np.log(window["actual"]) - np.log(window["p50"])
        weekday = window["ds"].astype("datetime64[D]").astype(np.int64) % 7
        bias = np.asarray([np.median(error[weekday == day]) for day in weekday])
        return _mase(window, window["p50"] * np.exp(bias))

    ways["oracle: default with each weekday's level in the window known (not a forecast)"] = (
        oracle_by_weekday
    )

    table: dict[str, Any] = {}
    windows: dict[str, np.ndarray] = {}  # label -> MASE of every scored window, both periods
    for label, way in ways.items():
        try:
            scores = {
                (period, s): [way(s, c) for c in outer_cutoffs(end)]
                for period, end in PERIODS.items()
                for s in FULL_HISTORY
            }
        except KeyError:  # a variant left out of this run (--only)
            continue
        windows[label] = np.asarray([v for values in scores.values() for v in values])
        table[label] = {}
        for period in PERIODS:
            per = {s: float(np.mean(scores[(period, s)])) for s in FULL_HISTORY}
            table[label][period] = {"mean": round(float(np.mean(list(per.values()))), 4)} | {
                s: round(v, 4) for s, v in per.items()
            }
    for label in table:
        table[label]["paired_vs_default"] = paired_difference(windows[label], windows["default"])
    return table


def paired_difference(variant: np.ndarray, default: np.ndarray) -> dict[str, float]:
    """Mean MASE difference to ``default`` over the same windows (both periods, every
    product), its standard error, and the share of windows where the variant is better: a
    difference within about two standard errors is noise."""
    diff = variant - default
    spread = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return {
        "mean": round(float(np.mean(diff)), 4),
        "standard_error": round(spread, 4),
        "better_share": round(float(np.mean(diff < 0)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.forecast_variants", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--inner", default="2,3,4", help="inner windows for the per-SKU choice")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only", default="", help="fit only these variants (comma-separated names; default all)"
    )
    args = parser.parse_args(argv)
    inner = [int(n) for n in args.inner.split(",")]
    only = {n for n in args.only.split(",") if n}
    candidates = {n: o for n, o in CANDIDATES.items() if not only or n in only | {"default"}}
    alone = {n: o for n, o in ALONE.items() if not only or n in only}
    os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".state" / "matplotlib"))

    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.preprocess import sales_frame

    from scripts.demo import kiel_sales

    with kiel_sales(quiet=True) as sales:
        daily = {sku: sales.daily_sales(sku) for sku in FULL_HISTORY}
        events = list(sales.prediction_events())
    observed = {s: sales_frame(d, ForecastOptions(missing_days="skip")) for s, d in daily.items()}
    outer = sorted({c for end in PERIODS.values() for c in outer_cutoffs(end)})
    every = sorted({ci for c in outer for ci in [c, *inner_cutoffs(c, max(inner))]})
    tasks = [(n, o, s, c) for n, o in candidates.items() for s in FULL_HISTORY for c in every]
    tasks += [(n, o, s, c) for n, o in alone.items() for s in FULL_HISTORY for c in outer]
    started = time.perf_counter()
    data = {"daily": daily, "observed": observed, "events": events}
    with ProcessPoolExecutor(args.processes, initializer=_init, initargs=(data,)) as pool:
        grid = dict(pool.map(_fit_window, tasks, chunksize=2))
    elapsed = time.perf_counter() - started
    table = score(grid, observed, inner)

    print(f"{len(tasks)} fits in {elapsed:.0f} s (load average {os.getloadavg()[0]:.1f})")
    print(
        f"{'mean MASE of the five':62s}{'backtest':>9s}{'validation':>11s}"
        f"{'Δ default ± se':>17s}   per product"
    )
    for label, periods in table.items():
        b, v, d = periods["backtest"], periods["validation"], periods["paired_vs_default"]
        print(
            f"{label:62s}{b['mean']:9.3f}{v['mean']:11.3f}"
            f"{d['mean']:+10.4f} ± {d['standard_error']:.4f}   "
            + " ".join(f"{b[s]:.3f}" for s in FULL_HISTORY)
            + " | "
            + " ".join(f"{v[s]:.3f}" for s in FULL_HISTORY)
        )
    factors = [w["correction_factor"] for (n, _, _), w in grid.items() if n == "default" and w]
    print(f"correction factor of default: {min(factors):.3f}..{max(factors):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "fits": len(tasks),
                "elapsed_s": round(elapsed, 1),
                "load_average_at_end": os.getloadavg(),
                "candidates": candidates,
                "alone": alone,
                "inner_windows": inner,
                "default_correction_factor_range": [min(factors), max(factors)],
                "mean_mase": table,
            },
            indent=1,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
