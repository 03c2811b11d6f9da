"""Compute per SKU on the Kiel data, next to the original pipeline's path in the same run.

    .venv/bin/python -m bench.perf_compute [--repeats 7] [--train-repeats 3] [--skus ...]

Sales: the real (embedded) PostgreSQL seeded with the Kiel data. Model store: the project's
``ModelStore`` on a versioned S3 bucket emulated in this process by moto (so S3 calls cost
moto's in-process time, not a network round trip). Per SKU:

- ``train``: ``train_product`` (hold-out backtest fit + fit on all data + store), default options;
- ``forecast``: ``forecast_product`` for 30 days from the stored model (default answer:
  60 days of history) in a warm worker (the serving model cached; the metadata still read
  from S3 each time), and its answer size, default and full history;
- ``forecast, cold cache``: the same with an empty model cache (the serving document read
  from S3 and parsed: a worker's first forecast of a SKU);
- ``original train``: one fit on all data with ``ForecastOptions.legacy()`` (the original
  trained without a hold-out backtest);
- ``original``: the original pipeline's path for the same request on a model trained with
  ``ForecastOptions.legacy()``: load the model, Prophet ``predict`` over the whole history
  plus the horizon (uncertainty sampling, 1,000 samples, on every day), in-sample metrics,
  the full-history answer, the restock recommendation.

Writes ``bench/results/perf_compute.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from bench.perf_common import (
    create_resources,
    database_url,
    fake_aws_environment,
    summary,
    write_result,
)

FORECAST_DAYS = 30


def original_forecast(sku: str, days: int, *, sales: Any, store: Any) -> dict[str, Any]:
    """The original ``predict_stock_task`` on this codebase's parts: whole-history predict
    with sampled intervals, in-sample MAE/MAPE, every day of history in the answer."""
    import numpy as np
    import pandas as pd
    from siprems.forecasting import metrics, restock
    from siprems.forecasting.artefact import from_artefact
    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.preprocess import sales_frame, to_original_scale
    from siprems.forecasting.train import add_conditions

    product = sales.get_product(sku)
    stored = store.load_model(sku)
    trained = from_artefact(stored.model_json, stored.metadata)
    actual = sales_frame(sales.daily_sales(sku), ForecastOptions(missing_days="skip"))
    future = pd.date_range(
        pd.Timestamp(trained.last_day) + pd.Timedelta(days=1), periods=days, freq="D"
    )
    frame = pd.DataFrame({"ds": pd.concat([actual["ds"], pd.Series(future)]), "promo": 0.0})
    predicted = trained.model.predict(add_conditions(frame.reset_index(drop=True), trained.options))
    factor = trained.correction_factor
    yhat = to_original_scale(predicted["yhat"].to_numpy(), trained.options) * factor
    lower = to_original_scale(predicted["yhat_lower"].to_numpy(), trained.options) * factor
    upper = to_original_scale(predicted["yhat_upper"].to_numpy(), trained.options) * factor
    history = len(actual)
    in_sample = {
        "mae": metrics.mae(actual["y"].to_numpy(), yhat[:history]),
        "mape": metrics.mape(actual["y"].to_numpy(), yhat[:history]),
    }
    actual_values = list(actual["y"].to_numpy()) + [None] * days
    chart = [
        {
            "date": pd.Timestamp(ds).date().isoformat(),
            "actual": None if a is None else float(a),
            "predicted": round(float(p), 2),
            "lower": round(float(lo), 2),
            "upper": round(float(up), 2),
        }
        for ds, a, p, lo, up in zip(predicted["ds"], actual_values, yhat, lower, upper, strict=True)
    ]
    recommendation = restock.recommend(
        product_id=product.product_id,
        product_name=product.name,
        current_stock=product.stock,
        daily_p50=np.asarray(yhat[history:]),
    )
    return {
        "product_sku": sku,
        "chartData": chart,
        "recommendations": [recommendation],
        "metrics": in_sample,
    }


def original_train(sku: str, *, sales: Any, options: Any) -> Any:
    """The original ``train_product_model_task``: one fit on all data (no hold-out)."""
    from siprems.config import load_settings
    from siprems.forecasting.preprocess import sales_frame
    from siprems.forecasting.train import fit

    sales.get_product(sku)
    frame = sales_frame(sales.daily_sales(sku), options)
    return fit(frame, sales.prediction_events(), options, sku, load_settings().work_dir)


def timed(function, *args, **kwargs) -> tuple[float, float, Any]:
    """Wall and CPU milliseconds of one call (CPU: this process, whatever else runs), value."""
    started, cpu = time.perf_counter(), time.process_time()
    value = function(*args, **kwargs)
    return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000, value


def answer_bytes(result: dict[str, Any]) -> int:
    return len(json.dumps(result, separators=(",", ":"), default=str).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_compute")
    parser.add_argument("--repeats", type=int, default=7, help="timed forecasts per SKU")
    parser.add_argument("--train-repeats", type=int, default=3, help="timed trains per SKU")
    parser.add_argument("--skus", default=None, help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    fake_aws_environment()

    import boto3
    from moto import mock_aws
    from siprems.forecasting.artefact import ModelCache
    from siprems.forecasting.options import ForecastOptions
    from siprems.forecasting.service import forecast_product, train_product
    from siprems.forecasting.train import fit  # noqa: F401 (Prophet imported before timing)
    from siprems.model_store import ModelStore
    from siprems.sales.db import connect_url
    from siprems.sales.repository import SalesRepository

    legacy = ForecastOptions.legacy()
    per_sku: dict[str, Any] = {}
    with database_url() as url, mock_aws():
        create_resources()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="siprems-models-original")
        s3.put_bucket_versioning(
            Bucket="siprems-models-original", VersioningConfiguration={"Status": "Enabled"}
        )
        store = ModelStore(s3, "siprems-models-perf")
        original_store = ModelStore(s3, "siprems-models-original")
        conn = connect_url(url)
        sales = SalesRepository(conn)
        skus = args.skus.split(",") if args.skus else sorted(sales.list_skus())
        print(
            f"{'sku':9s}{'train ms':>10s}{'orig train':>11s}{'forecast ms':>13s}"
            f"{'cold cache':>11s}{'original ms':>13s}{'ratio':>7s}{'cpu ratio':>10s}"
            f"{'bytes':>8s}{'full':>9s}{'orig':>9s}"
        )
        for sku in skus:
            train_ms = [
                timed(train_product, sku, sales=sales, store=store)[0]
                for _ in range(args.train_repeats)
            ]
            train_product(sku, sales=sales, store=original_store, options=legacy)
            original_train_ms = [
                timed(original_train, sku, sales=sales, options=legacy)[0]
                for _ in range(args.train_repeats)
            ]
            forecast_ms, cold_ms, original_ms = [], [], []
            forecast_cpu, original_cpu = [], []
            forecast_product(sku, FORECAST_DAYS, sales=sales, store=store)  # into the cache
            for _ in range(args.repeats):  # interleaved: the same load for all three
                ms, cpu, default_answer = timed(
                    forecast_product, sku, FORECAST_DAYS, sales=sales, store=store
                )
                forecast_ms.append(ms)
                forecast_cpu.append(cpu)
                ms, _, cold_answer = timed(
                    forecast_product,
                    sku,
                    FORECAST_DAYS,
                    sales=sales,
                    store=store,
                    cache=ModelCache(),
                )
                cold_ms.append(ms)
                if cold_answer != default_answer:
                    raise RuntimeError(f"{sku}: a cached model answered differently")
                ms, cpu, original_answer = timed(
                    original_forecast, sku, FORECAST_DAYS, sales=sales, store=original_store
                )
                original_ms.append(ms)
                original_cpu.append(cpu)
            full_answer = forecast_product(
                sku, FORECAST_DAYS, sales=sales, store=store, history_days=None
            )
            row = {
                "train_ms": summary(train_ms),
                "original_train_ms": summary(original_train_ms),
                "forecast_ms": summary(forecast_ms),
                "forecast_cold_cache_ms": summary(cold_ms),
                "original_forecast_ms": summary(original_ms),
                "forecast_cpu_ms": summary(forecast_cpu),
                "original_forecast_cpu_ms": summary(original_cpu),
                "original_over_forecast_cpu": round(
                    statistics.median(original_cpu) / statistics.median(forecast_cpu), 2
                ),
                "original_over_forecast": round(
                    statistics.median(original_ms) / statistics.median(forecast_ms), 2
                ),
                "answer_bytes_default": answer_bytes(default_answer),
                "answer_bytes_full_history": answer_bytes(full_answer),
                "answer_bytes_original": answer_bytes(original_answer),
                "history_days_in_data": len(sales.daily_sales(sku)),
            }
            per_sku[sku] = row
            print(
                f"{sku:9s}{row['train_ms']['median']:10.0f}"
                f"{row['original_train_ms']['median']:11.0f}{row['forecast_ms']['median']:13.1f}"
                f"{row['forecast_cold_cache_ms']['median']:11.1f}"
                f"{row['original_forecast_ms']['median']:13.0f}"
                f"{row['original_over_forecast']:7.1f}{row['original_over_forecast_cpu']:10.1f}"
                f"{row['answer_bytes_default']:8d}"
                f"{row['answer_bytes_full_history']:9d}{row['answer_bytes_original']:9d}"
            )
        conn.close()

    def pooled(name: str) -> list[float]:
        return [per_sku[s][name]["median"] for s in per_sku]

    overall = {
        "median_of_sku_medians": {
            "train_ms": round(statistics.median(pooled("train_ms")), 1),
            "original_train_ms": round(statistics.median(pooled("original_train_ms")), 1),
            "forecast_ms": round(statistics.median(pooled("forecast_ms")), 1),
            "forecast_cold_cache_ms": round(statistics.median(pooled("forecast_cold_cache_ms")), 1),
            "original_forecast_ms": round(statistics.median(pooled("original_forecast_ms")), 1),
            "forecast_cpu_ms": round(statistics.median(pooled("forecast_cpu_ms")), 1),
            "original_forecast_cpu_ms": round(
                statistics.median(pooled("original_forecast_cpu_ms")), 1
            ),
        },
        "original_over_forecast": round(
            statistics.median([per_sku[s]["original_over_forecast"] for s in per_sku]), 2
        ),
        "original_over_forecast_cpu": round(
            statistics.median([per_sku[s]["original_over_forecast_cpu"] for s in per_sku]), 2
        ),
        "answer_bytes_default_max": max(per_sku[s]["answer_bytes_default"] for s in per_sku),
        "answer_bytes_full_history_max": max(
            per_sku[s]["answer_bytes_full_history"] for s in per_sku
        ),
    }
    print(json.dumps(overall, indent=1))
    write_result(
        "perf_compute",
        {
            "protocol": {
                "forecast_days": FORECAST_DAYS,
                "repeats": args.repeats,
                "train_repeats": args.train_repeats,
                "model_store": "ModelStore on moto S3 in this process",
                "sales": "PostgreSQL (embedded) seeded with the Kiel data",
                "original_path": "legacy options, predict over history + horizon with "
                "1,000 uncertainty samples, in-sample MAE/MAPE, full-history answer",
            },
            "overall": overall,
            "per_sku": per_sku,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
