"""Prediction: quantiles over the horizon, fitted history, and the API's ``chartData``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from siprems.forecasting.events import holiday_names
from siprems.forecasting.preprocess import to_original_scale
from siprems.forecasting.train import (
    TrainedModel,
    add_conditions,
    holidays_near,
    point_forecast,
)

# Uncertainty sampling draws from NumPy's global generator; a fixed seed makes the same
# model give the same answer to the same request (and a stored model forecast identically).
SAMPLING_SEED = 20130701


@dataclass
class HorizonForecast:
    """Daily quantiles on the original scale, plus the sampled horizon totals (for restock)."""

    frame: pd.DataFrame  # ds, p50, p10, p90, lower, upper
    totals: np.ndarray  # one total demand over the horizon per sample path


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def future_frame(trained: TrainedModel, days: int) -> pd.DataFrame:
    """The ``days`` calendar days after the model's last training day (no promotion)."""
    start = pd.Timestamp(trained.last_day) + pd.Timedelta(days=1)
    return pd.DataFrame({"ds": pd.date_range(start, periods=days, freq="D"), "promo": 0.0})


def predict_horizon(trained: TrainedModel, frame: pd.DataFrame) -> HorizonForecast:
    """p50 = the corrected point forecast; p10/p90 and the ``interval_width`` bounds from
    Prophet's posterior predictive samples (spread scaled by ``interval_scale``)."""
    options = trained.options
    factor = trained.correction_factor
    point = point_forecast(trained, frame)
    p50 = to_original_scale(point, options) * factor
    width = options.interval_width
    if options.uncertainty_samples > 0:
        with _seeded(SAMPLING_SEED), holidays_near(trained.model, frame["ds"]):
            draws = trained.model.predictive_samples(
                add_conditions(frame[[c for c in ("ds", "promo") if c in frame]], options)
            )["yhat"]
        if options.interval_scale != 1.0:
            draws = point[:, None] + options.interval_scale * (draws - point[:, None])
        paths = to_original_scale(draws, options) * factor
        q = np.quantile(paths, [0.1, 0.9, (1 - width) / 2, (1 + width) / 2], axis=1)
        p10, p90, lower, upper = q
        totals = paths.sum(axis=0)
    else:
        p10 = p90 = lower = upper = p50
        totals = np.asarray([p50.sum()])
    out = pd.DataFrame(
        {
            "ds": frame["ds"].to_numpy(),
            "p50": p50,
            "p10": np.minimum(p10, p50),
            "p90": np.maximum(p90, p50),
            "lower": np.minimum(lower, p50),
            "upper": np.maximum(upper, p50),
        }
    )
    return HorizonForecast(frame=out, totals=totals)


def fitted_history(trained: TrainedModel, days: pd.Series) -> np.ndarray:
    """The model's fitted demand on past days, without uncertainty sampling (cheap)."""
    if len(days) == 0:
        return np.asarray([], dtype=float)
    frame = pd.DataFrame({"ds": pd.to_datetime(days).to_numpy(), "promo": 0.0})
    return (
        to_original_scale(point_forecast(trained, frame), trained.options)
        * trained.correction_factor
    )


def _round(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return round(float(value), 2)


def chart_data(
    trained: TrainedModel,
    horizon: HorizonForecast,
    actual: pd.DataFrame,
    history_days: int | None,
) -> list[dict[str, Any]]:
    """The original ``chartData`` rows: history (actual + fitted, no interval) then horizon.

    ``history_days=None`` returns every day of history; otherwise the last ``history_days``
    days before the horizon (0 = horizon only).
    """
    names = holiday_names(trained.model.holidays, trained.options)
    first_future = pd.Timestamp(horizon.frame["ds"].iloc[0]) if len(horizon.frame) else None
    past = actual
    if first_future is not None:
        past = actual[actual["ds"] < first_future]
    if history_days is not None:
        if history_days <= 0:
            past = past.iloc[0:0]
        elif first_future is not None:
            past = past[past["ds"] >= first_future - pd.Timedelta(days=history_days)]
    fitted = fitted_history(trained, past["ds"])
    actual_by_day = {
        pd.Timestamp(d).date(): float(y) for d, y in zip(actual["ds"], actual["y"], strict=True)
    }

    rows: list[dict[str, Any]] = []
    for ds, fit_value in zip(past["ds"], fitted, strict=True):
        day = pd.Timestamp(ds).date()
        rows.append(_row(day, actual_by_day.get(day), fit_value, None, None, names))
    for row in horizon.frame.itertuples(index=False):
        day = pd.Timestamp(row.ds).date()
        rows.append(_row(day, actual_by_day.get(day), row.p50, row.lower, row.upper, names))
    return rows


def _row(
    day: date,
    historical: float | None,
    predicted: float | None,
    lower: float | None,
    upper: float | None,
    names: dict[date, str],
) -> dict[str, Any]:
    name = names.get(day)
    return {
        "date": day.isoformat(),
        "historical": _round(historical),
        "predicted": _round(predicted),
        "lower": _round(lower),
        "upper": _round(upper),
        "isHoliday": name is not None,
        "holidayName": name,
    }


def quantile_rows(horizon: HorizonForecast) -> list[dict[str, Any]]:
    return [
        {
            "date": pd.Timestamp(row.ds).date().isoformat(),
            "p10": _round(row.p10),
            "p50": _round(row.p50),
            "p90": _round(row.p90),
        }
        for row in horizon.frame.itertuples(index=False)
    ]


def horizon_days_after(trained: TrainedModel, days: int) -> tuple[date, date]:
    start = trained.last_day + timedelta(days=1)
    return start, start + timedelta(days=days - 1)
