"""The sales repository against a real PostgreSQL holding the Kiel data."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from siprems.errors import DatabaseUnavailableError, UnknownSkuError
from siprems.sales.models import DailySales, Event, Product
from siprems.sales.repository import SalesRepository

KIEL_DATA = Path(__file__).resolve().parents[2] / "data" / "kiel-bakery"
PRICES = {1: ("BRD-001", 4.0), 2: ("RLL-001", 2.5), 3: ("CRS-001", 3.5), 4: ("CNF-001", 5.0)}
PRICES |= {5: ("CKE-001", 8.0), 6: ("SEA-001", 6.0)}


def add_cake_sales(conn, *sales) -> None:
    """Transactions of CKE-001: (quantity, timestamp with offset[, promo])."""
    (product_id,) = conn.run("SELECT product_id FROM products WHERE sku = 'CKE-001'")[0]
    for quantity, when, *promo in sales:
        conn.run(
            "INSERT INTO transactions (product_id, quantity_sold, price_per_unit,"
            " transaction_date, is_promo) VALUES (:p, :q, 6.00, :t, :promo)",
            p=product_id,
            q=quantity,
            t=when,
            promo=bool(promo and promo[0]),
        )


@pytest.fixture
def rolled_back(sales_conn):
    """The test's writes happen in a transaction that is rolled back (the data stays shared)."""
    sales_conn.run("START TRANSACTION")
    yield sales_conn
    sales_conn.run("ROLLBACK")


def test_skus_and_products(sales_repo):
    skus = ["BRD-001", "CKE-001", "CNF-001", "CRS-001", "RLL-001", "SEA-001"]
    assert sales_repo.list_skus() == skus
    products = sales_repo.list_products()
    assert [p.sku for p in products] == skus
    bread = sales_repo.get_product("BRD-001")
    assert isinstance(bread, Product) and bread in products
    assert (bread.name, bread.category, bread.variation) == ("Roti Tawar (bread)", "Bread", None)
    assert (bread.price, bread.stock) == (Decimal("4.00"), 50)
    assert sales_repo.product_exists("SEA-001") and not sales_repo.product_exists("NOPE-1")


def test_unknown_sku_raises(sales_repo):
    with pytest.raises(UnknownSkuError) as info:
        sales_repo.get_product("NOPE-1")
    assert info.value.http_status == 404
    with pytest.raises(UnknownSkuError):
        sales_repo.daily_sales("NOPE-1")


@pytest.mark.parametrize(
    ("sku", "days", "first", "last"),
    [
        ("BRD-001", 1819, date(2013, 7, 1), date(2018, 7, 31)),
        ("CNF-001", 1766, None, None),
        ("SEA-001", 292, date(2013, 10, 24), date(2017, 12, 27)),
    ],
)
def test_daily_sales_has_one_entry_per_day_with_sales(sales_repo, sku, days, first, last):
    series = sales_repo.daily_sales(sku)
    assert isinstance(series, DailySales) and series.sku == sku
    assert len(series) == days == len(series.quantity) == len(series.promo)
    assert list(series.days) == sorted(set(series.days))
    assert first is None or (series.days[0], series.days[-1]) == (first, last)
    assert not any(series.promo)


