"""Train and forecast one Kiel bakery product end to end, and print a readable summary.

    .venv/bin/python -m scripts.demo [--sku BRD-001] [--days 30] [--keep-db]

Sales come from a real PostgreSQL: the embedded server in ``.state/postgres`` (started,
migrated and seeded with the Kiel data here; stopped again afterwards unless it was already
running or ``--keep-db``), or the server ``DATABASE_URL`` names. Models go to an S3 bucket
emulated *in this process* by moto: the real S3 arrives with the local stack.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "layers" / "common" / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))

from siprems.errors import SipremsError  # noqa: E402

STATE_DIR = ROOT / ".state" / "postgres"
KIEL_DATA = ROOT / "data" / "kiel-bakery"
DEMO_BUCKET = "siprems-models-demo"


@contextlib.contextmanager
def kiel_sales(keep_running: bool = False, quiet: bool = False) -> Iterator[object]:
    """A ``SalesRepository`` on a migrated database seeded with the Kiel data."""
    from siprems.config import load_settings
    from siprems.sales.db import connect_url, migrate
    from siprems.sales.repository import SalesRepository
    from siprems.sales.seed import seed_kiel

    say = (lambda *_: None) if quiet else print
    server = None
    started_here = False
    url = load_settings().database_url
    if url:
        say(f"database  DATABASE_URL ({url.split('@')[-1]})")
    else:
        from siprems.sales.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(STATE_DIR)
        started_here = not server.status().running
        t0 = time.perf_counter()
        url = server.start()
        say(
            f"database  embedded PostgreSQL in {STATE_DIR.relative_to(ROOT)} "
            f"({'started' if started_here else 'already running'}, "
            f"{time.perf_counter() - t0:.1f} s)"
        )
    conn = connect_url(url)
    try:
        migrate(conn)
        say(f"seed      {seed_kiel(conn, KIEL_DATA).summary()}")
        yield SalesRepository(conn, load_settings().shop_timezone)
    finally:
        conn.close()
        if server is not None and started_here and not keep_running:
            server.stop()
            say("database  embedded PostgreSQL stopped (--keep-db keeps it running)")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sku", default="BRD-001")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keep-db", action="store_true", help="leave the embedded server running")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".state" / "matplotlib"))

    import boto3
    from moto import mock_aws
    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.service import forecast_product, train_product
    from siprems.model_store import ModelStore

    try:
        with kiel_sales(keep_running=args.keep_db) as sales, mock_aws():
            print(
                f"models    in-process S3 emulation (moto), bucket {DEMO_BUCKET}: "
                "nothing is written to AWS"
            )
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket=DEMO_BUCKET)
            s3.put_bucket_versioning(
                Bucket=DEMO_BUCKET, VersioningConfiguration={"Status": "Enabled"}
            )
            store = ModelStore(s3, DEMO_BUCKET)
            options = ForecastOptions.from_settings()
            work_dir = ROOT / ".state" / "work"

            t0 = time.perf_counter()
            summary = train_product(
                args.sku, sales=sales, store=store, options=options, work_dir=work_dir
            )
            train_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = forecast_product(
                args.sku,
                args.days,
                sales=sales,
                store=store,
                train_if_missing=False,
                work_dir=work_dir,
            )
            forecast_s = time.perf_counter() - t0
            product = sales.get_product(args.sku)
    except SipremsError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1

    window = summary["training_window"]
    backtest = summary["backtest"]
    print()
    print(f"{product.sku}  {product.name}  (stock {product.stock}, price {product.price})")
    print(
        f"trained   {window['first_day']} .. {window['last_day']}: {summary['samples']} days, "
        f"{summary['outliers_removed']} outliers removed, options {summary['model']['config_hash']}"
        f" ({'default' if options == ForecastOptions.default() else 'custom'}), {train_s:.2f} s "
        "incl. hold-out backtest"
    )
    if summary["metrics"]:
        m, n = summary["metrics"], summary["seasonal_naive"] or {}
        print(
            f"hold-out  last {backtest['horizon_days']} days after {backtest['cutoff']} "
            "(never seen by the model):"
        )
        print(f"          {'':16s}{'MASE':>7s}{'WAPE':>7s}{'sMAPE':>7s}{'MAE':>7s}{'80% cov':>9s}")
        print(
            f"          {'model':16s}{_fmt(m['mase']):>7s}{_fmt(m['wape']):>7s}"
            f"{_fmt(m['smape']):>7s}{_fmt(m['mae'], 1):>7s}{_fmt(m['coverage_80'], 2):>9s}"
        )
        print(
            f"          {'seasonal naive':16s}{_fmt(n.get('mase')):>7s}{_fmt(n.get('wape')):>7s}"
            f"{_fmt(n.get('smape')):>7s}{_fmt(n.get('mae'), 1):>7s}{'':>9s}"
        )
        print(f"          accuracy (legacy, 100·(1−MAPE) on the hold-out): {summary['accuracy']}")
    else:
        print(f"hold-out  skipped: {backtest.get('skipped')}")
    print(
        f"forecast  {args.days} days from the stored model (version {result['model']['version']}),"
        f" {forecast_s * 1000:.0f} ms:"
    )
    print(f"          {'date':12s}{'p10':>8s}{'p50':>8s}{'p90':>8s}  holiday")
    holidays = {row["date"]: row["holidayName"] for row in result["chartData"] if row["isHoliday"]}
    for q in result["quantiles"][:10]:
        print(
            f"          {q['date']:12s}{q['p10']:8.1f}{q['p50']:8.1f}{q['p90']:8.1f}  "
            f"{holidays.get(q['date']) or ''}"
        )
    if len(result["quantiles"]) > 10:
        print(f"          ... {len(result['quantiles']) - 10} more days")
    (rec,) = result["recommendations"]
    print(
        f"restock   demand {rec['predictedDemand']} over {args.days} days (sum of p50) + safety "
        f"stock {rec['safetyStock']} (p{round(rec['serviceLevel'] * 100)} of the total) − stock "
        f"{rec['currentStock']} → restock {rec['recommendedRestock']}, urgency {rec['urgency']} "
        f"(stock covers {rec['daysOfCover']} days)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
