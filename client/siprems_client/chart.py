"""The forecast chart: sales history, forecast, its interval band and the events, as a PNG.

Draws the ``chartData`` rows of a forecast result (the API's answer): rows with ``historical``
are history, rows without it the forecast (``predicted``, ``lower``, ``upper``); rows with
``isHoliday`` mark an event (named by ``holidayName``).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any


def draw_chart(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    rows = result.get("chartData") or []
    if not rows:
        raise ValueError("the forecast has no chartData to draw")
    days = [date.fromisoformat(row["date"]) for row in rows]
    history = [
        (d, r["historical"])
        for d, r in zip(days, rows, strict=True)
        if r.get("historical") is not None
    ]
    forecast = [
        (d, r["predicted"], r.get("lower"), r.get("upper"))
        for d, r in zip(days, rows, strict=True)
        if r.get("historical") is None and r.get("predicted") is not None
    ]
    events = [
        (d, r.get("holidayName")) for d, r in zip(days, rows, strict=True) if r.get("isHoliday")
    ]
    figure, axes = plt.subplots(figsize=(11, 5))
    if history:
        axes.plot(*zip(*history, strict=True), color="#444", lw=1.2, label="sales (history)")
    if forecast:
        f_days = [f[0] for f in forecast]
        band = [(f[0], f[2], f[3]) for f in forecast if f[2] is not None and f[3] is not None]
        if band:
            axes.fill_between(
                [b[0] for b in band],
                [b[1] for b in band],
                [b[2] for b in band],
                color="#1f77b4",
                alpha=0.2,
                label="interval",
            )
        axes.plot(f_days, [f[1] for f in forecast], color="#1f77b4", lw=2, label="forecast")
        axes.axvline(f_days[0], color="#888", lw=0.8, ls=":")
    axes.set_ylim(bottom=0)
    top = axes.get_ylim()[1]
    for index, (first, last, name) in enumerate(event_spans(events)):
        # An event of several days is one shaded span, named once.
        axes.axvspan(
            first,
            last + timedelta(days=1),
            color="#d62728",
            alpha=0.12,
            lw=0,
            label="events" if index == 0 else None,
        )
        if name:
            axes.annotate(
                name, (first, top), rotation=90, fontsize=7, va="top", ha="right", color="#d62728"
            )
    days_ahead = result.get("forecast_days", len(forecast))
    title = f"{result.get('product_sku', '')}: {days_ahead}-day forecast"
    if result.get("accuracy") is not None:
        title += f" (hold-out accuracy {result['accuracy']} %)"
    axes.set_title(title)
    axes.set_ylabel("units a day")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.25)
    figure.autofmt_xdate()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def event_spans(events: list[tuple[date, str | None]]) -> list[tuple[date, date, str | None]]:
    """Consecutive days of the same event as one (first, last, name) span."""
    spans: list[tuple[date, date, str | None]] = []
    for day, name in sorted(events, key=lambda e: e[0]):
        if spans and spans[-1][2] == name and (day - spans[-1][1]).days <= 1:
            spans[-1] = (spans[-1][0], day, name)
        else:
            spans.append((day, day, name))
    return spans
