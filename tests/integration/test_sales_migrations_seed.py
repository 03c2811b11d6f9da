"""Migrations and the Kiel seed on fresh databases of the test server: repeatable, concurrent."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from siprems.errors import SchemaMigrationError
from siprems.sales import db
from siprems.sales.repository import SalesRepository
from siprems.sales.seed import seed_kiel

KIEL_DATA = Path(__file__).resolve().parents[2] / "data" / "kiel-bakery"


@pytest.fixture
def empty_db_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the test server (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = db.connect_url(postgres_url)
    admin.run(f"CREATE DATABASE {name}")
    parts = urlsplit(postgres_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        admin.run(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


def _counts(conn) -> tuple[int, int, int]:
    return tuple(
        conn.run(
            "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM transactions),"
            " (SELECT count(*) FROM events)"
        )[0]
    )


def test_migrations_apply_once(empty_db_url):
    conn = db.connect_url(empty_db_url)
    try:
        assert db.migrate(conn) == ["0001_schema.sql"]
        assert db.migrate(conn) == []
        tables = {
            row[0]
            for row in conn.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables == {"products", "transactions", "events", "schema_migrations"}
        assert conn.run("SELECT version, name FROM schema_migrations") == [
            ["0001", "0001_schema.sql"]
        ]
    finally:
        conn.close()


def test_concurrent_migrations_apply_each_file_once(empty_db_url):
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        conn = db.connect_url(empty_db_url)
        try:
            results.append(db.migrate(conn))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [[], [], ["0001_schema.sql"]]


def test_a_failing_migration_leaves_nothing_behind(empty_db_url):
    conn = db.connect_url(empty_db_url)
    try:
        broken = db.Migration("0001", "0001_broken.sql", "CREATE TABLE a (x int); SELECT 1/0;")
        with pytest.raises(Exception, match="22012"):  # division_by_zero
            db.migrate(conn, [broken])
        assert conn.run("SELECT to_regclass('a'), count(*) FROM schema_migrations") == [[None, 0]]
        assert db.migrate(conn) == ["0001_schema.sql"]  # the lock was released, too
    finally:
        conn.close()


def test_an_edited_applied_migration_is_refused(empty_db_url):
    conn = db.connect_url(empty_db_url)
    try:
        original = db.available_migrations()
        db.migrate(conn, original)
        edited = db.Migration("0001", "0001_schema.sql", original[0].sql + "\n-- edited\n")
        with pytest.raises(SchemaMigrationError, match="changed"):
            db.migrate(conn, [edited])
        later = db.Migration("0002", "0002_more.sql", "CREATE TABLE later (x int);")
        assert db.migrate(conn, [*original, later]) == ["0002_more.sql"]
    finally:
        conn.close()


def test_seed_twice_gives_the_same_data(empty_db_url):
    conn = db.connect_url(empty_db_url)
    try:
        db.migrate(conn)
        first = seed_kiel(conn, KIEL_DATA)
        assert (first.products, first.transactions, first.events) == (6, 9334, 72)
        assert (first.products_inserted, first.transactions_inserted, first.events_inserted) == (
            6,
            9334,
            72,
        )
        snapshot = conn.run("SELECT * FROM transactions ORDER BY transaction_id")
        second = seed_kiel(conn, KIEL_DATA)
        assert (second.products_inserted, second.transactions_inserted, second.events_inserted) == (
            0,
            0,
            0,
        )
        assert _counts(conn) == (6, 9334, 72)
        assert conn.run("SELECT * FROM transactions ORDER BY transaction_id") == snapshot
        assert "9334 transactions" in second.summary()
    finally:
        conn.close()


def test_seed_keeps_days_at_noon_utc_and_the_readme_values(empty_db_url):
    conn = db.connect_url(empty_db_url)
    try:
        db.migrate(conn)
        seed_kiel(conn, KIEL_DATA)
        conn.run("SET TIME ZONE 'UTC'")
        row = conn.run(
            "SELECT t.transaction_date::text, t.quantity_sold, t.price_per_unit::text, t.is_promo"
            " FROM transactions t JOIN products p USING (product_id)"
            " WHERE p.sku = 'BRD-001' ORDER BY t.transaction_date LIMIT 1"
        )
        assert row == [["2013-07-01 12:00:00+00", 38, "4.00", False]]
        assert conn.run("SELECT count(*) FROM transactions WHERE quantity_sold < 1") == [[0]]
    finally:
        conn.close()


def test_seed_restores_missing_rows_and_keeps_edited_products(empty_db_url):
    conn = db.connect_url(empty_db_url)
    try:
        db.migrate(conn)
        seed_kiel(conn, KIEL_DATA)
        conn.run("UPDATE products SET stock = 7 WHERE sku = 'CRS-001'")
        conn.run(
            "DELETE FROM transactions WHERE transaction_id IN"
            " (SELECT transaction_id FROM transactions ORDER BY transaction_id LIMIT 10)"
        )
        again = seed_kiel(conn, KIEL_DATA)
        assert (again.products_inserted, again.transactions_inserted) == (0, 10)
        assert _counts(conn) == (6, 9334, 72)
        assert SalesRepository(conn).get_product("CRS-001").stock == 7
    finally:
        conn.close()


def test_concurrent_seeds_do_not_duplicate(empty_db_url):
    setup = db.connect_url(empty_db_url)
    db.migrate(setup)
    reports, errors = [], []

    def run() -> None:
        conn = db.connect_url(empty_db_url)
        try:
            reports.append(seed_kiel(conn, KIEL_DATA))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert sorted(r.transactions_inserted for r in reports) == [0, 9334]
        assert _counts(setup) == (6, 9334, 72)
    finally:
        setup.close()


def test_seed_script_migrates_and_seeds(empty_db_url, capsys):
    from scripts.seed import main

    assert main(["--database-url", empty_db_url]) == 0
    assert main(["--database-url", empty_db_url]) == 0
    out = capsys.readouterr().out
    assert "migrations applied: 0001_schema.sql" in out
    assert "migrations applied: none (up to date)" in out
    assert "(inserted 0/0/0)" in out
    conn = db.connect_url(empty_db_url)
    try:
        assert _counts(conn) == (6, 9334, 72)
    finally:
        conn.close()
    assert main(["--database-url", "postgresql://u:pw-x@127.0.0.1:1/d?connect_timeout=2"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect" in err and "pw-x" not in err
