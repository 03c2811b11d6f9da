"""Daily sales → the frame Prophet trains on (ds, y, promo)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from siprems.errors import InsufficientDataError
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
    standard deviation of the whole series.
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
        mean, std = data["y"].mean(), data["y"].std()
        if std > 0:
            keep = (data["y"] - mean).abs() <= options.outlier_sigma * std
            removed = int((~keep).sum())
            data = data[keep].reset_index(drop=True)
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
