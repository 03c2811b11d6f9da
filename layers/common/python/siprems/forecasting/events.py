"""Events and public holidays → Prophet's holidays frame (holiday, ds, lower/upper window)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from siprems.forecasting.options import ForecastOptions
    from siprems.sales.models import Event

HOLIDAY_COLUMNS = ["holiday", "ds", "lower_window", "upper_window"]
# Shop days that are not public holidays in Germany but change demand like one.
SPECIAL_DAYS = {(12, 24): "Heiligabend", (12, 31): "Silvester"}
PUBLIC_HOLIDAY = "Feiertag"  # the shared name when public holidays are grouped
# School holidays span weeks: they shape demand but are not named in the chart.
SCHOOL_HOLIDAY_PREFIX = "Schulferien: "
# Holidays are generated this many years past the training data, so a stored model can
# still name holidays in the horizon of any forecast it will serve.
YEARS_AHEAD = 3


def holiday_frame(
    events: Iterable[Event], options: ForecastOptions, first_day: date, last_day: date
) -> pd.DataFrame | None:
    """Events (with the event window), public holidays and special days, or None if empty."""
    rows: list[tuple[str, pd.Timestamp, int, int]] = []
    for event in events:
        rows.append(
            (
                event.name,
                pd.Timestamp(event.day),
                options.event_lower_window,
                options.event_upper_window,
            )
        )
    years = range(first_day.year, last_day.year + YEARS_AHEAD + 1)
    if options.holiday_country:
        import holidays

        calendar = holidays.country_holidays(
            options.holiday_country, subdiv=options.holiday_subdiv, years=years
        )
        for day, name in sorted(calendar.items()):
            rows.append(
                (
                    PUBLIC_HOLIDAY if options.holiday_grouping == "single" else name,
                    pd.Timestamp(day),
                    options.holiday_lower_window,
                    options.holiday_upper_window,
                )
            )
    if options.school_holidays and options.holiday_country:
        import holidays

        school = holidays.country_holidays(
            options.holiday_country,
            subdiv=options.holiday_subdiv,
            years=years,
            categories=("school",),
        )
        for day, name in sorted(school.items()):
            rows.append((SCHOOL_HOLIDAY_PREFIX + name, pd.Timestamp(day), 0, 0))
    if options.special_days:
        for year in years:
            for (month, day), name in SPECIAL_DAYS.items():
                rows.append((name, pd.Timestamp(year, month, day), 0, 0))
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=HOLIDAY_COLUMNS)
    # One row per (name, day): a repeated event must not count twice.
    return frame.drop_duplicates(["holiday", "ds"]).reset_index(drop=True)


def holiday_names(
    holidays: pd.DataFrame | None, options: ForecastOptions | None = None
) -> dict[date, str]:
    """Day → name(s) of the holidays and events on that very day (windows not expanded).

    Grouped public holidays are named from the calendar again, so the chart still says
    which holiday a day is.
    """
    if holidays is None or holidays.empty:
        return {}
    names: dict[date, list[str]] = {}
    grouped: set[date] = set()
    for row in holidays.itertuples(index=False):
        day = pd.Timestamp(row.ds).date()
        if row.holiday == PUBLIC_HOLIDAY:
            grouped.add(day)
            continue
        if row.holiday.startswith(SCHOOL_HOLIDAY_PREFIX):
            continue
        names.setdefault(day, [])
        if row.holiday not in names[day]:
            names[day].append(row.holiday)
    if grouped and options is not None and options.holiday_country:
        import holidays as holiday_calendars

        calendar = holiday_calendars.country_holidays(
            options.holiday_country,
            subdiv=options.holiday_subdiv,
            years=sorted({day.year for day in grouped}),
        )
        for day in sorted(grouped):
            names.setdefault(day, []).append(calendar.get(day) or PUBLIC_HOLIDAY)
    return {day: ", ".join(values) for day, values in names.items()}
