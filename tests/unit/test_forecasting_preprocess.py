"""DailySales → training frame: missing-day policy, log1p, outliers, too little data."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from siprems.errors import InsufficientDataError
from siprems.forecasting.options import ForecastOptions
from siprems.forecasting.preprocess import sales_frame, to_original_scale, training_frame
from siprems.sales.models import DailySales


def _sales(quantities, gaps=(), start=date(2024, 3, 1)):
    days = [start + timedelta(days=i) for i in range(len(quantities) + len(gaps)) if i not in gaps]
    return DailySales(
        sku="BRD-001",
        days=tuple(days),
        quantity=tuple(float(q) for q in quantities),
        promo=tuple(False for _ in quantities),
    )


def test_skip_policy_keeps_only_days_with_sales_in_order():
    sales = _sales([5, 6, 7, 8], gaps=(2,))
    frame = sales_frame(sales, ForecastOptions(missing_days="skip"))
    assert list(frame["y"]) == [5, 6, 7, 8]
    assert frame["ds"].dt.day.tolist() == [1, 2, 4, 5]
    assert list(frame.columns) == ["ds", "y", "promo"]


def test_zero_policy_fills_every_calendar_day_between_first_and_last_sale():
    sales = _sales([5, 6, 7, 8], gaps=(2,))
    frame = sales_frame(sales, ForecastOptions(missing_days="zero"))
    assert list(frame["y"]) == [5, 6, 0, 7, 8]
    assert frame["promo"].tolist() == [0, 0, 0, 0, 0]


def test_training_frame_is_on_the_log1p_scale():
    frame = sales_frame(_sales([1, 9, 99, 999, 9999]), ForecastOptions())
    data, removed = training_frame(frame, ForecastOptions(), "BRD-001")
    assert removed == 0
    assert np.allclose(data["y"], np.log1p([1, 9, 99, 999, 9999]))
    assert np.allclose(to_original_scale(data["y"], ForecastOptions()), [1, 9, 99, 999, 9999])


def test_outliers_beyond_the_sigma_limit_are_dropped_on_the_log_scale():
    rng = np.random.default_rng(1)
    values = list(rng.integers(90, 110, size=60)) + [100_000]
    frame = sales_frame(_sales(values), ForecastOptions())
    data, removed = training_frame(frame, ForecastOptions(), "BRD-001")
    assert removed == 1
    assert len(data) == 60
    assert data["y"].max() < np.log1p(200)


def test_no_outlier_removal_when_disabled():
    values = [100] * 60 + [100_000]
    frame = sales_frame(_sales(values), ForecastOptions())
    data, removed = training_frame(frame, ForecastOptions(outlier_sigma=None), "BRD-001")
    assert removed == 0 and len(data) == 61


def test_fewer_than_five_days_is_insufficient_data():
    frame = sales_frame(_sales([3, 4, 5]), ForecastOptions())
    with pytest.raises(InsufficientDataError) as caught:
        training_frame(frame, ForecastOptions(), "BRD-001")
    assert "3 days with sales" in caught.value.message
    assert "at least 5" in caught.value.message
    assert caught.value.http_status == 422


def test_zero_filled_days_do_not_count_as_data():
    sales = _sales([3, 4, 5], gaps=(1, 2, 4, 5))
    frame = sales_frame(sales, ForecastOptions(missing_days="zero"))
    assert len(frame) == 7
    with pytest.raises(InsufficientDataError):
        training_frame(frame, ForecastOptions(missing_days="zero"), "BRD-001")


def test_too_little_left_after_outlier_removal_is_insufficient_data():
    options = ForecastOptions(outlier_sigma=1.0, min_days=6)
    frame = sales_frame(_sales([10, 10, 10, 10, 10, 1000]), options)
    with pytest.raises(InsufficientDataError) as caught:
        training_frame(frame, options, "BRD-001")
    assert "after removing 1 outliers" in caught.value.message


def test_negative_model_output_is_floored_at_zero_demand():
    assert list(to_original_scale(np.array([-0.5, 0.0]), ForecastOptions())) == [0.0, 0.0]


def test_history_limit_keeps_the_most_recent_days():
    options = ForecastOptions(max_history_days=10, outlier_sigma=None)
    frame = sales_frame(_sales(list(range(1, 31))), options)
    data, _ = training_frame(frame, options, "BRD-001")
    assert len(data) == 10
    assert np.allclose(to_original_scale(data["y"], options), list(range(21, 31)))
