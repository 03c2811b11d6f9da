"""Daily sales → the frame Prophet trains on (ds, y, promo)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from siprems.errors import InsufficientDataError
from siprems.forecasting.kernel import weekend
from siprems.forecasting.scale import to_original_scale  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from siprems.forecasting.options import ForecastOptions
    from siprems.sales.models import DailySales


def sales_frame(sales: DailySales, options: ForecastOptions) -> pd.DataFrame:
    """Raw daily series on the original scale: columns ds (datetime64), y (float), promo (0/1).

    Missing-day policy: with ``missing_days="zero"`` every calendar day between the first
    and the last sale is present (y=0 where nothing sold); with ``"skip"`` only days with
    sales are (a closed shop is not a day of zero demand).
    """
    frame = pd.DataFrame(
        {
            "ds": pd.to_datetime(list(sales.days)),
            "y": np.asarray(sales.quantity, dtype=float),
            "promo": np.asarray(sales.promo, dtype=float),
        }
    )
    frame = frame.sort_values("ds").drop_duplicates("ds", keep="last").reset_index(drop=True)
    if options.missing_days == "zero" and len(frame) > 1:
        calendar = pd.date_range(frame["ds"].iloc[0], frame["ds"].iloc[-1], freq="D")
        frame = (
            frame.set_index("ds").reindex(calendar, fill_value=0.0).rename_axis("ds").reset_index()
        )
    return frame


def check_enough(frame: pd.DataFrame, options: ForecastOptions, sku: str) -> None:
    observed = int((frame["y"] > 0).sum()) if len(frame) else 0
    if observed < options.min_days:
        raise InsufficientDataError(
            f"{sku}: {observed} days with sales; at least {options.min_days} are needed "
            "to train a forecast",
            product_sku=sku,
            days=observed,
            min_days=options.min_days,
        )


def training_frame(
    frame: pd.DataFrame, options: ForecastOptions, sku: str
) -> tuple[pd.DataFrame, int]:
    """Transform for fitting: history limit, log1p and outlier removal.
    Returns (frame, rows removed).

    Outliers are judged on the log scale (the scale the model sees), against the mean and
    standard deviation of the whole series (or of each weekday's rows, ``outlier_scope``),
    and dropped or clipped to the threshold (``outlier_action``; the count is of rows
    changed either way).
    """
    check_enough(frame, options, sku)
    data = frame.copy()
    if options.max_history_days is not None and len(data):
        start = data["ds"].iloc[-1] - pd.Timedelta(days=options.max_history_days - 1)
        data = data[data["ds"] >= start].reset_index(drop=True)
    if options.log_transform:
        data["y"] = np.log1p(data["y"].clip(lower=0))
    removed = 0
    if options.outlier_sigma is not None and len(data) > 2:
        data, removed = _outliers(data, options)
    if len(data) < options.min_days:
        raise InsufficientDataError(
            f"{sku}: only {len(data)} days left after removing {removed} outliers; "
            f"at least {options.min_days} are needed",
            product_sku=sku,
            days=len(data),
            outliers=removed,
            min_days=options.min_days,
        )
    return data, removed


def _outliers(data: pd.DataFrame, options: ForecastOptions) -> tuple[pd.DataFrame, int]:
    """Rows beyond ``outlier_sigma`` σ of their group dropped or clipped; (frame, count)."""
    y = data["y"]
    if options.outlier_scope == "weekday":
        groups = y.groupby(data["ds"].dt.day_of_week)
        mean, std = groups.transform("mean"), groups.transform("std").fillna(0.0)
    else:
        mean = pd.Series(y.mean(), index=y.index)
        std = pd.Series(y.std(), index=y.index)
    bound = options.outlier_sigma * std
    # a group with no spread (or a single row) has no outliers
    outside = ((y - mean).abs() > bound) & (std > 0)
    count = int(outside.sum())
    if options.outlier_action == "clip":
        data = data.copy()
        data["y"] = y.clip(lower=mean - bound, upper=mean + bound).where(outside, y)
        return data, count
    return data[~outside].reset_index(drop=True), count


# A seasonality is fitted only where the history pins it down; Prophet's Fourier terms are
# otherwise free wherever no day was seen, and a weak prior lets them reach any value there
# (eight Monday-only sales forecast 7,000-20,000 a day for Tuesday to Sunday).
YEAR_DAYS = 365
# yearly and monthly terms need their whole period seen, and days with sales enough for
# their coefficients: four per Fourier term (order 6, twelve terms: 48 days)
ROWS_PER_TERM = 4
PROPHET_YEARLY_ORDER = 10  # yearly_seasonality=True
# weekly terms (order 3: six coefficients) are determined by six weekdays (a shop closed on
# one weekday still has its weekly pattern); each seen at least twice
WEEKDAYS_NEEDED = 6
ROWS_PER_WEEKDAY = 2


def day_numbers(days: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 (the numpy kernel's day numbers) of a datetime column."""
    return days.to_numpy().astype("datetime64[D]").astype(np.int64)


def seasonalities_supported(options: ForecastOptions, observed: pd.DataFrame) -> ForecastOptions:
    """``options`` without the seasonalities the days with sales in the training window
    (``max_history_days``) cannot determine: yearly (monthly) without a whole year (two
    months) between the first and the last sale or with fewer than four days with sales per
    Fourier term; weekly without six weekdays seen twice; the weekend's yearly terms without
    the yearly ones or without such a year of weekend days. A product with years of daily
    sales keeps every seasonality (the options unchanged)."""
    days = observed.loc[observed["y"] > 0, "ds"]
    if days.empty:
        return options
    if options.max_history_days is not None:
        days = days[days > days.iloc[-1] - pd.Timedelta(days=options.max_history_days)]

    def determined(order: int, period_days: float, seen: pd.Series = days) -> bool:
        span = (seen.iloc[-1] - seen.iloc[0]).days + 1 if len(seen) else 0
        return span >= period_days and len(seen) >= ROWS_PER_TERM * 2 * order

    changes: dict[str, object] = {}
    yearly = options.yearly_seasonality
    if yearly and not determined(PROPHET_YEARLY_ORDER if yearly is True else yearly, YEAR_DAYS):
        changes["yearly_seasonality"] = False
    monthly = options.monthly_seasonality
    if monthly and not determined(options.monthly_fourier_order, 2 * options.monthly_period):
        changes["monthly_seasonality"] = False
    weekdays = days.dt.day_of_week.value_counts()
    if options.weekly_seasonality and (weekdays >= ROWS_PER_WEEKDAY).sum() < WEEKDAYS_NEEDED:
        changes["weekly_seasonality"] = False
        changes["summer_winter_weekly"] = False
    weekend_order = options.weekend_yearly_order
    if weekend_order and (
        not options.yearly_seasonality
        or "yearly_seasonality" in changes
        # pinned down by the weekend's own days with sales
        or not determined(weekend_order, YEAR_DAYS, days[weekend(day_numbers(days))])
    ):
        changes["weekend_yearly_order"] = None
    return dataclasses.replace(options, **changes) if changes else options
