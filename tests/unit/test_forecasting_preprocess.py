"""DailySales → training frame: missing-day policy, log1p, outliers, too little data."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from siprems.errors import InsufficientDataError
from siprems.forecasting.options import ForecastOptions
from siprems.forecasting.preprocess import (
    sales_frame,
    seasonalities_supported,
    to_original_scale,
    training_frame,
)
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


def test_clipped_outliers_stay_as_days_at_the_threshold():
    rng = np.random.default_rng(1)
    values = list(rng.integers(90, 110, size=60)) + [100_000]
    options = ForecastOptions(outlier_action="clip")
    data, changed = training_frame(sales_frame(_sales(values), options), options, "BRD-001")
    assert changed == 1 and len(data) == 61
    logs = np.log1p(np.asarray(values, dtype=float))
    assert data["y"].iloc[-1] == pytest.approx(logs.mean() + 3.5 * logs.std(ddof=1))
    assert np.allclose(data["y"].iloc[:60], logs[:60])  # the other days untouched


def test_weekday_scope_finds_an_outlier_hidden_in_the_spread_between_weekdays():
    # Sundays sell 10, other days 1000; one Sunday sells 300: within 3.5 σ of the whole
    # series (whose σ is mostly the weekday pattern), far outside the Sundays' own spread
    start = date(2024, 3, 3)  # a Sunday
    values = [10.0 + (i % 3) if i % 7 == 0 else 1000.0 + (i % 5) for i in range(140)]
    values[70] = 300.0  # a Sunday
    sales = _sales(values, start=start)
    series = ForecastOptions()
    weekday = ForecastOptions(outlier_scope="weekday")
    _, removed_series = training_frame(sales_frame(sales, series), series, "BRD-001")
    data, removed_weekday = training_frame(sales_frame(sales, weekday), weekday, "BRD-001")
    assert removed_series == 0
    assert removed_weekday == 1
    assert (start + timedelta(days=70)) not in set(data["ds"].dt.date)


def _days(days, quantity=5.0):
    return DailySales(
        sku="BRD-001",
        days=tuple(days),
        quantity=tuple(quantity for _ in days),
        promo=tuple(False for _ in days),
    )


def _supported(days, options=None):
    options = options or ForecastOptions.default()
    return seasonalities_supported(options, sales_frame(_days(days), options))


def test_a_year_of_daily_sales_keeps_every_seasonality():
    options = ForecastOptions.default()
    days = [date(2023, 1, 1) + timedelta(days=i) for i in range(365)]
    assert _supported(days, options) is options
    legacy = ForecastOptions.legacy()  # monthly terms too
    assert _supported(days, legacy) is legacy


def test_less_than_a_year_drops_the_yearly_terms_only():
    supported = _supported([date(2023, 1, 1) + timedelta(days=i) for i in range(364)])
    assert supported.yearly_seasonality is False
    assert supported.weekly_seasonality == ForecastOptions.default().weekly_seasonality


def test_a_weekday_never_open_keeps_the_weekly_terms():
    """A shop closed on Sundays: six weekdays determine the weekly curve."""
    start = date(2023, 1, 2)  # a Monday
    days = [
        start + timedelta(days=i) for i in range(400) if (start + timedelta(days=i)).weekday() != 6
    ]
    assert _supported(days) == ForecastOptions.default()


def test_weekly_terms_need_six_weekdays_each_seen_twice():
    start = date(2023, 1, 2)  # a Monday
    mondays = [start + timedelta(days=7 * i) for i in range(60)]
    supported = _supported(mondays)
    assert supported.weekly_seasonality is False and supported.yearly_seasonality == 6
    # five weekdays twice, the sixth once: still too few
    days = [start + timedelta(days=7 * w + d) for w in range(2) for d in range(5)]
    days += [start + timedelta(days=5)] + [start + timedelta(days=400)]
    assert _supported(days).weekly_seasonality is False
    days += [start + timedelta(days=12)]  # the sixth weekday's second day
    assert _supported(days).weekly_seasonality == ForecastOptions.default().weekly_seasonality


def test_summer_winter_weekly_terms_go_with_the_weekly_ones():
    options = ForecastOptions.default().with_overrides(summer_winter_weekly=True)
    supported = _supported([date(2023, 1, 2) + timedelta(days=7 * i) for i in range(60)], options)
    assert supported.summer_winter_weekly is False and supported.weekly_seasonality is False


def test_weekend_yearly_terms_need_the_yearly_ones_and_a_year_of_weekend_days():
    """The weekend's own yearly curve (order 3: six terms) is pinned down by weekend days with
    sales, four a term over a whole year, and only goes on top of the yearly curve."""
    start = date(2023, 1, 2)  # a Monday
    weekdays = [
        start + timedelta(days=i) for i in range(400) if (start + timedelta(days=i)).weekday() < 5
    ]
    supported = _supported(weekdays)
    assert supported.weekend_yearly_order is None and supported.yearly_seasonality == 6
    # Saturdays three weeks apart: 23 of them span 463 days, one short of 24
    saturdays = [start + timedelta(days=5 + 21 * i) for i in range(24)]
    assert _supported(weekdays + saturdays[:23]).weekend_yearly_order is None
    assert _supported(weekdays + saturdays).weekend_yearly_order == 3
    # enough weekend days, but all within four months: the weekend's own year is not seen
    weekends = [start + timedelta(days=7 * w + d) for w in range(16) for d in (5, 6)]
    assert _supported(weekdays + weekends).weekend_yearly_order is None
    # under a year of sales: no yearly curve, so no weekend one either
    short = [start + timedelta(days=i) for i in range(364)]
    assert _supported(short).weekend_yearly_order is None


def test_monthly_terms_need_two_months_and_four_days_a_term():
    legacy = ForecastOptions.legacy()  # order 15: 30 terms, 120 days with sales
    days = [date(2023, 1, 1) + timedelta(days=i) for i in range(120)]
    assert _supported(days[:60], legacy).monthly_seasonality is False  # under 61 days
    assert _supported(days[:119], legacy).monthly_seasonality is False
    assert _supported(days, legacy).monthly_seasonality is True


def test_yearly_terms_need_four_days_with_sales_a_term():
    """Sales far apart over more than a year leave the yearly curve free between them
    (eight sales 60 days apart were forecast at 36,000 a day)."""
    spread = [date(2017, 1, 2) + timedelta(days=60 * i) for i in range(8)]
    assert _supported(spread).yearly_seasonality is False
    default_order = ForecastOptions.default().yearly_seasonality  # 6: twelve terms
    weekly = [date(2017, 1, 2) + timedelta(days=8 * i) for i in range(48)]  # 48 days, 376 span
    assert _supported(weekly).yearly_seasonality == default_order
    assert _supported(weekly[:47]).yearly_seasonality is False


def test_only_the_training_window_counts():
    """Years of sales that ``max_history_days`` leaves out determine nothing."""
    options = ForecastOptions.default().with_overrides(max_history_days=180)
    days = [date(2020, 1, 1) + timedelta(days=i) for i in range(1000)]
    assert _supported(days, options).yearly_seasonality is False
