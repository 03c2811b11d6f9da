"""The forecasting benchmark's baselines and summary over the five full-history products."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import forecast_core

WEEK = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]


def _observed(values):
    return pd.DataFrame(
        {"ds": pd.date_range("2024-01-01", periods=len(values), freq="D"), "y": values}
    )


WEEK2 = [12.0, 18.0, 30.0, 44.0, 50.0, 66.0, 70.0]  # |diffs| to WEEK: 2, 2, 0, 4, 0, 6, 0


def test_one_step_naive_is_scored_on_each_window_with_the_window_scale():
    window = [value + 1 for value in WEEK2]  # its second week repeats its first exactly
    observed = _observed(WEEK + WEEK2 + window + window)
    rolling = {
        "windows": [{"cutoff": "2024-01-14", "model": {}}, {"cutoff": "2024-01-01"}],
    }
    forecast_core._add_one_step_naive(rolling, observed, horizon=14)
    scored = rolling["windows"][0]["seasonal_naive_one_step"]
    # errors 1 on the first week (forecast from WEEK2), 0 on the second (from the window's
    # own first week); scale = in-sample weekly MAE before the cutoff = 14 / 7
    assert scored["mae"] == pytest.approx(0.5)
    assert scored["mase"] == pytest.approx(0.25)
    assert "seasonal_naive_one_step" not in rolling["windows"][1]  # skipped window
    assert rolling["seasonal_naive_one_step_mean"]["mase"] == pytest.approx(0.25)


def test_summary_says_whether_the_model_beats_a_baseline_on_each_product():
    def product(model, naive):
        return {"rolling": {"mean": {"mase": model}, "seasonal_naive_mean": {"mase": naive}}}

    per_sku = {sku: product(0.7, 0.9) for sku in forecast_core.FULL_HISTORY}
    assert forecast_core._below(per_sku, "seasonal_naive_mean") is True
    assert forecast_core._mean(forecast_core._five(per_sku, "rolling", "mean")) == 0.7
    per_sku["CNF-001"] = product(0.819, 0.817)
    assert forecast_core._below(per_sku, "seasonal_naive_mean") is False
    del per_sku["CKE-001"]
    assert forecast_core._below(per_sku, "seasonal_naive_mean") is None
