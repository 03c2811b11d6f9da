"""The next run of an EventBridge schedule expression (for GET /api/tasks/scheduled).

Supports ``cron(min hour day-of-month month day-of-week year)`` with numbers, names, ``*``,
``?``, lists, ranges and ``/`` steps (not ``L``, ``W`` or ``#``), and ``rate(...)``, whose
next run depends on when the rule was created and so is not computed (None). The expression
is the service's NIGHTLY_SCHEDULE, so one it cannot read is a ``ConfigurationError``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from siprems.errors import ConfigurationError
from siprems.jobs.model import iso

_MONTHS = {
    m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), start=1)
}
# EventBridge: 1 = SUN ... 7 = SAT
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split(), start=1)}
_CRON = re.compile(r"^cron\((.+)\)$")


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    if text in ("*", "?"):
        return set(range(low, high + 1))
    values: set[int] = set()
    for part in text.split(","):
        # each list item has its own step: in "0,30/60" only "30/60" runs to the field's end
        base, stepped, step_text = part.partition("/")
        step = _value(step_text, None) if stepped else 1
        if base in ("*", ""):
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(base, names)
            end = high if stepped else start
        if not (low <= start <= high and low <= end <= high) or step < 1:
            raise ConfigurationError(f"cron field {text!r} out of range {low}..{high}")
        values.update(range(start, end + 1, step))
    return values


def _value(text: str, names: dict[str, int] | None) -> int:
    text = text.upper()
    if names and text in names:
        return names[text]
    if not text.isdigit():
        raise ConfigurationError(f"unsupported cron value {text!r}")
    return int(text)


def nightly_view(expression: str, enabled: bool, now: datetime) -> dict[str, object]:
    """The nightly retraining as the status routes show it: its expression, whether its rule
    is on (template parameter NightlyScheduleEnabled) and, when it is, its next run."""
    upcoming = next_run(expression, now) if enabled else None
    return {
        "schedule": expression,
        "enabled": enabled,
        "next_run": iso(upcoming) if upcoming else None,
    }


def next_run(expression: str, after: datetime | None = None) -> datetime | None:
    """The first run strictly after ``after`` (UTC), None for ``rate(...)`` or none within
    five years."""
    after = (after or datetime.now(UTC)).astimezone(UTC)
    if expression.startswith("rate("):
        return None
    match = _CRON.match(expression.strip())
    if not match:
        raise ConfigurationError(f"not a schedule expression: {expression!r}")
    fields = match.group(1).split()
    if len(fields) != 6:
        raise ConfigurationError(f"cron needs 6 fields: {expression!r}")
    minute_f, hour_f, dom_f, month_f, dow_f, year_f = fields
    minutes = _field(minute_f, 0, 59)
    hours = _field(hour_f, 0, 23)
    doms = _field(dom_f, 1, 31)
    months = _field(month_f, 1, 12, _MONTHS)
    dows = _field(dow_f, 1, 7, _DAYS)
    years = _field(year_f, 1970, 2199)
    dom_any, dow_any = dom_f in ("*", "?"), dow_f in ("*", "?")

    start = (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
    day = start.replace(hour=0, minute=0)
    for _ in range(366 * 5):
        eventbridge_dow = day.isoweekday() % 7 + 1  # Monday=1 -> 2, Sunday=7 -> 1
        if (
            day.year in years
            and day.month in months
            and (day.day in doms if not dom_any else True)
            and (eventbridge_dow in dows if not dow_any else True)
        ):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    moment = day.replace(hour=hour, minute=minute)
                    if moment >= start:
                        return moment
        day += timedelta(days=1)
    return None
