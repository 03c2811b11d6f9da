"""Restock recommendation: demand, safety stock, restock quantity and urgency."""

from __future__ import annotations

import numpy as np
import pytest
from siprems.forecasting.restock import days_of_cover, recommend

TWO_WEEKS = [10.0] * 14  # demand 140
TOTALS = np.arange(100, 201, dtype=float)  # sampled horizon totals: 90 % quantile = 190


def _recommend(stock, daily=TWO_WEEKS, totals=TOTALS):
    return recommend(
        product_id=1,
        product_name="Bread",
        current_stock=stock,
        daily_p50=daily,
        horizon_totals=totals,
    )


def test_days_of_cover_counts_whole_days_the_stock_lasts():
    assert days_of_cover(50, [10] * 10) == 5
    assert days_of_cover(49, [10] * 10) == 4
    assert days_of_cover(0, [10] * 10) == 0
    assert days_of_cover(1000, [10] * 10) == 10


def test_safety_stock_comes_from_the_upper_quantile_of_total_demand():
    result = _recommend(50)
    assert result["predictedDemand"] == 140
    assert result["safetyStock"] == 50  # 190 - 140
    assert result["recommendedRestock"] == 140  # 140 + 50 - 50
    assert result["urgency"] == "high"  # 50 units last 5 days < 7


def test_stock_for_a_week_but_not_the_horizon_is_medium():
    result = _recommend(100)
    assert result["daysOfCover"] == 10
    assert result["recommendedRestock"] == 90
    assert result["urgency"] == "medium"


def test_enough_stock_including_safety_is_low_with_no_restock():
    result = _recommend(500)
    assert result["recommendedRestock"] == 0
    assert result["urgency"] == "low"


def test_short_horizon_urgency_is_judged_within_the_horizon():
    assert _recommend(25, daily=[10, 10, 10], totals=None)["urgency"] == "high"
    short = _recommend(35, daily=[10, 10, 10], totals=None)
    assert short["urgency"] == "low" and short["safetyStock"] == 0


def test_the_original_fields_are_all_there():
    result = _recommend(50)
    for field in (
        "productId",
        "productName",
        "currentStock",
        "predictedDemand",
        "recommendedRestock",
        "urgency",
    ):
        assert field in result


def test_service_level_must_be_a_sensible_quantile():
    with pytest.raises(ValueError):
        recommend(
            product_id=1, product_name="x", current_stock=1, daily_p50=[1.0], service_level=1.0
        )


def test_demand_rounds_to_nearest_and_safety_stock_up():
    """Fractions: 20.8 units of demand are 21; a 90 % total 9.7 above it needs 10 units of
    safety stock (rounding it down would under-stock)."""
    r = recommend(
        product_id=1,
        product_name="x",
        current_stock=0,
        daily_p50=[10.4, 10.4],
        horizon_totals=[20.0, 30.5, 30.5, 30.5],
        service_level=0.9,
    )
    assert (r["predictedDemand"], r["safetyStock"]) == (21, 10)


def test_a_service_level_below_one_half_is_refused():
    with pytest.raises(ValueError):
        recommend(
            product_id=1, product_name="x", current_stock=0, daily_p50=[1.0], service_level=0.3
        )
