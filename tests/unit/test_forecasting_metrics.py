"""Metrics and the seasonal-naive baseline on hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from siprems.forecasting import metrics

ACTUAL = [10, 20, 0, 40]
FORECAST = [12, 18, 5, 30]  # absolute errors 2, 2, 5, 10


def test_mae_is_the_mean_absolute_error():
    assert metrics.mae(ACTUAL, FORECAST) == pytest.approx(19 / 4)


def test_mape_leaves_out_days_without_demand():
    # 2/10, 2/20, 10/40; the zero-demand day is undefined and skipped
    assert metrics.mape(ACTUAL, FORECAST) == pytest.approx((0.2 + 0.1 + 0.25) / 3)


def test_mape_is_nan_when_every_actual_is_zero():
    assert math.isnan(metrics.mape([0, 0], [1, 2]))


def test_smape_counts_a_zero_day_as_full_error_and_zero_zero_as_none():
    expected = (4 / 22 + 4 / 38 + 10 / 5 + 20 / 70) / 4
    assert metrics.smape(ACTUAL, FORECAST) == pytest.approx(expected)
    assert metrics.smape([0, 10], [0, 10]) == 0.0


def test_wape_weights_errors_by_volume():
    assert metrics.wape(ACTUAL, FORECAST) == pytest.approx(19 / 70)


def test_coverage_is_the_share_inside_the_interval():
    assert metrics.coverage(ACTUAL, [8, 19, 0, 35], [11, 25, 1, 45]) == 1.0
    assert metrics.coverage(ACTUAL, [8, 19, 0, 35], [9, 25, 1, 45]) == 0.75


def _two_weeks(values):
    return pd.Series(values, index=pd.date_range("2024-01-01", periods=len(values), freq="D"))


WEEK1 = [10, 20, 30, 40, 50, 60, 70]
WEEK2 = [12, 18, 30, 44, 50, 66, 70]  # |diffs| to week 1: 2, 2, 0, 4, 0, 6, 0


def test_seasonal_naive_scale_is_the_in_sample_weekly_difference():
    assert metrics.seasonal_naive_scale(_two_weeks(WEEK1 + WEEK2)) == pytest.approx(14 / 7)


def test_seasonal_naive_scale_lags_by_calendar_days_when_a_day_is_missing():
    history = _two_weeks(WEEK1 + WEEK2).drop(pd.Timestamp("2024-01-09"))  # the 18
    # pairs left: 2, 0, 4, 0, 6, 0 (the weekday never shifts)
    assert metrics.seasonal_naive_scale(history) == pytest.approx(12 / 6)


def test_mase_divides_mae_by_the_scale():
    assert metrics.mase(ACTUAL, FORECAST, 2.0) == pytest.approx(4.75 / 2)
    assert math.isnan(metrics.mase(ACTUAL, FORECAST, 0.0))


def test_seasonal_naive_forecast_repeats_the_last_week():
    history = _two_weeks(WEEK1 + WEEK2)
    days = pd.date_range("2024-01-15", periods=9, freq="D")
    assert list(metrics.seasonal_naive_forecast(history, days)) == WEEK2 + [12, 18]


def test_seasonal_naive_forecast_falls_back_a_week_for_a_missing_day():
    history = _two_weeks(WEEK1 + WEEK2).drop(pd.Timestamp("2024-01-09"))
    forecast = metrics.seasonal_naive_forecast(history, [pd.Timestamp("2024-01-16")])
    assert list(forecast) == [20]  # 2024-01-09 is missing → 2024-01-02


def test_score_rounds_and_turns_nan_into_none():
    result = metrics.score([0, 0], [1, 1], 1.0, [0, 0], [2, 2])
    assert result["mape"] is None
    assert result["mae"] == 1.0 and result["mase"] == 1.0 and result["coverage_80"] == 1.0


def test_legacy_accuracy_is_capped_at_zero():
    assert metrics.legacy_accuracy(0.183333) == 81.67
    assert metrics.legacy_accuracy(1.5) == 0.0
    assert metrics.legacy_accuracy(None) is None


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError):
        metrics.mae([1, 2], [1])


def test_one_step_seasonal_naive_uses_actuals_inside_the_window():
    series = _two_weeks(WEEK1 + WEEK2 + [1, 2, 3, 4, 5, 6, 7, 8])
    days = pd.date_range("2024-01-15", periods=8, freq="D")  # the third week and one day
    # the first week of the window comes from week 2; its 8th day from the window's own day 1
    assert list(metrics.one_step_seasonal_naive(series, days)) == WEEK2 + [1]
    # the multi-step forecast from the end of week 2 repeats week 2 instead
    history = series[series.index < days[0]]
    assert list(metrics.seasonal_naive_forecast(history, days)) == WEEK2 + [12]


def test_one_step_seasonal_naive_falls_back_a_week_over_a_missing_day():
    series = _two_weeks(WEEK1 + WEEK2).drop(pd.Timestamp("2024-01-08"))  # the 12
    days = [pd.Timestamp("2024-01-15"), pd.Timestamp("2024-01-01")]
    assert metrics.one_step_seasonal_naive(series, days)[0] == 10  # two weeks back
    assert math.isnan(metrics.one_step_seasonal_naive(series, days)[1])  # nothing before


def test_naive_baselines_take_unsorted_dates_and_an_empty_history():
    series = _two_weeks(WEEK1 + WEEK2)
    shuffled = series.iloc[::-1]
    shuffled.index = [d.date() for d in shuffled.index]  # dates, newest first
    days = pd.date_range("2024-01-15", periods=7, freq="D")
    assert list(metrics.seasonal_naive_forecast(shuffled, days)) == WEEK2
    assert metrics.seasonal_naive_scale(shuffled) == metrics.seasonal_naive_scale(series)
    empty = pd.Series([], dtype=float, index=pd.DatetimeIndex([]))
    assert math.isnan(metrics.seasonal_naive_scale(empty))
    assert np.isnan(metrics.seasonal_naive_forecast(empty, days)).all()


def test_a_value_on_the_upper_bound_is_covered():
    assert metrics.coverage([10, 20], [5, 15], [10, 25]) == 1.0
