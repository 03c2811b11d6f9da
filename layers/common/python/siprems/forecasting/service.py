"""The two entry points the worker calls: train a SKU, forecast a SKU.

Both take their collaborators (sales repository, model store) as arguments and raise only
``siprems.errors`` types. Heavy imports happen inside the functions: training loads pandas
and Prophet; a forecast from a stored model loads neither (numpy, boto3 and pg8000 only).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siprems.errors import InvalidInputError, ModelNotFoundError, SipremsError
from siprems.forecasting.options import ForecastOptions

if TYPE_CHECKING:
    from siprems.forecasting.artefact import ModelCache
    from siprems.forecasting.predict import ServingModel
    from siprems.forecasting.train import TrainedModel
    from siprems.model_store import ModelStore
    from siprems.sales.repository import SalesRepository

MAX_FORECAST_DAYS = 365
MAX_HORIZON_DAYS = 365


def _typed_errors[**P, R](function: Callable[P, R]) -> Callable[P, R]:
    """Whatever breaks below (pandas, Prophet, a bug) leaves as a ``SipremsError`` (internal;
    the worker retries it like any error that is not permanent) with the cause chained for the
    logs, so callers handle one hierarchy."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except SipremsError:
            raise
        except Exception as exc:
            raise SipremsError(f"{function.__name__} failed: {type(exc).__name__}: {exc}") from exc

    return wrapper


