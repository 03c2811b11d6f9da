"""Forecast accuracy metrics and the seasonal-naive baseline.

Ratios (MAPE, sMAPE, WAPE, coverage) are fractions, not percent. Days with zero actual
demand are left out of MAPE (it is undefined there); the other metrics use every day.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

SEASON = 7  # one week: the seasonal-naive baseline repeats the same weekday


def _pair(actual: Iterable[float], forecast: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(list(actual) if not isinstance(actual, np.ndarray) else actual, dtype=float)
    f = np.asarray(
        list(forecast) if not isinstance(forecast, np.ndarray) else forecast, dtype=float
    )
    if a.shape != f.shape:
        raise ValueError(f"actual and forecast differ in length: {a.shape} vs {f.shape}")
    if a.size == 0:
        raise ValueError("no values to score")
    return a, f


def mae(actual: Sequence[float], forecast: Sequence[float]) -> float:
    a, f = _pair(actual, forecast)
    return float(np.mean(np.abs(a - f)))


def mape(actual: Sequence[float], forecast: Sequence[float]) -> float:
    a, f = _pair(actual, forecast)
    nonzero = a != 0
    if not nonzero.any():
        return math.nan
    return float(np.mean(np.abs(a[nonzero] - f[nonzero]) / np.abs(a[nonzero])))


def smape(actual: Sequence[float], forecast: Sequence[float]) -> float:
    """Symmetric MAPE in [0, 2]: mean of 2|a−f| / (|a|+|f|), 0 where both are 0."""
    a, f = _pair(actual, forecast)
    denominator = np.abs(a) + np.abs(f)
    terms = np.divide(2 * np.abs(a - f), denominator, out=np.zeros_like(a), where=denominator > 0)
    return float(np.mean(terms))


def wape(actual: Sequence[float], forecast: Sequence[float]) -> float:
    """Σ|a−f| / Σ|a| (weighted absolute percentage error)."""
    a, f = _pair(actual, forecast)
    total = np.sum(np.abs(a))
    return float(np.sum(np.abs(a - f)) / total) if total > 0 else math.nan


def coverage(actual: Sequence[float], lower: Sequence[float], upper: Sequence[float]) -> float:
    """Share of actual values inside [lower, upper]."""
    a, lo = _pair(actual, lower)
    _, hi = _pair(actual, upper)
    return float(np.mean((a >= lo) & (a <= hi)))


def seasonal_naive_scale(history: pd.Series, season: int = SEASON) -> float:
    """In-sample MAE of the seasonal-naive forecast: mean |y(d) − y(d − season days)|.

    ``history`` is indexed by date; pairs whose lagged day is absent are skipped (the lag is
    in calendar days, so a missing day never shifts the weekday).
    """
    days, values = _day_values(history)
    # the position of each day's lagged day, where that day is in the series
    at = np.searchsorted(days, days - season)
    found = (at < len(days)) & (days[np.minimum(at, len(days) - 1)] == days - season)
    pairs = values[found], values[at[found]]
    usable = ~np.isnan(pairs[0]) & ~np.isnan(pairs[1])
    if not usable.any():
        return math.nan
    return float(np.mean(np.abs(pairs[0][usable] - pairs[1][usable])))


def mase(actual: Sequence[float], forecast: Sequence[float], scale: float) -> float:
    """Mean absolute scaled error: MAE divided by the in-sample seasonal-naive MAE."""
    if not scale or math.isnan(scale):
        return math.nan
    return mae(actual, forecast) / scale


def seasonal_naive_forecast(
    history: pd.Series, days: Iterable[pd.Timestamp], season: int = SEASON
) -> np.ndarray:
    """For each future day, the latest observed value on a day ``k·season`` days earlier.

    With a full calendar this is the textbook ŷ(T+h) = y(T+h − season·⌈h/season⌉); a missing
    day falls back one more season.
    """
    known, values = _day_values(history)
    by_day = dict(zip(known.tolist(), values.tolist(), strict=True))
    first, last = (int(known[0]), int(known[-1])) if len(known) else (0, -1)
    out = []
    for day in _day_numbers(days):
        candidate = day - season * max(1, math.ceil((day - last) / season))
        while candidate not in by_day and candidate >= first:
            candidate -= season
        out.append(by_day.get(candidate, math.nan))
    return np.asarray(out, dtype=float)


def one_step_seasonal_naive(
    series: pd.Series, days: Iterable[pd.Timestamp], season: int = SEASON
) -> np.ndarray:
    """For each day, the latest observed value ``k·season`` days earlier (k ≥ 1), taken from
    ``series``, which may include the days being forecast.

    Inside a forecast window this uses actual values the forecaster would not yet know (day 8
    of a window is forecast from day 1's actual): a one-step-ahead baseline, easier to beat
    than :func:`seasonal_naive_forecast`. It is what the reference figures quoted for the
    backtest call "seasonal naive" (0.933 there; see docs/FORECASTING.md), so the benchmark
    prints it for comparison; the service reports the multi-step one.
    """
    known, values = _day_values(series)
    by_day = dict(zip(known.tolist(), values.tolist(), strict=True))
    first = int(known[0]) if len(known) else 0
    out = []
    for day in _day_numbers(days):
        candidate = day - season
        while candidate not in by_day and candidate >= first:
            candidate -= season
        out.append(by_day.get(candidate, math.nan))
    return np.asarray(out, dtype=float)


def _day_numbers(days: Iterable[Any]) -> list[int]:
    """Days (dates, timestamps or datetime64) as day numbers since 1970-01-01: lookups by
    integer instead of by Timestamp."""
    stamps = pd.DatetimeIndex(pd.to_datetime(list(days) if not hasattr(days, "dtype") else days))
    return stamps.normalize().to_numpy(dtype="datetime64[D]").astype(np.int64).tolist()


def _day_values(history: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A date-indexed series as (day numbers, values), sorted by day; of a day given twice,
    the later value."""
    days = np.asarray(_day_numbers(history.index), dtype=np.int64)
    values = history.to_numpy(dtype=float)
    order = np.argsort(days, kind="stable")
    days, values = days[order], values[order]
    last_of_day = np.append(days[1:] != days[:-1], True) if len(days) else days.astype(bool)
    return days[last_of_day], values[last_of_day]


def score(
    actual: Sequence[float],
    forecast: Sequence[float],
    scale: float,
    lower: Sequence[float] | None = None,
    upper: Sequence[float] | None = None,
) -> dict[str, float | None]:
    """Every metric of one forecast window, JSON-ready (NaN → None)."""
    result: dict[str, float | None] = {
        "mae": mae(actual, forecast),
        "mape": mape(actual, forecast),
        "smape": smape(actual, forecast),
        "mase": mase(actual, forecast, scale),
        "wape": wape(actual, forecast),
    }
    if lower is not None and upper is not None:
        result["coverage_80"] = coverage(actual, lower, upper)
    return {k: (None if v is None or math.isnan(v) else round(v, 6)) for k, v in result.items()}


def legacy_accuracy(mape_value: float | None) -> float | None:
    """The original API's ``accuracy``: 100·(1 − min(MAPE, 1)), here from the hold-out MAPE."""
    if mape_value is None or math.isnan(mape_value):
        return None
    return round(100.0 * (1.0 - min(mape_value, 1.0)), 2)
