"""Typed records read from the sales database (plain dataclasses: no pandas in the layer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class Product:
    product_id: int
    sku: str
    name: str
    category: str | None
    variation: str | None
    price: Decimal
    stock: int


@dataclass(frozen=True)
class DailySales:
    """A SKU's sales per calendar day on which it sold (days without a row are absent).

    ``quantity[i]`` is ``sum(quantity_sold)`` and ``promo[i]`` is ``max(is_promo)`` of ``days[i]``.
    """

    sku: str
    days: tuple[date, ...]
    quantity: tuple[float, ...]
    promo: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.days)


@dataclass(frozen=True)
class Event:
    """A row of ``events`` that is included in prediction (becomes a Prophet holiday)."""

    name: str
    day: date
    type: str  # holiday | promotion | seasonal | custom