@_typed_errors
def train_product(
    sku: str,
    *,
    sales: SalesRepository,
    store: ModelStore,
    options: ForecastOptions | None = None,
    horizon_days: int = 28,
    work_dir: Path | None = None,
    before_store: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Hold-out backtest on the last ``horizon_days`` days, refit on all data, store
    (``before_store`` runs between the fits and the store: an error it raises stores nothing).

    Returns a JSON-able summary: product_sku, model {key, version, trained_at, config_hash},
    metrics (hold-out) next to the seasonal-naive baseline, accuracy (hold-out), window.
    Safe to run twice: the second run stores a new model version with the same content.
    """
    _check_days(horizon_days, "horizon_days", MAX_HORIZON_DAYS)
    _, metadata = _train(sku, sales, store, options, horizon_days, work_dir, before_store)
    return _summary(sku, metadata)


@_typed_errors
def forecast_product(
    sku: str,
    days: int,
    *,
    sales: SalesRepository,
    store: ModelStore,
    options: ForecastOptions | None = None,
    train_if_missing: bool = True,
    history_days: int | None = 60,
    work_dir: Path | None = None,
    cache: ModelCache | None = None,
    training_slot: AbstractContextManager[Any] | None = None,
    backtest_days: int = 28,
) -> dict[str, Any]:
    """Forecast ``days`` days after the stored model's last training day.

    Uses the stored model's serving document (numpy only: no pandas, no Prophet), kept in
    ``cache`` (the worker's by default) while its S3 version is current; trains a model
    first if there is none (``train_if_missing``) or if ``options`` are given and differ
    from the stored model's. ``history_days`` bounds the history part of ``chartData``
    (None = all of it); only those days are read from the database. A training this
    needs runs inside ``training_slot`` (the worker's: one training at a time), with a
    hold-out of ``backtest_days`` as ``train_product``'s.
    """
    _check_days(days, "days", MAX_FORECAST_DAYS)
    if history_days is not None and history_days < 0:
        raise InvalidInputError("history_days must be >= 0 or None (all history)")
    product = sales.get_product(sku)  # UnknownSkuError before any model work

    from siprems.forecasting import predict, restock
    from siprems.forecasting.artefact import load_serving_model

    def stored() -> tuple[ServingModel | None, dict[str, Any] | None]:
        """The stored model, or (None, its metadata or None) when it must be trained: none
        yet, its files gone (a manual delete; a version expired by the bucket's rule), or
        trained with other options."""
        try:
            metadata = store.load_metadata(sku)
            if options is None or metadata.get("config_hash") == options.config_hash():
                return load_serving_model(store, sku, metadata, cache), metadata
        except ModelNotFoundError:
            if not train_if_missing:
                raise
            return None, None
        return None, metadata

    model, metadata = stored()
    if model is None:
        if not train_if_missing:
            raise ModelNotFoundError(
                f"the stored model of {sku!r} was trained with other options", product_sku=sku
            )
        from siprems.forecasting.artefact import serving_model_from_trained

        with training_slot or contextlib.nullcontext():
            # a forecast of the same product that held the slot before may have trained it
            model, metadata = stored()
            if model is None:
                trained, metadata = _train(sku, sales, store, options, backtest_days, work_dir)
                model = serving_model_from_trained(trained)
    if metadata is None:  # unreachable: both branches above set it
        raise SipremsError(f"{sku}: no model metadata")

    horizon = predict.horizon_forecast(model, predict.future_days(model.last_day, days))
    actual = sales.daily_sales(sku, since=predict.history_start(model, history_days))
    chart = predict.chart_data(model, horizon, actual, history_days)
    recommendation = restock.recommend(
        product_id=product.product_id,
        product_name=product.name,
        current_stock=product.stock,
        daily_p50=horizon.p50,
        horizon_totals=horizon.totals,
    )
    backtest = metadata.get("backtest") or {}
    return {
        "product_sku": sku,
        "forecast_days": days,
        "chartData": chart,
        "recommendations": [recommendation],
        "accuracy": backtest.get("accuracy"),
        "quantiles": predict.quantile_rows(horizon),
        "model": {
            "version": metadata.get("model_version_id"),
            "trained_at": metadata.get("trained_at"),
            "config_hash": metadata.get("config_hash"),
            "training_window": metadata.get("training_window"),
            "metrics": backtest.get("model"),
            "seasonal_naive": backtest.get("seasonal_naive"),
        },
    }


# --- internals -----------------------------------------------------------------------------
def _check_days(value: Any, name: str, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInputError(f"{name} must be an integer from 1 to {maximum}, got {value!r}")


def _train(
    sku: str,
    sales: SalesRepository,
    store: ModelStore,
    options: ForecastOptions | None,
    horizon_days: int,
    work_dir: Path | None,
    before_store: Callable[[], None] | None = None,
) -> tuple[TrainedModel, dict[str, Any]]:
    from siprems.config import load_settings
    from siprems.forecasting.artefact import import_prophet, serving_document, to_artefact

    import_prophet()  # before anything imports it: without matplotlib (a worker never plots)
    from siprems.forecasting.preprocess import check_enough, sales_frame, seasonalities_supported
    from siprems.forecasting.train import train_with_holdout

    options = options or ForecastOptions.from_settings()
    work_dir = work_dir or load_settings().work_dir
    sales.get_product(sku)  # UnknownSkuError with a clear message
    daily = sales.daily_sales(sku)
    events = sales.prediction_events()
    frame = sales_frame(daily, options)
    observed = sales_frame(daily, ForecastOptions(missing_days="skip"))
    check_enough(observed, options, sku)
    trained, backtest = train_with_holdout(
        frame,
        observed,
        events,
        seasonalities_supported(options, observed),
        sku,
        horizon_days,
        work_dir,
        previous=_previous_fit_states(store, sku, options),
    )
    model_json, metadata = to_artefact(trained)
    metadata.update(
        {
            # the configuration asked for; "options" are those fitted (without the
            # seasonalities a short or sparse history cannot determine)
            "config_hash": options.config_hash(),
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "backtest": backtest,
            # the next training starts its fits from these (options.warm_start_nights)
            "fit_states": {
                name: state.to_dict() for name, state in trained.extra["fit_states"].items()
            },
        }
    )
    if before_store is not None:
        before_store()
    stored = store.save_model(sku, model_json, metadata, serving=serving_document(trained))
    return trained, stored


def _previous_fit_states(store: ModelStore, sku: str, options: ForecastOptions) -> dict[str, Any]:
    """The fit states of the SKU's stored model, if it was trained with the same options and
    warm starts are on (nothing otherwise: the fits start cold)."""
    from siprems.forecasting.train import FitState

    if options.warm_start_nights <= 0:
        return {}
    try:
        metadata = store.load_metadata(sku)
    except ModelNotFoundError:
        return {}
    if metadata.get("config_hash") != options.config_hash():
        return {}
    states = metadata.get("fit_states") or {}
    return {name: FitState.from_dict(values) for name, values in states.items()}


def _summary(sku: str, metadata: dict[str, Any]) -> dict[str, Any]:
    backtest = metadata.get("backtest") or {}
    return {
        "product_sku": sku,
        "model": {
            "key": metadata.get("model_key"),
            "version": metadata.get("model_version_id"),
            "sha256": metadata.get("model_sha256"),
            "config_hash": metadata.get("config_hash"),
        },
        "trained_at": metadata.get("trained_at"),
        "training_window": metadata.get("training_window"),
        "samples": metadata.get("samples"),
        "outliers_removed": metadata.get("outliers_removed"),
        "correction_factor": metadata.get("correction_factor"),
        "accuracy": backtest.get("accuracy"),
        "metrics": backtest.get("model"),
        "seasonal_naive": backtest.get("seasonal_naive"),
        "backtest": {
            k: backtest.get(k)
            for k in ("horizon_days", "cutoff", "test_days", "skipped")
            if backtest.get(k) is not None
        },
        "fit_ms": metadata.get("fit_ms"),
    }
