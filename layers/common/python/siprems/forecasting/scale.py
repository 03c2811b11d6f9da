"""The model's scale → demand (numpy only: the forecast path imports no pandas)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from siprems.forecasting.options import ForecastOptions


def to_original_scale(values: Any, options: ForecastOptions) -> np.ndarray:
    """Inverse of the training transform, floored at zero (demand is never negative)."""
    array = np.asarray(values, dtype=float)
    if options.log_transform:
        array = np.expm1(array)
    return np.clip(array, 0.0, None)
