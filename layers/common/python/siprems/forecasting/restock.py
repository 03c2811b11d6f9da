"""Restock recommendation from a horizon forecast.

- ``predictedDemand``: Σ p50 over the horizon (rounded to whole units).
- ``safetyStock``: how far the ``service_level`` quantile of the *total* horizon demand
  lies above that sum. The total's quantile comes from Prophet's sample paths, so it is
  not the (too large) sum of daily upper quantiles.
- ``recommendedRestock``: max(0, demand + safety stock − current stock).
- ``urgency`` (``daysOfCover`` = whole forecast days the current stock covers at p50):
  ``high``   the stock runs out within the first week (or within the horizon if shorter);
  ``medium`` it lasts the week but a restock is still recommended;
  ``low``    no restock needed for the horizon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

URGENT_WITHIN_DAYS = 7
DEFAULT_SERVICE_LEVEL = 0.9


def days_of_cover(stock: float, daily_demand: Sequence[float]) -> int:
    """Number of leading days whose cumulative demand the stock fully covers."""
    cumulative = np.cumsum(np.asarray(daily_demand, dtype=float))
    return int(np.searchsorted(cumulative, stock, side="right"))


def urgency(cover_days: int, horizon_days: int, restock: int) -> str:
    if cover_days < min(URGENT_WITHIN_DAYS, horizon_days):
        return "high"
    if restock > 0:
        return "medium"
    return "low"


def recommend(
    *,
    product_id: int | str,
    product_name: str,
    current_stock: int,
    daily_p50: Sequence[float],
    horizon_totals: Sequence[float] | None = None,
    service_level: float = DEFAULT_SERVICE_LEVEL,
) -> dict[str, Any]:
    if not 0.5 <= service_level < 1:
        raise ValueError("service_level must be in [0.5, 1)")
    demand = float(np.sum(daily_p50))
    upper_total = demand
    if horizon_totals is not None and len(horizon_totals) > 1:
        upper_total = float(np.quantile(np.asarray(horizon_totals, dtype=float), service_level))
    safety = max(0, math.ceil(upper_total - demand - 1e-9))
    demand_units = round(demand)
    restock = max(0, demand_units + safety - int(current_stock))
    cover = days_of_cover(current_stock, daily_p50)
    return {
        "productId": product_id,
        "productName": product_name,
        "currentStock": int(current_stock),
        "predictedDemand": demand_units,
        "recommendedRestock": restock,
        "urgency": urgency(cover, len(daily_p50), restock),
        "safetyStock": safety,
        "daysOfCover": cover,
        "serviceLevel": service_level,
    }
