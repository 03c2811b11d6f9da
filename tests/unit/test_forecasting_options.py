"""ForecastOptions: the original settings, the improved ones, a stable hash, overrides."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from siprems.errors import InvalidInputError
from siprems.forecasting.options import ForecastOptions


def test_legacy_holds_every_option_of_the_original():
    legacy = ForecastOptions.legacy()
    assert legacy.log_transform is True
    assert legacy.outlier_sigma == 3.5
    assert legacy.min_days == 5
    assert legacy.yearly_seasonality is True and legacy.weekly_seasonality is True
    assert legacy.seasonality_mode == "multiplicative"
    assert legacy.changepoint_prior_scale == 0.05
    assert legacy.holidays_prior_scale == 10
    assert legacy.interval_width == 0.95
    assert legacy.monthly_seasonality is True
    assert (legacy.monthly_period, legacy.monthly_fourier_order) == (30.5, 15)
    assert legacy.promo_regressor is True
    assert (legacy.event_lower_window, legacy.event_upper_window) == (-2, 1)
    assert (legacy.correction_min, legacy.correction_max) == (0.85, 1.15)
    assert legacy.holiday_country is None
    assert legacy.weekend_yearly_order is None  # one yearly curve for every day


def test_default_differs_from_legacy():
    assert ForecastOptions.default() != ForecastOptions.legacy()
    assert ForecastOptions.default().config_hash() != ForecastOptions.legacy().config_hash()


def test_config_hash_is_stable_and_changes_with_any_option():
    first = ForecastOptions.default().config_hash()
    assert first == ForecastOptions.default().config_hash()
    assert len(first) == 16 and int(first, 16) >= 0
    assert ForecastOptions.default().with_overrides(interval_width=0.9).config_hash() != first


def test_config_hash_of_the_legacy_settings_never_changes_by_accident():
    # A new option must default to the original behaviour in legacy(); if this hash changes,
    # stored legacy models are reported as trained with other options.
    assert ForecastOptions.legacy() == ForecastOptions.from_dict(ForecastOptions.legacy().to_dict())


def test_round_trip_through_a_dict():
    options = ForecastOptions.default()
    assert ForecastOptions.from_dict(options.to_dict()) == options


def test_unknown_and_invalid_overrides_are_input_errors():
    with pytest.raises(InvalidInputError, match="unknown forecast options: colour"):
        ForecastOptions.default().with_overrides(colour="red")
    with pytest.raises(InvalidInputError, match="interval_width"):
        ForecastOptions(interval_width=1.5)
    with pytest.raises(InvalidInputError, match="missing_days"):
        ForecastOptions(missing_days="interpolate")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="outlier_scope"):
        ForecastOptions(outlier_scope="month")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="outlier_action"):
        ForecastOptions(outlier_action="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="n_changepoints"):
        ForecastOptions(n_changepoints=-1)
    with pytest.raises(InvalidInputError, match="weekly_prior_scale"):
        ForecastOptions(weekly_prior_scale=0.0)
    with pytest.raises(InvalidInputError, match="weekend_yearly_order"):
        ForecastOptions(weekend_yearly_order=0)


def test_settings_select_the_profile_and_apply_json_overrides():
    settings = SimpleNamespace(
        forecast_profile="legacy", forecast_overrides='{"changepoint_prior_scale": 0.2}'
    )
    options = ForecastOptions.from_settings(settings)
    assert options == ForecastOptions.legacy().with_overrides(changepoint_prior_scale=0.2)
    assert (
        ForecastOptions.from_settings(
            SimpleNamespace(forecast_profile="default", forecast_overrides=None)
        )
        == ForecastOptions.default()
    )


def test_bad_settings_are_input_errors():
    with pytest.raises(InvalidInputError, match="unknown forecast profile"):
        ForecastOptions.from_settings(
            SimpleNamespace(forecast_profile="fast", forecast_overrides=None)
        )
    with pytest.raises(InvalidInputError, match="not JSON"):
        ForecastOptions.from_settings(
            SimpleNamespace(forecast_profile="default", forecast_overrides="{oops")
        )
