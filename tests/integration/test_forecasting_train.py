"""Training's fast path against Prophet itself, on the Kiel data in the embedded PostgreSQL:
``fit_prophet`` (features from one shared matrix, cmdstan's files written by orjson) gives
the very parameters ``Prophet.fit`` gives, and a training with its hold-out backtest gives
the model and the scores of two standalone fits; a nightly training starts from the night
before's fits."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from siprems.forecasting.events import holiday_frame
from siprems.forecasting.options import ForecastOptions
from siprems.forecasting.preprocess import sales_frame, to_original_scale, training_frame
from siprems.forecasting.train import (
    FeatureMatrix,
    FitState,
    add_conditions,
    build_model,
    correction_factor,
    fit,
    holdout_backtest,
    holidays_near,
    kernel_of,
    seasonality_features,
    train_with_holdout,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*(inplace keyword|convert_dates)")

PARAMS = ("k", "m", "delta", "beta", "sigma_obs")


@pytest.fixture(scope="module")
def kiel(postgres_url):
    from siprems.sales.db import connect_url
    from siprems.sales.repository import SalesRepository

    conn = connect_url(postgres_url)
    try:
        sales = SalesRepository(conn)
        daily = {sku: sales.daily_sales(sku) for sku in ("BRD-001", "SEA-001", "CNF-001")}
        return daily, sales.prediction_events()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("sku", "profile"), [("BRD-001", "default"), ("SEA-001", "legacy")], ids=str
)
def test_fit_gives_prophet_fits_parameters(kiel, sku, profile, tmp_path):
    daily, events = kiel
    options = ForecastOptions.named(profile)
    frame = sales_frame(daily[sku], options)
    ours = fit(frame, events, options, sku, tmp_path)

    data, _ = training_frame(frame, options, sku)
    first, last = data["ds"].iloc[0].date(), data["ds"].iloc[-1].date()
    model = build_model(options, holiday_frame(events, options, first, last))
    stan_args = {}
    if options.optimizer_tol_rel_grad is not None:
        stan_args["tol_rel_grad"] = options.optimizer_tol_rel_grad
    with holidays_near(model, data["ds"]):
        model.fit(add_conditions(data, options), **stan_args)

    for name in PARAMS:
        assert np.array_equal(ours.model.params[name], model.params[name]), name
    assert ours.model.train_component_cols.equals(model.train_component_cols)
    assert list(ours.model.train_holiday_names) == list(model.train_holiday_names)
    assert ours.extra["iterations"] > 0
    # and Prophet's own predict works on it as after Prophet's fit
    future = add_conditions(pd.DataFrame({"ds": pd.date_range(last, periods=8)[1:]}), options)
    future["promo"] = 0.0
    assert np.array_equal(ours.model.predict(future)["yhat"], model.predict(future)["yhat"])
    assert list(tmp_path.iterdir()) == []  # cmdstan's files are gone


def test_training_with_holdout_equals_two_standalone_fits(kiel, tmp_path):
    daily, events = kiel
    options = ForecastOptions.default()
    sku = "CNF-001"  # has weeks without sales: the shared matrix covers calendar days
    frame = sales_frame(daily[sku], options)
    observed = sales_frame(daily[sku], ForecastOptions(missing_days="skip"))

    trained, backtest = train_with_holdout(
        frame, observed, events, options, sku, 28, tmp_path, concurrent=True
    )
    alone = fit(frame, events, options, sku, tmp_path)
    assert backtest == holdout_backtest(frame, observed, events, options, sku, 28, tmp_path) | {
        "fit_ms": backtest["fit_ms"],
        "predict_ms": backtest["predict_ms"],
    }
    for name in PARAMS:
        assert np.array_equal(trained.model.params[name], alone.model.params[name]), name
    assert trained.correction_factor == alone.correction_factor
    assert backtest["cutoff"] == "2018-07-03" and backtest["test_days"] > 0
    # the fits one after the other: the same model and scores
    serial, serial_backtest = train_with_holdout(
        frame, observed, events, options, sku, 28, tmp_path, concurrent=False
    )
    for name in PARAMS:
        assert np.array_equal(serial.model.params[name], trained.model.params[name]), name
    assert serial_backtest["model"] == backtest["model"]
    assert list(tmp_path.iterdir()) == []  # both fits' cmdstan files are gone


@pytest.mark.parametrize(
    ("memory_mb", "cpus", "expected"),
    [("1024", 2, False), ("1769", 2, False), ("3008", 2, True), (None, 1, False), (None, 2, True)],
)
def test_fits_run_concurrently_only_with_two_cpus(monkeypatch, memory_mb, cpus, expected):
    from siprems.forecasting import train

    if memory_mb is None:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb)
    monkeypatch.setattr(train.os, "process_cpu_count", lambda: cpus)
    assert train.two_cpus() is expected


def test_feature_matrix_rows_follow_each_fits_history(kiel):
    daily, events = kiel
    options = ForecastOptions.default()
    first, last = pd.Timestamp("2017-01-01"), pd.Timestamp("2017-12-31")
    holidays = holiday_frame(events, options, first.date(), last.date())
    matrix = FeatureMatrix.build(options, holidays, first, last)
    assert matrix.columns.shape[0] == 365
    history = pd.DataFrame(
        {"ds": pd.to_datetime(["2017-04-16", "2017-04-17", "2017-04-18"]), "promo": [0.0, 1, 0]}
    )
    rows = matrix.rows(history)
    assert rows["Ostermontag_delim_+0"].tolist() == [0.0, 1.0, 0.0]
    assert rows["promo"].tolist() == [0.0, 1.0, 0.0]  # the fit's own regressor values
    with pytest.raises(ValueError, match="does not cover"):
        matrix.rows(pd.DataFrame({"ds": pd.to_datetime(["2018-01-01"]), "promo": [0.0]}))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"profile": "legacy"},
        {"summer_winter_weekly": True, "monthly_seasonality": True},
        {"seasonality_mode": "multiplicative", "promo_regressor": False},
        {"promo_regressor": False, "holiday_country": None, "event_lower_window": 0},
    ],
    ids=str,
)
def test_numpy_features_equal_prophets(kiel, overrides):
    """The matrix's numpy features are Prophet's ``make_all_seasonality_features`` bit for
    bit (columns, order, prior scales, component matrix, modes, holiday names)."""
    _, events = kiel
    overrides = dict(overrides)
    options = ForecastOptions.named(overrides.pop("profile", "default"))
    options = dataclasses.replace(options, **overrides)
    first, last = pd.Timestamp("2014-11-03"), pd.Timestamp("2019-01-31")
    holidays = holiday_frame(events, options, first.date(), last.date())
    days = pd.DataFrame({"ds": pd.date_range(first, last, freq="D"), "y": 0.0})
    days["promo"] = (days["ds"].dt.day % 9 == 0).astype(float)

    def prepared():
        model = build_model(options, holidays)
        frame = model.setup_dataframe(add_conditions(days, options), initialize_scales=True)
        model.history = frame
        model.set_auto_seasonalities()
        return model, frame

    prophet_model, frame = prepared()
    with holidays_near(prophet_model, frame["ds"]):
        expected = prophet_model.make_all_seasonality_features(frame)
    numpy_model, frame = prepared()
    with holidays_near(numpy_model, frame["ds"]):
        ours = seasonality_features(numpy_model, frame)

    assert expected[0].shape[1] > 10
    pd.testing.assert_frame_equal(
        ours[0].reset_index(drop=True), expected[0], check_exact=True, check_column_type=False
    )
    assert list(ours[0].index) == list(frame["ds"])
    assert ours[1] == expected[1]
    pd.testing.assert_frame_equal(ours[2], expected[2], check_exact=True)
    assert ours[3] == expected[3]
    assert list(numpy_model.train_holiday_names) == list(prophet_model.train_holiday_names)


def test_kernel_correction_factor_matches_prophets_predict(kiel, tmp_path):
    daily, events = kiel
    options = ForecastOptions.default()
    trained = fit(sales_frame(daily["BRD-001"], options), events, options, "BRD-001", tmp_path)
    history = trained.model.history[["ds", "promo"]]
    prophet_yhat = trained.model.predict(add_conditions(history, options))["yhat"].to_numpy()
    kernel_yhat = kernel_of(trained).point(history["ds"].to_numpy(), history["promo"].to_numpy())
    assert np.allclose(kernel_yhat, prophet_yhat, rtol=0, atol=1e-9)
    assert options.correction_min <= trained.correction_factor <= options.correction_max

    # the factor is median(actual / fitted) over the training days, or over the last
    # ``correction_window_days`` of them (calendar days), from Prophet's own fit
    days, actual = history["ds"], to_original_scale(trained.model.history["y"].to_numpy(), options)
    fitted = to_original_scale(prophet_yhat, options)

    def median_ratio(since: pd.Timestamp) -> float:
        kept = (days >= since).to_numpy() & (actual > 0) & (fitted > 0)
        ratio = float(np.median(actual[kept] / fitted[kept]))
        return float(np.clip(ratio, options.correction_min, options.correction_max))

    assert trained.correction_factor == pytest.approx(median_ratio(days.iloc[0]), abs=1e-9)
    windowed = dataclasses.replace(
        trained, options=dataclasses.replace(options, correction_window_days=56)
    )
    since = days.iloc[-1] - pd.Timedelta(days=55)
    factor = correction_factor(windowed, trained.model.history, kernel_yhat)
    assert factor == pytest.approx(median_ratio(since), abs=1e-9)
    assert factor != pytest.approx(trained.correction_factor, abs=1e-6)


def test_holdout_window_starting_before_the_cutoff_is_covered(kiel, tmp_path):
    """No sales on the cutoff day (a closed shop): the hold-out fit's four years end on an
    earlier day and so start earlier; the shared matrix still covers them."""
    daily, events = kiel
    options = ForecastOptions.default()
    observed = sales_frame(daily["BRD-001"], ForecastOptions(missing_days="skip"))
    cutoff = observed["ds"].max() - pd.Timedelta(days=28)
    closed = observed[(observed["ds"] < cutoff - pd.Timedelta(days=2)) | (observed["ds"] > cutoff)]
    trained, backtest = train_with_holdout(closed, closed, events, options, "BRD-001", 28, tmp_path)
    assert backtest["cutoff"] == cutoff.date().isoformat()
    assert backtest["train_days"] > 0 and trained.samples > 0


def test_nightly_warm_start_from_the_night_before(kiel, tmp_path):
    daily, events = kiel
    options = ForecastOptions.default()
    assert options.warm_start_nights == 7
    observed = sales_frame(daily["BRD-001"], ForecastOptions(missing_days="skip"))
    yesterday = observed[observed["ds"] < observed["ds"].max()]

    night_before, _ = train_with_holdout(
        yesterday, yesterday, events, options, "BRD-001", 28, tmp_path
    )
    states = night_before.extra["fit_states"]
    assert set(states) == {"final", "holdout"} and states["final"].chain == 0
    # the states travel as JSON in the model's metadata
    states = {
        name: FitState.from_dict(json.loads(json.dumps(state.to_dict())))
        for name, state in states.items()
    }
    assert states["final"] == night_before.extra["fit_states"]["final"]

    cold, cold_backtest = train_with_holdout(
        observed, observed, events, options, "BRD-001", 28, tmp_path
    )
    warm, warm_backtest = train_with_holdout(
        observed, observed, events, options, "BRD-001", 28, tmp_path, previous=states
    )
    assert warm.extra["chain"] == 1 and warm.extra["fit_states"]["holdout"].chain == 1
    assert warm.extra["iterations"] < cold.extra["iterations"] / 3
    days = pd.date_range(warm.last_day, periods=29)[1:].to_numpy()
    moved = np.abs(kernel_of(warm).point(days) - kernel_of(cold).point(days))
    assert moved.max() < 0.03  # log scale: within 3 % of the cold fit's forecast
    assert warm_backtest["model"]["mase"] == pytest.approx(cold_backtest["model"]["mase"], rel=0.05)

    # a chain of warm_start_nights warm fits ends in a cold fit
    tired = {name: dataclasses.replace(s, chain=7) for name, s in states.items()}
    anchored, _ = train_with_holdout(
        observed, observed, events, options, "BRD-001", 28, tmp_path, previous=tired
    )
    assert anchored.extra["chain"] == 0
    assert np.array_equal(anchored.model.params["beta"], cold.model.params["beta"])


def test_train_product_keeps_fit_states_for_the_next_night(sales_repo, aws, tmp_path):
    import boto3
    from siprems.forecasting.service import train_product
    from siprems.model_store import ModelStore

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="siprems-models-warm")
    client.put_bucket_versioning(
        Bucket="siprems-models-warm", VersioningConfiguration={"Status": "Enabled"}
    )
    store = ModelStore(client, "siprems-models-warm")
    train_product("SEA-001", sales=sales_repo, store=store, work_dir=tmp_path)
    first = store.load_metadata("SEA-001")
    assert first["fit_states"]["final"]["chain"] == 0

    train_product("SEA-001", sales=sales_repo, store=store, work_dir=tmp_path)
    second = store.load_metadata("SEA-001")
    assert second["fit_states"]["final"]["chain"] == 1
    assert second["fit_states"]["holdout"]["chain"] == 1
    assert second["model_version_id"] != first["model_version_id"]

    # other options: the stored states do not apply, the fits start cold
    legacy = ForecastOptions.legacy().with_overrides(warm_start_nights=7)
    train_product("SEA-001", sales=sales_repo, store=store, options=legacy, work_dir=tmp_path)
    assert store.load_metadata("SEA-001")["fit_states"]["final"]["chain"] == 0


def test_products_with_the_same_span_share_one_feature_matrix(kiel):
    from siprems.forecasting import train

    _, events = kiel
    options = ForecastOptions.default()
    first, last = pd.Timestamp("2017-01-01"), pd.Timestamp("2017-03-31")
    holidays = holiday_frame(events, options, first.date(), last.date())
    train._FEATURES.clear()
    shared = train._shared_features(options, holidays, first, last)
    assert train._shared_features(options, holidays.copy(), first, last) is shared
    other_span = train._shared_features(options, holidays, first, last + pd.Timedelta(days=1))
    assert other_span is not shared
    legacy = train._shared_features(ForecastOptions.legacy(), holidays, first, last)
    assert legacy is not shared and legacy.columns.shape[1] != shared.columns.shape[1]
    for day in range(train.CACHED_FEATURE_MATRICES):
        train._shared_features(options, holidays, first, last + pd.Timedelta(days=2 + day))
    assert len(train._FEATURES) == train.CACHED_FEATURE_MATRICES


def test_holiday_frames_are_cached_by_year_and_copied(kiel):
    from datetime import date

    from siprems.forecasting import train

    _, events = kiel
    options = ForecastOptions.default()
    train._HOLIDAYS.clear()
    first = train.holidays_of(events, options, date(2015, 3, 1), date(2018, 7, 31))
    # another span in the same years: the same frame, from the cache, as holiday_frame gives
    again = train.holidays_of(events, options, date(2015, 1, 1), date(2018, 6, 30))
    assert len(train._HOLIDAYS) == 1
    pd.testing.assert_frame_equal(
        again, holiday_frame(events, options, date(2015, 1, 1), date(2018, 6, 30))
    )
    pd.testing.assert_frame_equal(first, again)
    first.loc[0, "holiday"] = "changed by a caller"  # callers get copies
    assert (
        train.holidays_of(events, options, date(2015, 1, 1), date(2018, 7, 31)).loc[0, "holiday"]
        != "changed by a caller"
    )
    # other years or other options: other frames
    later = train.holidays_of(events, options, date(2016, 1, 1), date(2018, 7, 31))
    assert len(later) < len(first)  # no public holidays of 2015
    legacy = train.holidays_of(
        events, ForecastOptions.legacy(), date(2015, 1, 1), date(2018, 7, 31)
    )
    assert len(train._HOLIDAYS) == 3 and len(legacy) != len(first)
