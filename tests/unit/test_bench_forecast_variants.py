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


def _window(p50, actual):
    days = np.arange(forecast_variants.HORIZON)
    return {
        "ds": days,
        "actual": np.full(len(days), float(actual)),
        "p50": np.full(len(days), float(p50)),
        "p50_flat_trend": np.full(len(days), float(actual)),
        "p50_half_trend": np.full(len(days), float(p50)),
        "p50_sample_median": np.full(len(days), float(p50)),
        "scale": 10.0,
    }


def test_scores_skip_variants_not_fitted_and_hold_out_bias_uses_the_windows_before():
    # only `default` was fitted; every window sells twice its forecast, so removing the
    # bias measured on the window before the cutoff (the training's hold-out) is exact
    cutoffs = {
        ci
        for end in forecast_variants.PERIODS.values()
        for c in forecast_variants.outer_cutoffs(end)
        for ci in [c, *forecast_variants.inner_cutoffs(c, 2)]
    }
    grid = {
        ("default", sku, c): _window(50, 100)
        for sku in forecast_variants.FULL_HISTORY
        for c in cutoffs
    }
    table = forecast_variants.score(grid, {}, inner=[2])
    assert table["default"]["backtest"]["mean"] == pytest.approx(5.0)  # |100 - 50| / 10
    exact = "default, hold-out bias of the last 1 window(s) removed, weight 1.0"
    assert table[exact]["validation"]["mean"] == pytest.approx(0.0)
    # paired with default over the same 60 windows: 5 better in every one, no spread
    assert table[exact]["paired_vs_default"] == {
        "mean": -5.0,
        "standard_error": 0.0,
        "better_share": 1.0,
    }
    half = "default, hold-out bias of the last 1 window(s) removed, weight 0.5"
    assert table[half]["backtest"]["mean"] == pytest.approx((100 - 50 * np.sqrt(2)) / 10, abs=1e-4)
    assert table["default, trend flat over the horizon"]["backtest"]["mean"] == 0.0
    assert "changepoints_50" not in table and "school_holidays" not in table
    assert not any(label.startswith("log blend") for label in table)  # needs the sales
