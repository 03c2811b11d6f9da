"""The numpy kernel against Prophet itself, on models fitted to the Kiel data: the point
forecast equals ``predict``'s yhat and, for a given seed, the samples equal
``predictive_samples`` (same draws), for the original and the improved settings (their weekend
terms: a calendar condition), a model with conditional seasonalities, a weekly seasonality
with its own prior, and a short (seasonal) product."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from siprems.forecasting.kernel import ForecastKernel
from siprems.forecasting.options import ForecastOptions
from siprems.forecasting.preprocess import sales_frame
from siprems.forecasting.train import fit

from tests.fixtures.prophet import prophet_point, prophet_samples

pytestmark = pytest.mark.filterwarnings("ignore:.*(inplace keyword|convert_dates)")

SEED = 20130701
CASES = {
    "legacy": ("BRD-001", ForecastOptions.legacy()),
    # the weekend's own yearly terms: a seasonality on a calendar condition
    "default": ("CKE-001", ForecastOptions.default()),
    # conditional seasonalities (weekly pattern by season) and a promo regressor that varies
    "summer_winter": (
        "CRS-001",
        ForecastOptions.default().with_overrides(summer_winter_weekly=True),
    ),
    "short_seasonal_product": ("SEA-001", ForecastOptions.default()),
    # the weekly terms added with their own prior, twice Prophet's changepoints
    "weekly_prior_and_changepoints": (
        "RLL-001",
        ForecastOptions.default().with_overrides(weekly_prior_scale=0.5, n_changepoints=50),
    ),
}


@pytest.fixture(scope="module")
def fitted(postgres_url, tmp_path_factory):
    """One fitted model per case (fitting is the slow part: once per module)."""
    from siprems.sales.db import connect_url
    from siprems.sales.repository import SalesRepository

    conn = connect_url(postgres_url)
    try:
        sales = SalesRepository(conn)
        events = sales.prediction_events()
        models = {}
        for case, (sku, options) in CASES.items():
            frame = sales_frame(sales.daily_sales(sku), options)
            work_dir = tmp_path_factory.mktemp(case)
            models[case] = (fit(frame, events, options, sku, work_dir), frame)
        return models
    finally:
        conn.close()


def test_the_improved_settings_fit_a_yearly_curve_for_weekends(fitted):
    model = fitted["default"][0].model
    assert model.seasonalities["yearly_weekend"]["condition_name"] == "weekend"
    assert model.seasonalities["yearly_weekend"]["fourier_order"] == 3


@pytest.mark.parametrize("case", sorted(CASES))
def test_point_equals_prophet_predict_on_history_and_horizon(fitted, case):
    trained, frame = fitted[case]
    model = trained.model
    kernel = ForecastKernel.from_prophet(model)
    # the last year of training days (with their promo flags) and 60 days ahead, crossing
    # holidays, events and both seasons
    past = frame[frame["ds"] >= frame["ds"].iloc[-1] - pd.Timedelta(days=365)]
    future = pd.date_range(past["ds"].iloc[-1] + pd.Timedelta(days=1), periods=60, freq="D")
    days = pd.DatetimeIndex(list(past["ds"]) + list(future))
    promo = np.concatenate([past["promo"].to_numpy(), np.zeros(len(future))])

    expected = prophet_point(trained, days, promo)
    got = kernel.point(days.to_numpy().astype("datetime64[D]"), promo)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # the JSON round trip gives the same kernel
    again = ForecastKernel.from_dict(json.loads(json.dumps(kernel.to_dict())))
    np.testing.assert_array_equal(again.point(days.to_numpy(), promo), got)


@pytest.mark.parametrize("case", sorted(CASES))
def test_samples_equal_prophet_predictive_samples_for_the_same_seed(fitted, case):
    trained, frame = fitted[case]
    model = trained.model
    kernel = ForecastKernel.from_prophet(model)
    start = frame["ds"].iloc[-1] + pd.Timedelta(days=1)
    days = pd.date_range(start, periods=30, freq="D")
    promo = np.zeros(len(days))
    promo[[3, 4, 17]] = 1.0

    expected = prophet_samples(trained, days, promo, SEED)
    got = kernel.samples(days.to_numpy(), promo, n=model.uncertainty_samples, seed=SEED)
    assert got.shape == expected.shape == (30, model.uncertainty_samples)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # hence the same quantiles
    q = [0.1, 0.5, 0.9]
    np.testing.assert_allclose(
        np.quantile(got, q, axis=1), np.quantile(expected, q, axis=1), rtol=0, atol=1e-9
    )
    # another seed gives other draws
    assert not np.allclose(kernel.samples(days.to_numpy(), promo, n=50, seed=SEED + 1), got[:, :50])


def test_samples_on_days_with_gaps_and_past_days(fitted):
    """Backtest windows skip closed days and may start inside the training data: Prophet's
    sampler steps by the mean gap and leaves training days without trend uncertainty."""
    trained, frame = fitted["legacy"]
    model = trained.model
    kernel = ForecastKernel.from_prophet(model)
    last = frame["ds"].iloc[-1]
    days = pd.DatetimeIndex(
        [last - pd.Timedelta(days=2), last] + [last + pd.Timedelta(days=d) for d in (1, 2, 4, 5, 9)]
    )
    promo = np.zeros(len(days))
    expected = prophet_samples(trained, days, promo, SEED)
    got = kernel.samples(days.to_numpy(), promo, n=model.uncertainty_samples, seed=SEED)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_bad_input_is_refused(fitted):
    kernel = ForecastKernel.from_prophet(fitted["legacy"][0].model)
    days = np.arange("2018-08-01", "2018-08-05", dtype="datetime64[D]")
    with pytest.raises(ValueError, match="ascending"):
        kernel.point(days[::-1])
    with pytest.raises(ValueError, match="empty"):
        kernel.point(days[:0])
    with pytest.raises(ValueError, match="one value per day"):
        kernel.point(days, np.zeros(2))
    with pytest.raises(ValueError, match="n must be"):
        kernel.samples(days, n=0)
    with pytest.raises(ValueError, match="format"):
        ForecastKernel.from_dict({**kernel.to_dict(), "format": 99})


def test_the_kernel_is_small(fitted):
    for trained, _ in fitted.values():
        size = len(json.dumps(ForecastKernel.from_prophet(trained.model).to_dict()))
        assert size < 40_000, size
