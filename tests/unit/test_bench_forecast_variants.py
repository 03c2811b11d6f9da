"""The variant benchmark's baselines and its inner backtest windows (training data only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import forecast_variants


def test_inner_windows_end_at_or_before_the_cutoff():
    cutoff = pd.Timestamp("2018-07-03")
    windows = forecast_variants.inner_cutoffs(cutoff, 3)
    assert windows == [pd.Timestamp(d) for d in ("2018-06-05", "2018-05-08", "2018-04-10")]
    # each inner window (cutoff, cutoff + 28 days] lies inside the training data
    assert all(c + pd.Timedelta(days=forecast_variants.HORIZON) <= cutoff for c in windows)


def test_last_year_naive_takes_the_same_weekday_scaled_to_the_recent_level():
    days = pd.date_range("2016-01-01", "2017-03-31", freq="D")
    # last year's level 9 (log1p 2.30), recent level 99 (log1p 4.61): ten times higher
    y = np.where(days < pd.Timestamp("2017-01-01"), 9.0, 99.0)
    observed = pd.DataFrame({"ds": days, "y": y})
    cutoff = pd.Timestamp("2017-02-28")
    forecast = forecast_variants.last_year_naive(
        observed, cutoff, pd.date_range("2017-03-01", periods=3).to_numpy()
    )
    assert forecast == pytest.approx([99.0, 99.0, 99.0])  # 9 → log1p + log(100/10) → 99


def test_last_year_naive_falls_back_a_week_over_a_missing_day():
    days = pd.date_range("2016-01-01", "2017-03-31", freq="D")
    observed = pd.DataFrame({"ds": days, "y": 5.0})
    target = pd.Timestamp("2017-03-01")
    observed = observed[observed["ds"] != target - pd.Timedelta(days=364)]  # missing
    observed.loc[observed["ds"] == target - pd.Timedelta(days=371), "y"] = 7.0  # a week before
    cutoff = pd.Timestamp("2017-02-28")
    year_ago = observed[
        (observed["ds"] > cutoff - pd.Timedelta(days=28 + 364))
        & (observed["ds"] <= cutoff - pd.Timedelta(days=364))
    ]
    shift = np.log1p(5.0) - np.log1p(year_ago["y"]).mean()
    forecast = forecast_variants.last_year_naive(observed, cutoff, np.array([target]))
    assert forecast == pytest.approx([np.expm1(np.log1p(7.0) + shift)])
