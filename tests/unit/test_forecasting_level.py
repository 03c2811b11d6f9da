"""The recent level: offsets from residuals whose level persists, or does not."""

from __future__ import annotations

import numpy as np
import pytest
from siprems.errors import InvalidInputError
from siprems.forecasting import level
from siprems.forecasting.options import ForecastOptions
from siprems.forecasting.predict import ServingModel, recent_level_offsets

DAYS = np.datetime64("2016-01-01") + np.arange(1000)


def spells(rng: np.random.Generator, last: float) -> np.ndarray:
    """Residuals with a level that holds for about a month at a time, ending at ``last``."""
    values = np.repeat(rng.normal(0, 0.15, 40), 25)[: len(DAYS)] + rng.normal(0, 0.05, len(DAYS))
    values[-14:] = last
    return values


def test_a_persisting_level_is_carried_and_fades_with_the_days_ahead():
    offsets = level.persisting_offsets(DAYS, spells(np.random.default_rng(1), 0.2), days_back=7)
    assert len(offsets) == level.HORIZON
    assert all(0 <= value <= 0.2 for value in offsets)  # same sign, at most the level
    assert offsets[0] > 0.15  # most of a spell's level is still there the next day
    assert offsets == tuple(sorted(offsets, reverse=True))  # and fades with the days ahead
    assert offsets[-1] < 0.02  # spells last about 25 days: little is left four weeks on
    below = level.persisting_offsets(DAYS, spells(np.random.default_rng(1), -0.2), days_back=7)
    assert below[0] < -0.15 and all(value <= 0 for value in below)


def test_residuals_without_persistence_give_next_to_no_offset():
    noise = np.random.default_rng(2).normal(0, 0.15, len(DAYS))
    noise[-7:] = 0.2  # a good last week, in a history where good weeks never lasted
    offsets = level.persisting_offsets(DAYS, noise, days_back=7)
    assert max(abs(value) for value in offsets) < 0.02


def test_days_without_sales_are_gaps_and_one_extreme_day_is_bounded():
    rng = np.random.default_rng(3)
    residual = spells(rng, 0.0)
    residual[-1] = 5.0  # one absurd day: counts as MAX_RESIDUAL in the last week's mean
    keep = np.ones(len(DAYS), dtype=bool)
    keep[100:160] = False  # closed for two months
    offsets = level.persisting_offsets(DAYS[keep], residual[keep], days_back=7)
    assert all(0 <= value <= level.MAX_RESIDUAL / 7 for value in offsets)


def test_too_short_a_history_estimates_nothing():
    assert level.persisting_offsets(DAYS[:20], np.full(20, 0.3), days_back=7) == (0.0,) * 28
    assert level.persisting_offsets(DAYS, np.zeros(len(DAYS)), days_back=0) == ()


def test_the_offsets_apply_to_the_days_after_the_training_and_only_to_the_first_ones():
    model = ServingModel(
        kernel=None,  # type: ignore[arg-type]
        options=ForecastOptions.default(),
        correction_factor=1.0,
        last_day=DAYS[-1].astype(object),
        recent_level=(0.3, 0.2, 0.1),
    )
    days = DAYS[-1] + np.arange(-1, 5)  # a past day, the last training day, days 1..4 ahead
    assert recent_level_offsets(model, days).tolist() == [0, 0, 0.3, 0.2, 0.1, 0]


def test_the_original_settings_carry_no_level_and_bad_values_are_refused():
    assert ForecastOptions.legacy().recent_level_days is None
    assert ForecastOptions.default().recent_level_days == 7
    with pytest.raises(InvalidInputError, match="recent_level_days"):
        ForecastOptions(recent_level_days=0)
