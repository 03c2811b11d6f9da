"""Request bodies and parameters of the API (validated by Powertools, shown in OpenAPI)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

Sku = Annotated[str, Field(pattern=SKU_PATTERN, description="Product SKU, e.g. BRD-001")]
Days = Annotated[int, Field(ge=1, le=365, strict=True, description="Days to forecast (1..365)")]


class PredictRequest(BaseModel):
    product_sku: Sku
    days: Days = 7