def _quantities_from_csv() -> dict[str, dict[date, float]]:
    """Recomputes max(1, ceil(Umsatz / price)) from the CSV, independently of the seed code."""
    expected = defaultdict(dict)
    with open(KIEL_DATA / "sales.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            sku, price = PRICES[int(row["Warengruppe"])]
            day = date.fromisoformat(row["Datum"])
            expected[sku][day] = float(max(1, math.ceil(float(row["Umsatz"]) / price)))
    return expected


def test_daily_sales_follow_the_csv_rule_on_every_day(sales_repo):
    expected = _quantities_from_csv()
    for sku, by_day in expected.items():
        series = sales_repo.daily_sales(sku)
        assert dict(zip(series.days, series.quantity, strict=True)) == by_day, sku


def test_days_do_not_depend_on_the_session_time_zone(sales_conn):
    repo = SalesRepository(sales_conn)
    reference = repo.daily_sales("CRS-001")
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/Berlin"):
        sales_conn.run(f"SET TIME ZONE '{zone}'")
        assert repo.daily_sales("CRS-001") == reference


def test_several_transactions_of_a_day_are_summed_and_promo_is_any(rolled_back):
    repo = SalesRepository(rolled_back)
    before = repo.daily_sales("CKE-001")
    index = before.days.index(date(2014, 3, 5))
    add_cake_sales(
        rolled_back, (5, "2014-03-05 23:30:00+00", True), (2, "2014-03-06 00:00:00+00", False)
    )
    after = repo.daily_sales("CKE-001")
    assert len(after) == len(before)
    assert after.quantity[index] == before.quantity[index] + 5 and after.promo[index]
    assert after.quantity[index + 1] == before.quantity[index + 1] + 2
    assert not after.promo[index + 1]


def test_known_sku_without_sales_has_an_empty_series(rolled_back):
    rolled_back.run("INSERT INTO products (sku, name, price) VALUES ('NEW-001', 'New', 1.00)")
    repo = SalesRepository(rolled_back)
    series = repo.daily_sales("NEW-001")
    assert (series.sku, len(series), series.days, series.quantity) == ("NEW-001", 0, (), ())
    assert repo.list_skus()[-1] == "SEA-001" and "NEW-001" in repo.list_skus()


def test_prediction_events_are_the_kiel_week_days(sales_repo):
    events = sales_repo.prediction_events()
    assert len(events) == 72
    assert all(isinstance(e, Event) for e in events)
    assert {(e.name, e.type) for e in events} == {("Kieler Woche", "custom")}
    assert [e.day for e in events] == sorted(e.day for e in events)
    assert (events[0].day, events[-1].day) == (date(2012, 6, 16), date(2019, 6, 30))


def test_events_excluded_from_prediction_are_not_returned(rolled_back):
    rolled_back.run(
        "INSERT INTO events (event_name, event_date, type, include_in_prediction) VALUES"
        " ('Stocktaking', '2015-01-02', 'custom', false),"
        " ('Neujahr', '2015-01-01', 'holiday', true)"
    )
    names = {e.name for e in SalesRepository(rolled_back).prediction_events()}
    assert names == {"Kieler Woche", "Neujahr"}


def test_event_type_is_constrained(rolled_back):
    from pg8000.exceptions import DatabaseError

    with pytest.raises(DatabaseError, match="23514"):
        rolled_back.run(
            "INSERT INTO events (event_name, event_date, type) VALUES ('x', '2015-01-01', 'party')"
        )


def test_query_on_a_lost_connection_is_unavailable_database(sales_conn, postgres_url):
    from siprems.sales.db import connect_url

    (pid,) = sales_conn.run("SELECT pg_backend_pid()")[0]
    admin = connect_url(postgres_url)
    try:
        assert admin.run("SELECT pg_terminate_backend(:pid)", pid=pid) == [[True]]
    finally:
        admin.close()
    repo = SalesRepository(sales_conn)
    with pytest.raises(DatabaseUnavailableError, match="lost the database connection"):
        repo.daily_sales("BRD-001")
    with pytest.raises(DatabaseUnavailableError):  # the dead connection stays unavailable
        repo.list_skus()


def test_daily_sales_uses_the_product_date_index(sales_conn):
    sales_conn.run("SET enable_seqscan = off")  # the table is small; ask what the plan can use
    plan = "\n".join(
        row[0]
        for row in sales_conn.run(
            "EXPLAIN SELECT (transaction_date AT TIME ZONE 'UTC')::date, sum(quantity_sold),"
            " bool_or(is_promo) FROM transactions WHERE product_id = 1 GROUP BY 1"
        )
    )
    assert "transactions_product_date_idx" in plan


def test_daily_sales_since_is_the_tail_of_the_full_series(sales_conn):
    repo = SalesRepository(sales_conn)
    full = repo.daily_sales("BRD-001")
    since = date(2018, 6, 2)
    tail = repo.daily_sales("BRD-001", since=since)
    first = next(i for i, day in enumerate(full.days) if day >= since)
    assert tail.days == full.days[first:] and tail.days[0] >= since
    assert tail.quantity == full.quantity[first:] and tail.promo == full.promo[first:]
    # UTC days, whatever the session's zone
    sales_conn.run("SET TIME ZONE 'Pacific/Kiritimati'")
    assert repo.daily_sales("BRD-001", since=since) == tail
    # a bound after the last sale: a known SKU with no days; an unknown SKU still raises
    assert len(repo.daily_sales("BRD-001", since=date(2030, 1, 1))) == 0
    with pytest.raises(UnknownSkuError):
        repo.daily_sales("NOPE-001", since=since)


def at(text: str):
    """A clock stopped at ``text`` (ISO, with its offset)."""
    from datetime import datetime

    return lambda: datetime.fromisoformat(text)


def test_daily_sales_since_cuts_at_utc_midnight(rolled_back):
    repo = SalesRepository(rolled_back, clock=at("2030-03-06T12:00:00+00:00"))
    add_cake_sales(rolled_back, (5, "2030-03-04 23:59:59+00"), (2, "2030-03-05 00:00:00+00"))
    series = repo.daily_sales("CKE-001", since=date(2030, 3, 5))
    assert (series.days, series.quantity) == ((date(2030, 3, 5),), (2.0,))


def test_days_are_the_shops_and_end_before_its_today(rolled_back):
    """A sale at 06:30 in Jakarta is that day's, not the UTC day before; the shop's today
    (still selling) and a sale dated in the future are not in the series."""
    add_cake_sales(
        rolled_back,
        (3, "2030-03-01 06:30:00+07"),
        (4, "2030-03-02 09:00:00+07"),
        (9, "2032-01-01 12:00:00+07"),
    )
    # 2030-03-02 01:00 in Jakarta (still 2030-03-01 in UTC)
    jakarta = SalesRepository(rolled_back, "Asia/Jakarta", clock=at("2030-03-01T18:00:00+00:00"))
    assert jakarta.today() == date(2030, 3, 2)
    series = jakarta.daily_sales("CKE-001", since=date(2030, 1, 1))
    assert (series.days, series.quantity) == ((date(2030, 3, 1),), (3.0,))
    # in UTC the same sale was the day before, and nothing of 2030-03-01 is over yet
    utc = SalesRepository(rolled_back, clock=at("2030-03-01T18:00:00+00:00"))
    series = utc.daily_sales("CKE-001", since=date(2030, 1, 1))
    assert (series.days, series.quantity) == ((date(2030, 2, 28),), (3.0,))
    # a day later both Jakarta days are over; the sale dated 2032 never counts
    later = SalesRepository(rolled_back, "Asia/Jakarta", clock=at("2030-03-03T00:00:00+07:00"))
    series = later.daily_sales("CKE-001", since=date(2030, 1, 1))
    assert series.days == (date(2030, 3, 1), date(2030, 3, 2))


def test_an_unknown_shop_time_zone_is_a_clear_error(rolled_back):
    from siprems.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="SHOP_TIMEZONE"):
        SalesRepository(rolled_back, "Mars/Olympus_Mons")
    # names PostgreSQL reads otherwise than Python: 'CET' as UTC+1 all summer long
    for name in ("CET", "EET", "localtime"):
        with pytest.raises(InvalidInputError, match="Area/City"):
            SalesRepository(rolled_back, name)


