"""Prediction: quantiles over the horizon, the fitted history and the API's ``chartData``.

Everything here works on a ``ServingModel`` (the numpy kernel of a fitted model plus what
turns its output into demand) with numpy arrays, so the worker's forecast path imports
neither pandas nor Prophet. ``future_frame`` and ``predict_horizon`` serve training and the
backtests, which work with pandas frames and fitted Prophet models: they import pandas when
called.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from siprems.forecasting.kernel import ForecastKernel
from siprems.forecasting.scale import to_original_scale

if TYPE_CHECKING:
    import pandas as pd

    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.train import TrainedModel
    from siprems.sales.models import DailySales

# The sampler's seed: the same model gives the same answer to the same request (and a
# stored model forecasts identically). With it the kernel draws exactly what Prophet's
# predictive_samples drew after np.random.seed(SAMPLING_SEED).
SAMPLING_SEED = 20130701


@dataclass(frozen=True)
class ServingModel:
    """What a forecast needs from a trained model, without Prophet."""

    kernel: ForecastKernel
    options: ForecastOptions
    correction_factor: float
    last_day: date
    holiday_names: Mapping[str, str] = field(default_factory=dict)  # ISO day -> name(s)
    # model-scale offsets for days 1, 2, ... after last_day (the training's recent level)
    recent_level: tuple[float, ...] = ()


@dataclass
class HorizonForecast:
    """Daily quantiles on the original scale, plus the sampled horizon totals (for restock)."""

    days: np.ndarray  # datetime64[D]
    p50: np.ndarray
    p10: np.ndarray
    p90: np.ndarray
    lower: np.ndarray  # interval_width bounds (chartData's lower/upper)
    upper: np.ndarray
    totals: np.ndarray  # one total demand over the horizon per sample path

    def by_day(self, *columns: str) -> Iterator[tuple[Any, ...]]:
        """(day, value of each named column) per day, as Python values: rounding numpy
        scalars one by one costs more than the whole answer otherwise."""
        values = [getattr(self, name).tolist() for name in columns]
        return zip(self.days.tolist(), *values, strict=True)

    @property
    def frame(self) -> pd.DataFrame:
        """ds, p50, p10, p90, lower, upper as a pandas frame (for the backtests)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "ds": self.days.astype("datetime64[ns]"),
                "p50": self.p50,
                "p10": self.p10,
                "p90": self.p90,
                "lower": self.lower,
                "upper": self.upper,
            }
        )


def future_days(last_day: date, days: int) -> np.ndarray:
    """The ``days`` calendar days after ``last_day``."""
    return np.datetime64(last_day, "D") + np.arange(1, days + 1)


def horizon_forecast(
    model: ServingModel, days: np.ndarray, promo: np.ndarray | None = None
) -> HorizonForecast:
    """p50 = the corrected point forecast; p10/p90 and the ``interval_width`` bounds from the
    posterior predictive samples (spread scaled by ``interval_scale``)."""
    options = model.options
    factor = model.correction_factor
    days = np.asarray(days, dtype="datetime64[D]")
    point = model.kernel.point(days, promo)
    offset = recent_level_offsets(model, days)
    point = point + offset
    p50 = to_original_scale(point, options) * factor
    width = options.interval_width
    if options.uncertainty_samples > 0:
        draws = model.kernel.samples(days, promo, n=options.uncertainty_samples, seed=SAMPLING_SEED)
        draws += offset[:, None]
        if options.interval_scale != 1.0:
            draws = point[:, None] + options.interval_scale * (draws - point[:, None])
        paths = to_original_scale(draws, options) * factor
        p10, p90, lower, upper = np.quantile(
            paths, [0.1, 0.9, (1 - width) / 2, (1 + width) / 2], axis=1
        )
        totals = paths.sum(axis=0)
    else:
        p10 = p90 = lower = upper = p50
        totals = np.asarray([p50.sum()])
    return HorizonForecast(
        days=days,
        p50=p50,
        p10=np.minimum(p10, p50),
        p90=np.maximum(p90, p50),
        lower=np.minimum(lower, p50),
        upper=np.maximum(upper, p50),
        totals=totals,
    )


def recent_level_offsets(model: ServingModel, days: np.ndarray) -> np.ndarray:
    """The model's recent-level offset of each day (0 where it has none)."""
    ahead = (days - np.datetime64(model.last_day, "D")).astype(np.int64)
    levels = np.asarray(model.recent_level, dtype=float)
    usable = (ahead >= 1) & (ahead <= len(levels))
    offset = np.zeros(len(days))
    offset[usable] = levels[ahead[usable] - 1]
    return offset


