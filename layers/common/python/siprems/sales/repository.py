"""Read access to products, daily sales and prediction events (one query per method)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pg8000.native

from siprems.errors import UnknownSkuError
from siprems.sales.db import unavailable_on_lost_connection
from siprems.sales.models import DailySales, Event, Product

_PRODUCT_COLUMNS = "product_id, sku, name, category, variation, price, stock"

# One row per UTC calendar day with sales (from a first day, or all of them when it is
# NULL). The LEFT JOIN tells an unknown SKU (no row) from a known SKU without sales (one row
# whose day is NULL) in the same query; the bound is on the indexed column itself.
_DAILY_SALES = """
SELECT (t.transaction_date AT TIME ZONE 'UTC')::date AS day,
       sum(t.quantity_sold) AS quantity,
       bool_or(t.is_promo) AS promo
FROM products p
LEFT JOIN transactions t ON t.product_id = p.product_id
 AND (CAST(:since AS date) IS NULL
      OR t.transaction_date >= CAST(:since AS date)::timestamp AT TIME ZONE 'UTC')
WHERE p.sku = :sku
GROUP BY 1
ORDER BY 1
"""


class SalesRepository:
    def __init__(self, conn: pg8000.native.Connection) -> None:
        self._conn = conn

    def _run(self, sql: str, **params: Any) -> list[list[Any]]:
        with unavailable_on_lost_connection():
            return self._conn.run(sql, **params)

    def get_product(self, sku: str) -> Product:
        rows = self._run(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE sku = :sku", sku=sku)
        if not rows:
            raise UnknownSkuError(sku)
        return Product(*rows[0])

    def product_exists(self, sku: str) -> bool:
        return bool(self._run("SELECT 1 FROM products WHERE sku = :sku", sku=sku))

    def list_skus(self) -> list[str]:
        return [row[0] for row in self._run("SELECT sku FROM products ORDER BY sku")]

    def list_products(self) -> list[Product]:
        rows = self._run(f"SELECT {_PRODUCT_COLUMNS} FROM products ORDER BY sku")
        return [Product(*row) for row in rows]

    def daily_sales(self, sku: str, since: date | None = None) -> DailySales:
        """Per UTC day on which the SKU sold: ``sum(quantity_sold)``, ``bool_or(is_promo)``;
        only the days from ``since`` on when given (a forecast shows a window of history).

        Days without sales are absent (not zero-filled). Raises ``UnknownSkuError``.
        """
        rows = self._run(_DAILY_SALES, sku=sku, since=since)
        if not rows:
            raise UnknownSkuError(sku)
        rows = [row for row in rows if row[0] is not None]
        return DailySales(
            sku=sku,
            days=tuple(row[0] for row in rows),
            quantity=tuple(float(row[1]) for row in rows),
            promo=tuple(bool(row[2]) for row in rows),
        )

    def prediction_events(self) -> list[Event]:
        rows = self._run(
            "SELECT event_name, event_date, type FROM events"
            " WHERE include_in_prediction ORDER BY event_date, event_name"
        )
        return [Event(name=name, day=day, type=type_) for name, day, type_ in rows]
