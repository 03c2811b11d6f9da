"""Loads the Kiel bakery data (``data/kiel-bakery``) into the sales schema, as the original did.

Exactly the rules of the data README:

- six products, one per product group (``KIEL_PRODUCTS``);
- one transaction per product and day: ``quantity_sold = max(1, ceil(Umsatz / price))`` (computed
  in decimal arithmetic, so an exact multiple of the price is not pushed up by float rounding),
  ``price_per_unit = price``, ``is_promo = false``;
- every Kiel Week day an ``events`` row ``("Kieler Woche", custom, included in prediction)``.

A transaction's ``transaction_date`` is **noon UTC** of its day: the repository groups by the
calendar day of the shop's time zone (``SHOP_TIMEZONE``, UTC by default), and noon keeps the
day the same for any zone within ±11 hours of UTC (Kiel is UTC+1/+2).

Idempotent: one transaction under an advisory lock; products are inserted unless their SKU exists
(existing products are left as they are), transactions and events unless an identical one exists
(same product and timestamp; same name and day). Running it twice inserts nothing the second time.
The CSV files are checked against the sha256 sums of the README first.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pg8000.native

from siprems.errors import InvalidInputError
from siprems.sales.db import unavailable_on_lost_connection

SALES_FILE = "sales.csv"
KIEL_WEEK_FILE = "kieler_woche.csv"
SHA256 = {
    SALES_FILE: "099a2e609d3ef7286a465f34cb0e62ffb572ca4b454b22aa887c42ad3952dd62",
    KIEL_WEEK_FILE: "f1e8db6ea28331cce363827090484d2d1b6240e31c1c80dfc1ced1287565473a",
}
KIEL_WEEK_EVENT = "Kieler Woche"
KIEL_WEEK_DESCRIPTION = "Kiel Week sailing festival"
SEED_LOCK_KEY = 0x7369707265_7364  # advisory lock serialising concurrent seed runs


@dataclass(frozen=True)
class SeedProduct:
    group: int  # Warengruppe in sales.csv
    sku: str
    name: str
    category: str
    price: Decimal
    stock: int


KIEL_PRODUCTS: tuple[SeedProduct, ...] = (
    SeedProduct(1, "BRD-001", "Roti Tawar (bread)", "Bread", Decimal("4.00"), 50),
    SeedProduct(2, "RLL-001", "Rolls", "Rolls", Decimal("2.50"), 100),
    SeedProduct(3, "CRS-001", "Croissant", "Pastry", Decimal("3.50"), 40),
    SeedProduct(4, "CNF-001", "Confectionery", "Confectionery", Decimal("5.00"), 30),
    SeedProduct(5, "CKE-001", "Cake", "Cake", Decimal("8.00"), 20),
    SeedProduct(6, "SEA-001", "Seasonal bread", "Seasonal", Decimal("6.00"), 25),
)
_BY_GROUP = {product.group: product for product in KIEL_PRODUCTS}


@dataclass(frozen=True)
class SeedTransaction:
    sku: str
    day: date
    quantity_sold: int
    price_per_unit: Decimal


@dataclass(frozen=True)
class SeedReport:
    products_inserted: int
    transactions_inserted: int
    events_inserted: int
    products: int  # rows of the Kiel SKUs in the database after the run
    transactions: int  # their transactions after the run
    events: int  # Kiel Week events after the run
    seconds: float

    def summary(self) -> str:
        return (
            f"Kiel seed: {self.products} products, {self.transactions} transactions, "
            f"{self.events} events (inserted {self.products_inserted}/"
            f"{self.transactions_inserted}/{self.events_inserted}) in {self.seconds:.2f} s"
        )


def quantity_sold(turnover: Decimal, price: Decimal) -> int:
    """Units sold on a day from its turnover: ``max(1, ceil(Umsatz / price))``."""
    return max(1, math.ceil(turnover / price))


def transaction_from_row(row: dict[str, str]) -> SeedTransaction:
    """One ``sales.csv`` row (``id,Datum,Warengruppe,Umsatz``) as the transaction it becomes."""
    try:
        product = _BY_GROUP[int(row["Warengruppe"])]
        turnover = Decimal(row["Umsatz"])
        day = date.fromisoformat(row["Datum"])
    except (KeyError, ValueError, InvalidOperation) as exc:
        raise InvalidInputError(f"bad sales.csv row {row!r}: {exc}") from None
    if not turnover.is_finite() or turnover < 0:
        raise InvalidInputError(f"bad sales.csv row {row!r}: turnover must be >= 0")
    return SeedTransaction(product.sku, day, quantity_sold(turnover, product.price), product.price)


def verify_checksums(data_dir: Path) -> None:
    """Fails unless both CSV files are exactly the ones the data README describes."""
    for name, expected in SHA256.items():
        path = data_dir / name
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise InvalidInputError(f"Kiel data file missing: {path}") from None
        if actual != expected:
            raise InvalidInputError(
                f"{path} is not the published Kiel data: sha256 {actual}, expected {expected}"
            )


def read_transactions(data_dir: Path) -> list[SeedTransaction]:
    with open(data_dir / SALES_FILE, newline="", encoding="utf-8") as handle:
        return [transaction_from_row(row) for row in csv.DictReader(handle)]


def read_kiel_week_days(data_dir: Path) -> list[date]:
    with open(data_dir / KIEL_WEEK_FILE, newline="", encoding="utf-8") as handle:
        return [
            date.fromisoformat(row["Datum"])
            for row in csv.DictReader(handle)
            if row["KielerWoche"].strip() == "1"
        ]


def seed_kiel(conn: pg8000.native.Connection, data_dir: Path | str) -> SeedReport:
    """Loads the Kiel data into a migrated database (see the module docstring); idempotent."""
    started = time.perf_counter()
    data_dir = Path(data_dir)
    verify_checksums(data_dir)
    transactions = read_transactions(data_dir)
    kiel_week = read_kiel_week_days(data_dir)
    skus = [p.sku for p in KIEL_PRODUCTS]

    with unavailable_on_lost_connection():
        conn.run("START TRANSACTION")
        try:
            conn.run("SELECT pg_advisory_xact_lock(:key)", key=SEED_LOCK_KEY)
            products_inserted = conn.run(
                "INSERT INTO products (sku, name, category, price, stock)"
                " SELECT * FROM unnest(CAST(:skus AS text[]), CAST(:names AS text[]),"
                "   CAST(:categories AS text[]), CAST(:prices AS numeric[]),"
                "   CAST(:stocks AS int[]))"
                " ON CONFLICT (sku) DO NOTHING RETURNING product_id",
                skus=skus,
                names=[p.name for p in KIEL_PRODUCTS],
                categories=[p.category for p in KIEL_PRODUCTS],
                prices=[str(p.price) for p in KIEL_PRODUCTS],
                stocks=[p.stock for p in KIEL_PRODUCTS],
            )
            # All rows in one statement (one round trip); noon UTC of each day, whatever the
            # session time zone; rows that exist already are skipped.
            transactions_inserted = conn.run(
                "INSERT INTO transactions"
                " (product_id, quantity_sold, price_per_unit, transaction_date, is_promo)"
                " SELECT p.product_id, x.quantity, x.price, x.at, false"
                " FROM (SELECT sku, quantity, price,"
                "       (day + time '12:00') AT TIME ZONE 'UTC' AS at"
                "     FROM unnest(CAST(:skus AS text[]), CAST(:days AS date[]),"
                "       CAST(:quantities AS int[]), CAST(:prices AS numeric[]))"
                "       AS u(sku, day, quantity, price)) AS x"
                " JOIN products p ON p.sku = x.sku"
                " WHERE NOT EXISTS (SELECT 1 FROM transactions t"
                "   WHERE t.product_id = p.product_id AND t.transaction_date = x.at)"
                " RETURNING 1",
                skus=[t.sku for t in transactions],
                days=[t.day.isoformat() for t in transactions],
                quantities=[t.quantity_sold for t in transactions],
                prices=[str(t.price_per_unit) for t in transactions],
            )
            events_inserted = conn.run(
                "INSERT INTO events"
                " (event_name, event_date, type, description, include_in_prediction)"
                " SELECT CAST(:name AS varchar), d, 'custom', :description, true"
                " FROM unnest(CAST(:days AS date[])) AS d"
                " WHERE NOT EXISTS (SELECT 1 FROM events e"
                "   WHERE e.event_name = CAST(:name AS varchar) AND e.event_date = d)"
                " RETURNING 1",
                name=KIEL_WEEK_EVENT,
                description=KIEL_WEEK_DESCRIPTION,
                days=[d.isoformat() for d in kiel_week],
            )
            ((products, transactions_total, events),) = conn.run(
                "SELECT (SELECT count(*) FROM products WHERE sku = ANY(CAST(:skus AS text[]))),"
                " (SELECT count(*) FROM transactions t JOIN products p USING (product_id)"
                "   WHERE p.sku = ANY(CAST(:skus AS text[]))),"
                " (SELECT count(*) FROM events WHERE event_name = :name)",
                skus=skus,
                name=KIEL_WEEK_EVENT,
            )
            conn.run("COMMIT")
        except BaseException:
            try:
                conn.run("ROLLBACK")
            except Exception:  # noqa: S110 - the connection is gone; the original error matters
                pass
            raise

    return SeedReport(
        products_inserted=len(products_inserted),
        transactions_inserted=len(transactions_inserted),
        events_inserted=len(events_inserted),
        products=products,
        transactions=transactions_total,
        events=events,
        seconds=time.perf_counter() - started,
    )