def test_a_container_reuses_fresh_connections_and_drops_stale_or_failed_ones(postgres_url):
    """The worker's database adapter: a connection goes back for the next job, unless it
    idled too long (a frozen container's) or its use raised; concurrent uses get their own."""
    import dataclasses
    import threading
    import time

    from siprems.config import load_settings
    from siprems.jobs.services import SalesDatabase
    from siprems.sales.db import connect_url

    settings = dataclasses.replace(
        load_settings(), database_url=postgres_url, database_secret_name=None
    )
    now = [0.0]
    database = SalesDatabase(settings, clock=lambda: now[0])

    def backend(sales):
        return sales._run("SELECT pg_backend_pid()")[0][0]

    def gone(pid):
        """The backend has exited (it does so just after its client's Terminate message)."""
        for _ in range(50):
            with database.repository() as sales:
                if not sales._run("SELECT 1 FROM pg_stat_activity WHERE pid = :p", p=pid):
                    return True
            time.sleep(0.1)
        return False

    with database.repository() as sales:
        first = backend(sales)
    with database.repository() as sales:
        assert backend(sales) == first  # reused

    now[0] += SalesDatabase.IDLE_SECONDS + 1
    with database.repository() as sales:
        second = backend(sales)
    assert second != first and gone(first)  # the idle one was closed, not reused

    with pytest.raises(UnknownSkuError), database.repository() as sales:
        failed = backend(sales)
        sales.get_product("NOPE-404")
    with database.repository() as sales:
        assert backend(sales) != failed  # never reused after an error

    # the server ends a kept connection while it idles (a restart, an idle timeout): the next
    # use gets a new one instead of an error
    with database.repository() as sales:
        ended = backend(sales)
    admin = connect_url(postgres_url)
    try:
        admin.run("SELECT pg_terminate_backend(:p)", p=ended)
    finally:
        admin.close()
    with database.repository() as sales:
        assert backend(sales) != ended

    # two uses at the same time: two connections, both kept for later
    inside, release, seen = threading.Barrier(2), threading.Event(), []

    def use():
        with database.repository() as sales:
            seen.append(backend(sales))
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 2
    with database.repository() as a, database.repository() as b:
        assert {backend(a), backend(b)} == set(seen)
    database.close()
    assert all(gone(pid) for pid in seen)
