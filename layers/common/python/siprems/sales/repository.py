"""Read access to products, daily sales and prediction events (one query per method)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pg8000.native

from siprems.errors import InvalidInputError, UnknownSkuError
from siprems.sales.db import unavailable_on_lost_connection
from siprems.sales.models import DailySales, Event, Product

_PRODUCT_COLUMNS = "product_id, sku, name, category, variation, price, stock"

# One row per calendar day of the shop's time zone with sales, before the shop's today (a
# day still selling is not a day's demand; a sale dated in the future is a typing error), from
# a first day on or, when it is NULL, all of them. The LEFT JOIN tells an unknown SKU (no row)
# from a known SKU without sales (one row whose day is NULL) in the same query; the bounds
# are on the indexed column itself.
_DAILY_SALES = """
SELECT (t.transaction_date AT TIME ZONE :tz)::date AS day,
       sum(t.quantity_sold) AS quantity,
       bool_or(t.is_promo) AS promo
FROM products p
LEFT JOIN transactions t ON t.product_id = p.product_id
 AND t.transaction_date < CAST(:today AS date)::timestamp AT TIME ZONE :tz
 AND (CAST(:since AS date) IS NULL
      OR t.transaction_date >= CAST(:since AS date)::timestamp AT TIME ZONE :tz)
WHERE p.sku = :sku
GROUP BY 1
ORDER BY 1
"""


class SalesRepository:
    """``timezone``: the shop's (IANA name), whose calendar days the sales are counted in;
    ``clock`` gives the time now (tests)."""

    def __init__(
        self,
        conn: pg8000.native.Connection,
        timezone: str = "UTC",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._conn = conn
        problem = f"shop time zone {timezone!r} (SHOP_TIMEZONE: 'UTC' or an IANA Area/City name"
        # PostgreSQL reads a name without a slash as an abbreviation first ('CET' is then
        # UTC+1 all year, unlike Python's CET), and knows no 'localtime': Area/City or UTC only
        if timezone != "UTC" and "/" not in timezone:
            raise InvalidInputError(f"unsupported {problem} such as 'Europe/Berlin')")
        try:
            self._zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidInputError(f"unknown {problem} such as 'Europe/Berlin')") from exc
        self.timezone = timezone
        self._clock = clock

    def today(self) -> date:
        """The shop's current calendar day."""
        return self._clock().astimezone(self._zone).date()

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
        """Per day (the shop's calendar) on which the SKU sold, up to yesterday:
        ``sum(quantity_sold)``, ``bool_or(is_promo)``; only the days from ``since`` on when
        given (a forecast shows a window of history).

        Days without sales are absent (not zero-filled). Raises ``UnknownSkuError``.
        """
        rows = self._run(_DAILY_SALES, sku=sku, since=since, today=self.today(), tz=self.timezone)
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
