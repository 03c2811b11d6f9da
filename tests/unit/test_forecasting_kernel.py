"""ForecastKernel on a small hand-made model: each term of Prophet's formula, by hand.
Equality with Prophet itself, on models fitted to the Kiel data: the integration tests."""

from __future__ import annotations

import numpy as np
import pytest
from siprems.forecasting.kernel import ForecastKernel, weekend

START = np.datetime64("2020-01-01", "D")
NS_PER_DAY = 86_400 * 10**9
# columns: weekly sin, weekly cos (active in "summer" only), a holiday, the promo regressor
MODEL = {
    "format": 1,
    "growth": "linear",
    "start_ns": int(START.astype("datetime64[ns]").astype(np.int64)),
    "t_scale_ns": 100 * NS_PER_DAY,  # 100 days of training: t = days since start / 100
    "y_scale": 10.0,
    "floor": 0.0,
    "k": 1.0,
    "m": 0.5,
    "deltas": [-2.0],
    "changepoints_t": [0.5],
    "beta": [0.1, 0.2, 0.3, 0.4],
    "additive": [0, 0, 1, 1],  # holiday and promo additive, the weekly terms multiplicative
    "multiplicative": [1, 1, 0, 0],
    "sigma_obs": 0.0,
    "history_step_t": 0.01,
    "seasonalities": [["weekly", 7.0, 1, "summer"]],
    "holiday_columns": [
        ["Fest_delim_+0", [int((START + np.timedelta64(10, "D")).astype(np.int64))]]
    ],
    "regressors": [["promo", 0.5, 0.5]],
    "conditions": {"summer": [False] * 3 + [True] * 6 + [False] * 3},
}


def _by_hand(days: np.ndarray, promo: np.ndarray) -> np.ndarray:
    t = (days - START).astype(float) / 100
    trend = (1.0 * t + 0.5 + np.where(t >= 0.5, -2.0 * (t - 0.5), 0.0)) * 10
    epoch_days = days.astype(np.int64).astype(float)
    summer = np.isin(days.astype("datetime64[M]").astype(np.int64) % 12 + 1, range(4, 10))
    weekly = summer * (
        0.1 * np.sin(2 * np.pi * epoch_days / 7) + 0.2 * np.cos(2 * np.pi * epoch_days / 7)
    )
    holiday = (days == START + np.timedelta64(10, "D")) * 0.3
    regressor = (promo - 0.5) / 0.5 * 0.4
    return trend * (1 + weekly) + (holiday + regressor) * 10


def test_point_is_prophets_formula_term_by_term():
    kernel = ForecastKernel.from_dict(MODEL)
    # winter and summer days, the holiday, both sides of the changepoint, past the training
    days = np.concatenate(
        [START + np.arange(0, 120, 3), np.arange("2020-06-01", "2020-06-10", dtype="datetime64[D]")]
    )
    promo = (np.arange(len(days)) % 4 == 0).astype(float)
    np.testing.assert_allclose(kernel.point(days, promo), _by_hand(days, promo), atol=1e-12)
    # no promo given = no promotion
    np.testing.assert_allclose(kernel.point(days), _by_hand(days, np.zeros(len(days))), atol=1e-12)
    # a condition passed explicitly wins over the month table
    summer_days = np.arange("2020-06-01", "2020-06-10", dtype="datetime64[D]")
    never = {"summer": np.zeros(len(summer_days), dtype=bool)}
    assert not np.allclose(kernel.point(summer_days), kernel.point(summer_days, conditions=never))


def test_samples_spread_only_after_the_training_period_and_repeat_for_a_seed():
    kernel = ForecastKernel.from_dict(MODEL)  # sigma_obs 0: the spread is the trend's alone
    days = START + np.arange(95, 130)  # t from 0.95: training days, then 30 days ahead
    draws = kernel.samples(days, n=200, seed=7)
    assert draws.shape == (35, 200)
    trained = (days - START).astype(float) / 100 <= 1
    expected = np.broadcast_to(kernel.point(days)[trained][:, None], draws[trained].shape)
    np.testing.assert_allclose(draws[trained], expected, atol=1e-12)
    spread = draws[~trained].std(axis=1)
    assert spread[-1] > spread[0] > 0  # uncertainty grows with the distance
    np.testing.assert_array_equal(kernel.samples(days, n=200, seed=7), draws)


def test_unknown_conditions_and_missing_regressors_are_refused():
    model = {**MODEL, "conditions": {"summer": [None] * 12}}
    kernel = ForecastKernel.from_dict(model)
    with pytest.raises(ValueError, match="unknown in months"):
        kernel.point(START + np.arange(3))
    other = {**MODEL, "regressors": [["price", 0.0, 1.0]]}
    with pytest.raises(ValueError, match="needs the regressor 'price'"):
        ForecastKernel.from_dict(other).point(START + np.arange(3))
    assert ForecastKernel.from_dict(other).point(
        START + np.arange(3), regressors={"price": np.ones(3)}
    ).shape == (3,)


def test_the_weekend_condition_is_a_rule_of_the_calendar():
    """A seasonality on weekends only needs no condition values from the caller and none from
    the training data (a shop closed on Mondays still gets its Mondays forecast)."""
    saturday = np.datetime64("2024-06-01", "D")
    days = saturday + np.arange(14)
    assert (
        weekend(days.astype(np.int64)).tolist()
        == [True, True, False, False, False, False, False] * 2
    )
    model = {**MODEL, "seasonalities": [["yearly_weekend", 365.25, 1, "weekend"]], "conditions": {}}
    kernel = ForecastKernel.from_dict(model)
    got = kernel.point(days)
    given = kernel.point(days, conditions={"weekend": weekend(days.astype(np.int64))})
    np.testing.assert_array_equal(got, given)
    always = kernel.point(days, conditions={"weekend": np.ones(14, dtype=bool)})
    assert (got != always).sum() == 10  # the weekdays differ, the weekend days do not
