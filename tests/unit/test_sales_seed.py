"""How the Kiel CSV rows become products, transactions and events (no database)."""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from siprems.errors import InvalidInputError
from siprems.sales import seed

KIEL_DATA = Path(__file__).resolve().parents[2] / "data" / "kiel-bakery"


@pytest.mark.parametrize(
    ("turnover", "price", "expected"),
    [
        ("148.828353112183", "4.00", 38),  # 37.2 -> 38
        ("12.00", "4.00", 3),  # an exact multiple stays
        ("0.30", "0.10", 3),  # exact in decimal (float division gives 2.9999999999999996)
        ("0.01", "8.00", 1),  # at least one unit
        ("0", "6.00", 1),
    ],
)
def test_quantity_is_at_least_one_and_rounded_up(turnover, price, expected):
    assert seed.quantity_sold(Decimal(turnover), Decimal(price)) == expected


def test_first_csv_line_becomes_a_bread_transaction():
    row = {"id": "1307011", "Datum": "2013-07-01", "Warengruppe": "1", "Umsatz": "148.828353112183"}
    assert seed.transaction_from_row(row) == seed.SeedTransaction(
        "BRD-001", date(2013, 7, 1), 38, Decimal("4.00")
    )


@pytest.mark.parametrize(
    "row",
    [
        {"id": "1", "Datum": "2013-07-01", "Warengruppe": "7", "Umsatz": "1"},
        {"id": "1", "Datum": "2013-13-01", "Warengruppe": "1", "Umsatz": "1"},
        {"id": "1", "Datum": "2013-07-01", "Warengruppe": "1", "Umsatz": "abc"},
        {"id": "1", "Datum": "2013-07-01", "Warengruppe": "1", "Umsatz": "-3"},
        {"id": "1", "Datum": "2013-07-01", "Warengruppe": "1", "Umsatz": "NaN"},
    ],
)
def test_bad_rows_are_rejected(row):
    with pytest.raises(InvalidInputError, match="sales.csv"):
        seed.transaction_from_row(row)


def test_products_are_those_of_the_data_readme():
    table = {
        p.sku: (p.group, p.name, p.category, str(p.price), p.stock) for p in seed.KIEL_PRODUCTS
    }
    assert table == {
        "BRD-001": (1, "Roti Tawar (bread)", "Bread", "4.00", 50),
        "RLL-001": (2, "Rolls", "Rolls", "2.50", 100),
        "CRS-001": (3, "Croissant", "Pastry", "3.50", 40),
        "CNF-001": (4, "Confectionery", "Confectionery", "5.00", 30),
        "CKE-001": (5, "Cake", "Cake", "8.00", 20),
        "SEA-001": (6, "Seasonal bread", "Seasonal", "6.00", 25),
    }


def test_whole_files_read_as_the_readme_says():
    seed.verify_checksums(KIEL_DATA)
    transactions = seed.read_transactions(KIEL_DATA)
    assert len(transactions) == 9334
    days_per_sku = {}
    for t in transactions:
        days_per_sku.setdefault(t.sku, set()).add(t.day)
    assert {sku: len(days) for sku, days in days_per_sku.items()} == {
        "BRD-001": 1819,
        "RLL-001": 1819,
        "CRS-001": 1819,
        "CNF-001": 1766,
        "CKE-001": 1819,
        "SEA-001": 292,
    }
    kiel_week = seed.read_kiel_week_days(KIEL_DATA)
    assert len(kiel_week) == 72
    assert (min(kiel_week), max(kiel_week)) == (date(2012, 6, 16), date(2019, 6, 30))


def test_changed_file_fails_the_checksum(tmp_path):
    shutil.copy(KIEL_DATA / "kieler_woche.csv", tmp_path / "kieler_woche.csv")
    (tmp_path / "sales.csv").write_bytes((KIEL_DATA / "sales.csv").read_bytes() + b"\n")
    with pytest.raises(InvalidInputError, match=r"sales\.csv is not the published Kiel data"):
        seed.verify_checksums(tmp_path)


def test_missing_file_fails_clearly(tmp_path):
    with pytest.raises(InvalidInputError, match="missing"):
        seed.verify_checksums(tmp_path)
