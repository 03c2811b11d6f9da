"""train_product / forecast_product on the Kiel data in the embedded PostgreSQL, models in
moto S3: real Prophet fits, real hold-out metrics, a stored model forecasting identically."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from siprems.errors import (
    InsufficientDataError,
    InvalidInputError,
    ModelNotFoundError,
    UnknownSkuError,
)
from siprems.forecasting.options import ForecastOptions
from siprems.forecasting.service import forecast_product, train_product
from siprems.http import error_response
from siprems.jobs.model import JobError

# Prophet 1.5 still passes pandas arguments that pandas 3 deprecates (not this project's code).
pytestmark = pytest.mark.filterwarnings("ignore:.*(inplace keyword|convert_dates)")

LAST_SALES_DAY = date(2018, 7, 31)


@pytest.fixture
def store(model_store):
    return model_store


def test_train_reports_hold_out_metrics_next_to_the_naive_baseline(sales_repo, store, tmp_path):
    import cmdstanpy

    cmdstan_tmp = Path(cmdstanpy._TMPDIR)
    before = set(cmdstan_tmp.rglob("*"))
    summary = train_product("BRD-001", sales=sales_repo, store=store, work_dir=tmp_path)

    assert summary["product_sku"] == "BRD-001"
    # the default trains on the last four years (max_history_days=1460)
    assert summary["training_window"]["last_day"] == "2018-07-31"
    assert summary["training_window"]["first_day"] >= "2014-08-01"
    assert summary["backtest"]["cutoff"] == (LAST_SALES_DAY - timedelta(days=28)).isoformat()
    assert summary["backtest"]["test_days"] == 28
    metrics = summary["metrics"]
    for name in ("mae", "mape", "smape", "mase", "wape", "coverage_80"):
        assert metrics[name] is not None and metrics[name] >= 0
    assert summary["seasonal_naive"]["mase"] > 0
    # the legacy accuracy comes from the hold-out MAPE, not from the training fit
    assert summary["accuracy"] == pytest.approx(100 * (1 - min(metrics["mape"], 1)), abs=0.01)
    # a real model on real data: not absurd (seasonal naive is about 1.2 on this window)
    assert metrics["mase"] < 2.0 and metrics["wape"] < 0.5

    metadata = store.load_metadata("BRD-001")
    assert metadata["model_version_id"] == summary["model"]["version"]
    assert metadata["config_hash"] == ForecastOptions.default().config_hash()
    assert metadata["library_versions"]["prophet"] == "1.5.0"
    assert metadata["samples"] + metadata["outliers_removed"] <= 1460
    # cmdstan's output went to per-fit directories under work_dir, removed afterwards, and
    # nothing was left in cmdstanpy's own process-wide temporary directory either
    assert list(tmp_path.iterdir()) == []
    assert set(cmdstan_tmp.rglob("*")) == before


def test_forecast_shape_quantiles_and_recommendation(sales_repo, store, tmp_path):
    result = forecast_product("CRS-001", 30, sales=sales_repo, store=store, work_dir=tmp_path)

    assert result["product_sku"] == "CRS-001" and result["forecast_days"] == 30
    quantiles = result["quantiles"]
    assert [q["date"] for q in quantiles] == [
        (LAST_SALES_DAY + timedelta(days=i + 1)).isoformat() for i in range(30)
    ]
    for q in quantiles:
        assert 0 <= q["p10"] <= q["p50"] <= q["p90"]

    chart = result["chartData"]
    keys = {"date", "historical", "predicted", "lower", "upper", "isHoliday", "holidayName"}
    assert all(set(row) == keys for row in chart)
    history = [row for row in chart if row["date"] <= LAST_SALES_DAY.isoformat()]
    future = chart[len(history) :]
    assert len(future) == 30
    # the default history window: the last 60 days before the horizon, actual + fitted
    assert history[0]["date"] >= (LAST_SALES_DAY - timedelta(days=59)).isoformat()
    assert all(row["historical"] is not None and row["lower"] is None for row in history)
    assert all(
        row["historical"] is None and row["lower"] <= row["predicted"] <= row["upper"]
        for row in future
    )
    assert [row["predicted"] for row in future] == [q["p50"] for q in quantiles]

    (recommendation,) = result["recommendations"]
    assert recommendation["productName"] == "Croissant" and recommendation["currentStock"] == 40
    assert recommendation["predictedDemand"] == round(sum(q["p50"] for q in quantiles))
    assert recommendation["safetyStock"] > 0
    assert recommendation["recommendedRestock"] == max(
        0, recommendation["predictedDemand"] + recommendation["safetyStock"] - 40
    )
    assert recommendation["urgency"] == "high"  # 40 croissants last less than a day
    assert result["accuracy"] is not None and 0 <= result["accuracy"] <= 100
    assert result["model"]["version"] == store.load_metadata("CRS-001")["model_version_id"]


def test_a_stored_model_forecasts_identically(sales_repo, store, tmp_path):
    train_product("RLL-001", sales=sales_repo, store=store, work_dir=tmp_path)
    first = forecast_product("RLL-001", 14, sales=sales_repo, store=store, train_if_missing=False)
    again = forecast_product("RLL-001", 14, sales=sales_repo, store=store, train_if_missing=False)
    assert first == again

    # and the artefact reproduces the in-memory model it was made from
    from siprems.forecasting.artefact import from_artefact, to_artefact
    from siprems.forecasting.predict import future_frame, predict_horizon
    from siprems.forecasting.preprocess import sales_frame
    from siprems.forecasting.train import fit

    options = ForecastOptions.default()
    trained = fit(
        sales_frame(sales_repo.daily_sales("RLL-001"), options),
        sales_repo.prediction_events(),
        options,
        "RLL-001",
        tmp_path,
    )
    model_json, metadata = to_artefact(trained)
    store.save_model("RLL-001", model_json, metadata)
    stored = store.load_model("RLL-001")
    loaded = from_artefact(stored.model_json, stored.metadata)
    before = predict_horizon(trained, future_frame(trained, 28))
    after = predict_horizon(loaded, future_frame(loaded, 28))
    assert np.array_equal(before.frame.to_numpy(), after.frame.to_numpy())
    assert np.array_equal(before.totals, after.totals)


def test_full_history_on_request(sales_repo, store, tmp_path):
    result = forecast_product(
        "CKE-001", 7, sales=sales_repo, store=store, history_days=None, work_dir=tmp_path
    )
    assert len(result["chartData"]) == 1819 + 7
    short = forecast_product("CKE-001", 7, sales=sales_repo, store=store, history_days=0)
    assert len(short["chartData"]) == 7


def test_kiel_week_and_public_holidays_are_named_in_the_chart(sales_repo, store, tmp_path):
    result = forecast_product(
        "BRD-001", 7, sales=sales_repo, store=store, history_days=None, work_dir=tmp_path
    )
    names = {row["date"]: row["holidayName"] for row in result["chartData"] if row["isHoliday"]}
    assert names["2018-06-20"] == "Kieler Woche"
    assert names["2018-04-02"] == "Ostermontag"  # a public holiday the shop opened


def test_no_model_and_no_training_is_model_not_found(sales_repo, store):
    with pytest.raises(ModelNotFoundError):
        forecast_product("CNF-001", 7, sales=sales_repo, store=store, train_if_missing=False)


def test_a_model_whose_files_are_gone_is_trained_again(sales_repo, store, tmp_path):
    """Its metadata still names a serving document that is gone (deleted by hand, or a
    version the bucket's rule expired): the forecast trains the product again."""
    train_product("CNF-001", sales=sales_repo, store=store, work_dir=tmp_path)
    before = store.load_metadata("CNF-001")
    store._s3.delete_object(
        Bucket=store.bucket, Key=before["serving_key"], VersionId=before["serving_version_id"]
    )
    result = forecast_product("CNF-001", 7, sales=sales_repo, store=store, work_dir=tmp_path)
    assert len(result["quantiles"]) == 7
    assert store.load_metadata("CNF-001")["serving_version_id"] != before["serving_version_id"]


def test_unknown_sku_is_a_typed_error_and_stores_nothing(sales_repo, store):
    with pytest.raises(UnknownSkuError, match="NOPE-001"):
        train_product("NOPE-001", sales=sales_repo, store=store)
    with pytest.raises(UnknownSkuError):
        forecast_product("NOPE-001", 7, sales=sales_repo, store=store)
    with pytest.raises(ModelNotFoundError):
        store.load_metadata("NOPE-001")


@pytest.mark.parametrize("days", [0, -1, 366, "7", 2.5, True])
def test_bad_forecast_days_are_input_errors(sales_repo, store, days):
    with pytest.raises(InvalidInputError):
        forecast_product("BRD-001", days, sales=sales_repo, store=store)


def test_three_days_of_history_is_insufficient_data(sales_repo, sales_conn, store):
    sales_conn.run("BEGIN")
    try:
        ((product_id,),) = sales_conn.run(
            "INSERT INTO products (name, category, price, stock, sku)"
            " VALUES ('Pretzel', 'Bread', 1.50, 10, 'TST-003') RETURNING product_id"
        )
        for day in ("2018-07-01", "2018-07-02", "2018-07-03"):
            sales_conn.run(
                "INSERT INTO transactions (product_id, quantity_sold, price_per_unit,"
                " transaction_date) VALUES (:p, 12, 1.50, :d)",
                p=product_id,
                d=day,
            )
        with pytest.raises(InsufficientDataError) as caught:
            train_product("TST-003", sales=sales_repo, store=store)
        assert "3 days with sales; at least 5" in caught.value.message
        answer = error_response(caught.value)
        assert (answer.status_code, answer.body["type"]) == (422, "insufficient_data")
        assert JobError.of(caught.value).type == "insufficient_data"
        with pytest.raises(ModelNotFoundError):
            store.load_metadata("TST-003")
    finally:
        sales_conn.run("ROLLBACK")


def test_a_short_history_trains_without_a_backtest(sales_repo, sales_conn, store, tmp_path):
    """Ten days: too short to hold out 28, still enough (≥ 5) to serve a model."""
    sales_conn.run("BEGIN")
    try:
        ((product_id,),) = sales_conn.run(
            "INSERT INTO products (name, category, price, stock, sku)"
            " VALUES ('Pretzel', 'Bread', 1.50, 10, 'TST-010') RETURNING product_id"
        )
        for i in range(10):
            sales_conn.run(
                "INSERT INTO transactions (product_id, quantity_sold, price_per_unit,"
                " transaction_date) VALUES (:p, :q, 1.50, :d)",
                p=product_id,
                q=10 + i % 3,
                d=date(2018, 7, 1) + timedelta(days=i),
            )
        summary = train_product("TST-010", sales=sales_repo, store=store, work_dir=tmp_path)
        assert summary["accuracy"] is None and "skipped" in summary["backtest"]
        result = forecast_product("TST-010", 7, sales=sales_repo, store=store)
        assert len(result["quantiles"]) == 7
    finally:
        sales_conn.run("ROLLBACK")


def test_an_unexpected_failure_leaves_as_a_siprems_error(sales_repo, store, monkeypatch):
    from siprems.errors import PermanentError, SipremsError
    from siprems.forecasting import train

    def broken_fit(*args, **kwargs):
        raise KeyError("ds")

    monkeypatch.setattr(train, "fit", broken_fit)
    with pytest.raises(SipremsError) as caught:
        train_product("BRD-001", sales=sales_repo, store=store)
    assert type(caught.value) is SipremsError and caught.value.code == "internal_error"
    # not permanent: the worker retries it before the job fails
    assert not isinstance(caught.value, PermanentError) and "KeyError" in caught.value.message
    with pytest.raises(ModelNotFoundError):
        store.load_metadata("BRD-001")


@pytest.mark.parametrize(
    ("sku", "days"),
    [
        # sold on Mondays only, eight weeks: no day of the other six weekdays was ever seen
        ("TST-MON", [date(2018, 6, 4) + timedelta(days=7 * i) for i in range(8)]),
        # five sales a month apart: neither a week nor a year is determined
        ("TST-MTH", [date(2018, 3, 1) + timedelta(days=30 * i) for i in range(5)]),
        # eight sales 60 days apart: more than a year, still no yearly curve
        ("TST-YR", [date(2017, 1, 2) + timedelta(days=60 * i) for i in range(8)]),
    ],
)
def test_a_sparse_history_forecasts_within_reach_of_what_was_sold(
    sales_repo, sales_conn, store, tmp_path, sku, days
):
    """Seasonal terms no sale determines are left out (they reached 20,000 a day, and
    1e19, from sales of 3 to 7); the model fitted records which it kept."""
    sales_conn.run("BEGIN")
    try:
        ((product_id,),) = sales_conn.run(
            "INSERT INTO products (name, category, price, stock, sku)"
            " VALUES ('Stollen', 'Bread', 4.50, 10, :sku) RETURNING product_id",
            sku=sku,
        )
        for i, day in enumerate(days):
            sales_conn.run(
                "INSERT INTO transactions (product_id, quantity_sold, price_per_unit,"
                " transaction_date) VALUES (:p, :q, 4.50, :d)",
                p=product_id,
                q=3 + i % 5,
                d=day,
            )
        result = forecast_product(sku, 30, sales=sales_repo, store=store, work_dir=tmp_path)
        p90 = [q["p90"] for q in result["quantiles"]]
        assert 0 < max(q["p50"] for q in result["quantiles"]) and max(p90) < 3 * 7, p90
        assert result["recommendations"][0]["recommendedRestock"] < 30 * 3 * 7
        metadata = store.load_metadata(sku)
        assert metadata["options"]["yearly_seasonality"] is False
        assert metadata["options"]["weekly_seasonality"] is False
        # the configuration asked for is still the one the model says it was trained with
        assert metadata["config_hash"] == ForecastOptions.default().config_hash()
    finally:
        sales_conn.run("ROLLBACK")


def test_the_hold_out_scores_are_recomputed_from_their_definition(sales_repo, store, tmp_path):
    """The training's scores, rebuilt outside it: the seasonal-naive baseline and the MASE
    scale from the sales up to the cutoff only, the model's from its own fit on those days,
    scored on its median (p50) with its p10..p90 interval."""
    import pandas as pd
    from siprems.forecasting import metrics
    from siprems.forecasting.predict import predict_horizon
    from siprems.forecasting.preprocess import sales_frame
    from siprems.forecasting.train import fit

    summary = train_product("BRD-001", sales=sales_repo, store=store, work_dir=tmp_path)
    options = ForecastOptions.default()
    daily = sales_repo.daily_sales("BRD-001")
    observed = sales_frame(daily, ForecastOptions(missing_days="skip"))
    frame = sales_frame(daily, options)
    cutoff = pd.Timestamp(summary["backtest"]["cutoff"])
    history = observed[observed["ds"] <= cutoff].set_index("ds")["y"]
    window = (observed["ds"] > cutoff) & (observed["ds"] <= cutoff + pd.Timedelta(days=28))
    test = observed[window]
    actual = test["y"].to_numpy()
    scale = metrics.seasonal_naive_scale(history)
    naive = metrics.seasonal_naive_forecast(history, test["ds"])
    assert summary["seasonal_naive"] == metrics.score(actual, naive, scale)

    events = sales_repo.prediction_events()
    trained = fit(frame[frame["ds"] <= cutoff], events, options, "BRD-001", tmp_path)
    quantiles = predict_horizon(trained, test[["ds", "promo"]]).frame
    expected = metrics.score(actual, quantiles["p50"], scale, quantiles["p10"], quantiles["p90"])
    for name, value in expected.items():
        assert summary["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
