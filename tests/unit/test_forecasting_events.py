"""Events and public holidays → Prophet's holidays frame, and day names for the chart."""

from __future__ import annotations

from datetime import date

from siprems.forecasting.events import (
    PUBLIC_HOLIDAY,
    SCHOOL_HOLIDAY_PREFIX,
    holiday_frame,
    holiday_names,
)
from siprems.forecasting.options import ForecastOptions
from siprems.sales.models import Event

KIEL_WEEK = [Event(name="Kieler Woche", day=date(2017, 6, 17 + i), type="custom") for i in range(9)]


def test_events_carry_the_event_window_and_repeats_count_once():
    options = ForecastOptions.legacy()
    frame = holiday_frame(KIEL_WEEK + KIEL_WEEK[:1], options, date(2017, 1, 1), date(2017, 12, 31))
    assert len(frame) == 9
    assert set(frame["lower_window"]) == {-2} and set(frame["upper_window"]) == {1}


def test_no_events_and_no_calendar_is_no_holidays():
    assert holiday_frame([], ForecastOptions.legacy(), date(2017, 1, 1), date(2017, 12, 31)) is None


def test_regional_public_holidays_cover_the_years_a_stored_model_will_forecast():
    options = ForecastOptions.legacy().with_overrides(
        holiday_country="DE", holiday_subdiv="SH", holiday_lower_window=-2, holiday_upper_window=2
    )
    frame = holiday_frame([], options, date(2016, 1, 1), date(2018, 7, 31))
    days = {(row.holiday, row.ds.date()) for row in frame.itertuples()}
    assert ("Erster Weihnachtstag", date(2016, 12, 25)) in days
    assert ("Reformationstag", date(2018, 10, 31)) in days  # in SH since 2018
    assert ("Erster Weihnachtstag", date(2021, 12, 25)) in days  # YEARS_AHEAD after the data
    assert set(frame["lower_window"]) == {-2} and set(frame["upper_window"]) == {2}


def test_grouped_public_holidays_share_one_name_but_the_chart_names_each():
    options = ForecastOptions.legacy().with_overrides(
        holiday_country="DE", holiday_subdiv="SH", holiday_grouping="single"
    )
    frame = holiday_frame(KIEL_WEEK, options, date(2017, 1, 1), date(2017, 12, 31))
    assert set(frame["holiday"]) == {"Kieler Woche", PUBLIC_HOLIDAY}
    names = holiday_names(frame, options)
    assert names[date(2017, 12, 26)] == "Zweiter Weihnachtstag"
    assert names[date(2017, 6, 20)] == "Kieler Woche"
    assert date(2017, 6, 16) not in names  # windows are not expanded in the chart


def test_special_days_are_added_only_when_enabled():
    options = ForecastOptions.legacy().with_overrides(special_days=True)
    frame = holiday_frame([], options, date(2017, 1, 1), date(2017, 12, 31))
    assert {"Heiligabend", "Silvester"} == set(frame["holiday"])


def test_school_holidays_of_the_region_are_one_effect_per_kind_and_unnamed_in_the_chart():
    options = ForecastOptions.default().with_overrides(school_holidays=True)
    frame = holiday_frame([], options, date(2017, 1, 1), date(2017, 12, 31))
    school = frame[frame["holiday"].str.startswith(SCHOOL_HOLIDAY_PREFIX)]
    summer = school[school["holiday"] == SCHOOL_HOLIDAY_PREFIX + "Sommerferien"]
    assert date(2017, 7, 24) in set(summer["ds"].dt.date)  # SH summer holidays 2017
    assert date(2017, 7, 23) not in set(summer["ds"].dt.date)
    assert set(school["lower_window"]) == {0} and set(school["upper_window"]) == {0}
    names = holiday_names(frame, options)
    assert date(2017, 7, 25) not in names  # a school holiday is not a holiday in the chart
    assert names[date(2017, 10, 3)] == "Tag der Deutschen Einheit"


def test_school_holidays_are_off_by_default_and_need_a_region():
    frame = holiday_frame([], ForecastOptions.default(), date(2017, 1, 1), date(2017, 12, 31))
    assert not frame["holiday"].str.startswith(SCHOOL_HOLIDAY_PREFIX).any()
    assert (
        holiday_frame(
            [],
            ForecastOptions.legacy().with_overrides(school_holidays=True),
            date(2017, 1, 1),
            date(2017, 12, 31),
        )
        is None
    )