def fitted_history(model: ServingModel, days: np.ndarray) -> np.ndarray:
    """The model's fitted demand on past days (no sampling: microseconds with the kernel)."""
    if len(days) == 0:
        return np.asarray([], dtype=float)
    return to_original_scale(model.kernel.point(days), model.options) * model.correction_factor


def history_start(model: ServingModel, history_days: int | None) -> date | None:
    """The first day of history the answer shows (None = all of it)."""
    if history_days is None:
        return None
    return model.last_day + timedelta(days=1 - max(history_days, 0))


def chart_data(
    model: ServingModel,
    horizon: HorizonForecast,
    actual: DailySales,
    history_days: int | None,
) -> list[dict[str, Any]]:
    """The original ``chartData`` rows: history (actual + fitted, no interval) then horizon.

    ``history_days=None`` returns every day of history in ``actual``; otherwise the last
    ``history_days`` days before the horizon (0 = horizon only).
    """
    actual_days = np.asarray(actual.days, dtype="datetime64[D]")
    actual_y = np.asarray(actual.quantity, dtype=float)
    past = actual_days < np.datetime64(model.last_day + timedelta(days=1), "D")
    start = history_start(model, history_days)
    if start is not None:
        past &= actual_days >= np.datetime64(start, "D")
    past_days = actual_days[past]
    fitted = fitted_history(model, past_days)
    actual_by_day = dict(zip(actual_days.tolist(), actual_y.tolist(), strict=True))
    names = model.holiday_names

    rows: list[dict[str, Any]] = []
    # Python floats, not numpy scalars (see HorizonForecast.by_day)
    fitted_values = np.asarray(fitted, dtype=float).tolist()
    for day, y, fit_value in zip(
        past_days.tolist(), actual_y[past].tolist(), fitted_values, strict=True
    ):
        rows.append(_row(day, y, fit_value, None, None, names))
    for day, p50, lower, upper in horizon.by_day("p50", "lower", "upper"):
        rows.append(_row(day, actual_by_day.get(day), p50, lower, upper, names))
    return rows


def quantile_rows(horizon: HorizonForecast) -> list[dict[str, Any]]:
    return [
        {
            "date": day.isoformat(),
            "p10": _round(p10),
            "p50": _round(p50),
            "p90": _round(p90),
        }
        for day, p10, p50, p90 in horizon.by_day("p10", "p50", "p90")
    ]


# --- training and backtests (pandas frames, fitted Prophet models) ------------------------
def serving_model_of(trained: TrainedModel) -> ServingModel:
    """The serving model of a freshly trained model (its kernel built once and kept)."""
    kernel = trained.extra.get("kernel")
    if kernel is None:
        kernel = trained.extra["kernel"] = ForecastKernel.from_prophet(trained.model)
    return ServingModel(
        kernel=kernel,
        options=trained.options,
        correction_factor=trained.correction_factor,
        last_day=trained.last_day,
        recent_level=trained.recent_level,
    )


def future_frame(trained: TrainedModel, days: int) -> pd.DataFrame:
    """The ``days`` calendar days after the model's last training day (no promotion)."""
    import pandas as pd

    return pd.DataFrame(
        {"ds": future_days(trained.last_day, days).astype("datetime64[ns]"), "promo": 0.0}
    )


def predict_horizon(trained: TrainedModel, frame: pd.DataFrame) -> HorizonForecast:
    """``horizon_forecast`` for the rows of a frame (ds ascending, promo optional)."""
    promo = frame["promo"].to_numpy(dtype=float) if "promo" in frame else None
    days = frame["ds"].to_numpy().astype("datetime64[D]")
    return horizon_forecast(serving_model_of(trained), days, promo)


# --- internals -----------------------------------------------------------------------------
def _round(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(float(value), 2)


def _row(
    day: date,
    historical: float | None,
    predicted: float | None,
    lower: float | None,
    upper: float | None,
    names: Mapping[str, str],
) -> dict[str, Any]:
    iso = day.isoformat()
    name = names.get(iso)
    return {
        "date": iso,
        "historical": _round(historical),
        "predicted": _round(predicted),
        "lower": _round(lower),
        "upper": _round(upper),
        "isHoliday": name is not None,
        "holidayName": name,
    }
