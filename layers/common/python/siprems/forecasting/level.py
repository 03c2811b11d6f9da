"""The recent level: how far a run of days above (or below) the fit goes on.

Bakery demand has spells (a warm fortnight, a quiet month) that a trend and seasonalities fitted
over four years do not follow: the largest remaining forecast errors are a window's level
(docs/FORECASTING.md). A forecast therefore starts from the mean residual of the last few days
and keeps of it, for each day ahead h, the share beta_h that the training days themselves show
persisting: the least-squares slope of the residual h days later on that mean, over every day
of the training history, in [0, 1]. A product whose good and bad weeks do not persist gets
betas near 0, and so no offset. Numpy only (the forecast path imports no pandas).
"""

from __future__ import annotations

import numpy as np

# Days ahead the level is carried: the backtest's horizon, where it was measured. Beyond it
# the forecast is the model's own.
HORIZON = 28
# The largest residual (model scale) one day may add to a level: a single extreme day must
# not move a week's level.
MAX_RESIDUAL = 0.5
# Fewer (mean, later residual) pairs than this estimate nothing: beta_h = 0.
MIN_PAIRS = 30


def persisting_offsets(
    days: np.ndarray, residual: np.ndarray, *, days_back: int, horizon: int = HORIZON
) -> tuple[float, ...]:
    """Offsets (model scale) for forecast days 1..``horizon`` after the last of ``days``: the
    mean residual of its last ``days_back`` calendar days times beta_h. ``days``
    (datetime64[D], ascending, gaps allowed) are the training days, ``residual`` the
    actual minus the fit on each."""
    if days_back < 1 or len(days) == 0:
        return ()
    number = np.asarray(days, dtype="datetime64[D]").astype(np.int64)
    number -= number[0]
    series = np.full(int(number[-1]) + 1, np.nan)  # a slot per calendar day, NaN without sales
    series[number] = np.clip(residual, -MAX_RESIDUAL, MAX_RESIDUAL)
    observed = ~np.isnan(series)
    sums = np.concatenate([[0.0], np.cumsum(np.where(observed, series, 0.0))])
    counts = np.concatenate([[0], np.cumsum(observed)])
    mean = np.full(len(series), np.nan)  # mean residual of the days_back days ending on a day
    if len(series) >= days_back:
        window_sum = sums[days_back:] - sums[:-days_back]
        window_count = counts[days_back:] - counts[:-days_back]
        enough = window_count >= (days_back + 1) // 2  # at least half of them with sales
        mean[days_back - 1 :] = np.where(enough, window_sum / np.maximum(window_count, 1), np.nan)
    last = float(np.nanmean(series[-days_back:]))  # the last day always has sales
    offsets = []
    for ahead in range(1, horizon + 1):
        x, y = mean[:-ahead], series[ahead:]
        pairs = ~np.isnan(x) & ~np.isnan(y)
        x, y = x[pairs], y[pairs]
        spread = float((x * x).sum())
        beta = 0.0
        if len(x) >= MIN_PAIRS and spread > 0:
            beta = float(np.clip((x * y).sum() / spread, 0.0, 1.0))
        offsets.append(round(beta * last, 6))
    return tuple(offsets)
