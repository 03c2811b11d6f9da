"""A forecast from a stored model: the numpy serving path against Prophet's own predict on the
same stored model, the worker's model cache, models stored before serving documents, and
what the forecast path imports (Kiel data in the embedded PostgreSQL, models in moto S3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from siprems.forecasting.artefact import ModelCache, from_artefact
from siprems.forecasting.predict import SAMPLING_SEED
from siprems.forecasting.scale import to_original_scale
from siprems.forecasting.service import forecast_product, train_product
from siprems.model_store import ModelStore

from tests.fixtures.prophet import prophet_point, prophet_samples

pytestmark = pytest.mark.filterwarnings("ignore:.*(inplace keyword|convert_dates)")

LAYER = Path(__file__).resolve().parents[2] / "layers" / "common" / "python"


@pytest.fixture
def store(model_store):
    return model_store


def _prophet_answer(store: ModelStore, sku: str, days: int, history: pd.DatetimeIndex):
    """The same stored model through Prophet: predict (no sampling) for p50 and the fitted
    history, predictive_samples after np.random.seed for the quantiles."""
    stored = store.load_model(sku)
    trained = from_artefact(stored.model_json, stored.metadata)
    options, factor = trained.options, trained.correction_factor
    start = pd.Timestamp(trained.last_day) + pd.Timedelta(days=1)
    future = pd.date_range(start, periods=days, freq="D")
    fitted = prophet_point(trained, history)
    # the horizon moves by the training's recent level (stored with the model), history not
    offset = np.zeros(days)
    offset[: len(trained.recent_level)] = trained.recent_level[:days]
    point = prophet_point(trained, future) + offset
    draws = prophet_samples(trained, future, 0.0, SAMPLING_SEED) + offset[:, None]
    draws = point[:, None] + options.interval_scale * (draws - point[:, None])
    paths = to_original_scale(draws, options) * factor
    p50 = to_original_scale(point, options) * factor
    p10, p90 = np.quantile(paths, [0.1, 0.9], axis=1)
    return (
        p50,
        np.minimum(p10, p50),
        np.maximum(p90, p50),
        to_original_scale(fitted, options) * factor,
    )


def test_the_answer_equals_prophet_on_the_stored_model(sales_repo, store, tmp_path):
    train_product("BRD-001", sales=sales_repo, store=store, work_dir=tmp_path)
    metadata = store.load_metadata("BRD-001")
    assert metadata["serving_key"] == "models/BRD-001/serving.json"
    assert len(metadata["recent_level"]) == 28 and any(metadata["recent_level"])
    assert metadata["serving_version_id"] and metadata["serving_sha256"]

    result = forecast_product(
        "BRD-001", 30, sales=sales_repo, store=store, train_if_missing=False, cache=ModelCache()
    )
    history = [row for row in result["chartData"] if row["lower"] is None]
    assert 50 <= len(history) <= 60  # the days of the last 60 on which it sold
    days = pd.DatetimeIndex([row["date"] for row in history])
    p50, p10, p90, fitted = _prophet_answer(store, "BRD-001", 30, days)

    quantiles = result["quantiles"]
    np.testing.assert_allclose([q["p50"] for q in quantiles], p50, atol=0.0051)
    np.testing.assert_allclose([q["p10"] for q in quantiles], p10, atol=0.0051)
    np.testing.assert_allclose([q["p90"] for q in quantiles], p90, atol=0.0051)
    np.testing.assert_allclose([row["predicted"] for row in history], fitted, atol=0.0051)
    # the history part is the window of 60 days before the horizon, actual sales included
    first_future = quantiles[0]["date"]
    assert history[0]["date"] >= str((pd.Timestamp(first_future) - pd.Timedelta(days=60)).date())
    assert all(row["historical"] is not None for row in history)


def test_the_cache_serves_a_version_until_a_retrain_replaces_it(sales_repo, store, tmp_path):
    cache = ModelCache()
    train_product("CNF-001", sales=sales_repo, store=store, work_dir=tmp_path)
    first = forecast_product("CNF-001", 7, sales=sales_repo, store=store, cache=cache)
    second = forecast_product("CNF-001", 7, sales=sales_repo, store=store, cache=cache)
    assert first == second
    assert (cache.loads, cache.hits, len(cache)) == (1, 1, 1)

    train_product("CNF-001", sales=sales_repo, store=store, work_dir=tmp_path)  # new version
    third = forecast_product("CNF-001", 7, sales=sales_repo, store=store, cache=cache)
    assert (cache.loads, len(cache)) == (2, 1)
    assert third["model"]["version"] != first["model"]["version"]
    assert third["quantiles"] == first["quantiles"]  # same data, same options: same model


def test_the_cache_is_bounded():
    from siprems.forecasting.artefact import ModelCache

    cache = ModelCache(max_models=2)
    for sku in ("A", "B", "C"):
        cache.put(("bucket", sku), "v1", object())  # type: ignore[arg-type]
    assert len(cache) == 2
    assert cache.get(("bucket", "A"), "v1") is None  # the least recent went first
    assert cache.get(("bucket", "C"), "v1") is not None
    assert cache.get(("bucket", "C"), "v2") is None  # another version is a miss


def test_a_model_stored_without_serving_document_still_forecasts(sales_repo, store, tmp_path):
    train_product("CKE-001", sales=sales_repo, store=store, work_dir=tmp_path)
    current = forecast_product("CKE-001", 14, sales=sales_repo, store=store, cache=ModelCache())

    # the same model as an older release stored it: model.json and metadata only
    stored = store.load_model("CKE-001")
    old = {k: v for k, v in stored.metadata.items() if not k.startswith(("serving", "model_"))}
    old.pop("sku")
    store.save_model("CKE-001", stored.model_json, old)
    assert "serving_key" not in store.load_metadata("CKE-001")
    legacy = forecast_product("CKE-001", 14, sales=sales_repo, store=store, cache=ModelCache())
    assert legacy["quantiles"] == current["quantiles"]
    assert legacy["chartData"] == current["chartData"]


def test_a_forecast_imports_neither_pandas_nor_prophet(sales_repo, store, tmp_path, postgres_url):
    """A fresh process forecasting from a stored model (the worker's case) loads numpy,
    boto3 and pg8000 only; one that trains loads Prophet without matplotlib."""
    train_product("SEA-001", sales=sales_repo, store=store, work_dir=tmp_path)
    objects = {
        key: store.load_serving("SEA-001", store.load_metadata("SEA-001"))
        if key.endswith("serving.json")
        else store.load_metadata("SEA-001")
        for key in (store.serving_key("SEA-001"), store.metadata_key("SEA-001"))
    }
    (tmp_path / "objects.json").write_text(json.dumps(objects))
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(LAYER)!r})
        import boto3
        from moto import mock_aws
        from siprems.forecasting.service import forecast_product
        from siprems.model_store import ModelStore
        from siprems.sales.db import connect_url
        from siprems.sales.repository import SalesRepository

        objects = json.loads(open({str(tmp_path / "objects.json")!r}).read())
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="siprems-models-import-test")
            store = ModelStore(s3, "siprems-models-import-test")
            meta_key = store.metadata_key("SEA-001")
            metadata = objects[meta_key]
            serving = objects[store.serving_key("SEA-001")]
            # the stored set, as the training wrote it (new versions in this bucket)
            stored = store.save_model("SEA-001", "{{}}", {{
                k: v for k, v in metadata.items() if not k.startswith(("serving", "model_"))
            }}, serving=serving)
            result = forecast_product(
                "SEA-001", 30, sales=SalesRepository(connect_url({postgres_url!r})),
                store=store, train_if_missing=False,
            )
        loaded = [m for m in ("pandas", "prophet", "matplotlib", "cmdstanpy") if m in sys.modules]
        print(json.dumps({{"loaded": loaded, "days": len(result["quantiles"])}}))
        """
    )
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    done = subprocess.run(  # noqa: S603 - our interpreter, our script
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"loaded": [], "days": 30}

    trains = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(LAYER)!r})
        from siprems.forecasting.artefact import import_prophet
        import_prophet()
        from prophet import Prophet
        without = "matplotlib" not in sys.modules
        import matplotlib  # still importable for whoever really draws
        print(json.dumps({{"prophet": "prophet" in sys.modules, "without": without}}))
        """
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", trains], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"prophet": True, "without": True}
