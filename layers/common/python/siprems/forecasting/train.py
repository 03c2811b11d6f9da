"""Prophet training, the hold-out backtest and the rolling-origin backtest."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from siprems.errors import InsufficientDataError, TrainingFailedError
from siprems.forecasting import metrics
from siprems.forecasting.events import holiday_frame
from siprems.forecasting.preprocess import to_original_scale, training_frame

if TYPE_CHECKING:
    from prophet import Prophet

    from siprems.forecasting.options import ForecastOptions
    from siprems.sales.models import Event

# Prophet imports matplotlib, which wants a writable config dir (read-only $HOME on Lambda).
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
# cmdstanpy logs every optimisation at INFO; Prophet logs its seasonality choices.
# Prophet warns about short histories on every such fit; the API reports them by itself.
for _name in ("cmdstanpy", "prophet", "prophet.plot"):
    logging.getLogger(_name).setLevel(logging.ERROR)
logging.getLogger("cmdstanpy").disabled = True
# Prophet 1.5 still uses pandas arguments that pandas 3 deprecates; not ours to fix.
warnings.filterwarnings("ignore", message=r".*(inplace keyword|convert_dates).*", module=r"prophet")

NEWTON_BELOW_ROWS = 100  # Prophet's own switch from L-BFGS to Newton
SUMMER_MONTHS = frozenset({4, 5, 6, 7, 8, 9})


@dataclass
class TrainedModel:
    """A fitted Prophet model plus everything needed to turn its output into demand."""

    model: Prophet
    options: ForecastOptions
    correction_factor: float
    first_day: date
    last_day: date
    samples: int
    outliers_removed: int
    fit_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def job_directory(work_dir: Path | None) -> Iterator[Path]:
    """A fresh directory for cmdstan's files, removed afterwards whatever happens."""
    base = Path(work_dir) if work_dir is not None else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="fit-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def add_conditions(frame: pd.DataFrame, options: ForecastOptions) -> pd.DataFrame:
    """Columns Prophet needs besides ds: the promo regressor and seasonality conditions."""
    out = frame.copy()
    if options.promo_regressor and "promo" not in out:
        out["promo"] = 0.0
    if options.summer_winter_weekly:
        summer = out["ds"].dt.month.isin(SUMMER_MONTHS)
        out["summer"] = summer
        out["winter"] = ~summer
    return out


def build_model(options: ForecastOptions, holidays: pd.DataFrame | None) -> Prophet:
    from prophet import Prophet

    model = Prophet(
        growth="linear",
        yearly_seasonality=options.yearly_seasonality,
        weekly_seasonality=False if options.summer_winter_weekly else options.weekly_seasonality,
        daily_seasonality=False,
        seasonality_mode=options.seasonality_mode,
        seasonality_prior_scale=options.seasonality_prior_scale,
        changepoint_prior_scale=options.changepoint_prior_scale,
        changepoint_range=options.changepoint_range,
        holidays=holidays,
        holidays_prior_scale=options.holidays_prior_scale,
        interval_width=options.interval_width,
        uncertainty_samples=options.uncertainty_samples,
    )
    if options.monthly_seasonality:
        model.add_seasonality(
            name="monthly",
            period=options.monthly_period,
            fourier_order=options.monthly_fourier_order,
        )
    if options.summer_winter_weekly:
        order = 3 if options.weekly_seasonality is True else int(options.weekly_seasonality)
        model.add_seasonality(
            name="weekly_summer", period=7, fourier_order=order, condition_name="summer"
        )
        model.add_seasonality(
            name="weekly_winter", period=7, fourier_order=order, condition_name="winter"
        )
    if options.promo_regressor:
        model.add_regressor("promo")
    return model


def fit(
    frame: pd.DataFrame,
    events: Sequence[Event],
    options: ForecastOptions,
    sku: str,
    work_dir: Path | None = None,
) -> TrainedModel:
    """Fit one model on a raw daily frame (ds, y, promo on the original scale)."""
    data, removed = training_frame(frame, options, sku)
    first_day = data["ds"].iloc[0].date()
    last_day = data["ds"].iloc[-1].date()
    model = build_model(options, holiday_frame(events, options, first_day, last_day))
    stan_args: dict[str, Any] = {}
    if options.optimizer_tol_rel_grad is not None and len(data) >= NEWTON_BELOW_ROWS:
        # Prophet optimises short series with Newton, which takes no such tolerance
        stan_args["tol_rel_grad"] = options.optimizer_tol_rel_grad
    started, cpu_started = time.perf_counter(), cpu_seconds()
    with job_directory(work_dir) as output_dir, holidays_near(model, data["ds"]):
        try:
            model.fit(add_conditions(data, options), output_dir=str(output_dir), **stan_args)
        except (RuntimeError, ValueError) as exc:
            raise TrainingFailedError(f"{sku}: Prophet fit failed: {exc}", product_sku=sku) from exc
    fit_ms = (time.perf_counter() - started) * 1000
    fit_cpu_ms = (cpu_seconds() - cpu_started) * 1000
    trained = TrainedModel(
        model=model,
        options=options,
        correction_factor=1.0,
        first_day=first_day,
        last_day=last_day,
        samples=len(data),
        outliers_removed=removed,
        fit_ms=fit_ms,
        extra={"fit_cpu_ms": fit_cpu_ms},
    )
    if options.correction_factor:
        trained.correction_factor = correction_factor(trained, data)
    return trained


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (cmdstan runs as a child):
    unlike wall time, it does not grow when other work shares the machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def holidays_near(model: Prophet, days: pd.Series) -> Iterator[None]:
    """Let Prophet see only the holiday rows whose window can touch ``days``.

    Prophet builds its holiday features in a Python loop over every row of the holidays
    frame and every window day; the frame covers all years of the data and some years
    ahead, so a 28-day forecast spent most of its time on holidays of other years. The
    features of ``days`` do not change: one row per holiday name is kept, so every
    (holiday, window day) column the model knows is still built (all zeros if far away).
    """
    holidays = model.holidays
    if holidays is None or holidays.empty or len(days) == 0:
        yield
        return
    reach = int(max(holidays["upper_window"].max(), -holidays["lower_window"].min(), 0)) + 1
    first, last = pd.Timestamp(days.min()), pd.Timestamp(days.max())
    near = holidays[
        (holidays["ds"] >= first - pd.Timedelta(days=reach))
        & (holidays["ds"] <= last + pd.Timedelta(days=reach))
    ]
    if model.train_holiday_names is not None:
        # after the fit: every name the model was trained with needs its columns
        names = holidays[holidays["holiday"].isin(model.train_holiday_names)]
        near = pd.concat([near, names.drop_duplicates("holiday")]).drop_duplicates()
    model.holidays = near.reset_index(drop=True)
    try:
        yield
    finally:
        model.holidays = holidays


def point_forecast(trained: TrainedModel, frame: pd.DataFrame) -> np.ndarray:
    """yhat for the rows of ``frame`` without uncertainty sampling, on the model's scale."""
    model = trained.model
    saved = model.uncertainty_samples
    model.uncertainty_samples = 0
    try:
        with holidays_near(model, frame["ds"]):
            predicted = model.predict(add_conditions(frame[_input_columns(frame)], trained.options))
    finally:
        model.uncertainty_samples = saved
    return predicted["yhat"].to_numpy()


def correction_factor(trained: TrainedModel, data: pd.DataFrame) -> float:
    """median(actual / fitted) over the training days (or the last ``correction_window_days``
    of them), clamped to the configured bounds."""
    options = trained.options
    if options.correction_window_days:
        start = data["ds"].iloc[-1] - pd.Timedelta(days=options.correction_window_days - 1)
        data = data[data["ds"] >= start]
    fitted = to_original_scale(point_forecast(trained, data), options)
    actual = to_original_scale(data["y"].to_numpy(), options)
    usable = (fitted > 0) & (actual > 0)
    if not usable.any():
        return 1.0
    ratio = float(np.median(actual[usable] / fitted[usable]))
    return float(np.clip(ratio, options.correction_min, options.correction_max))


def _input_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in ("ds", "promo") if c in frame]


# --- backtests ---------------------------------------------------------------------------
def evaluate_window(
    observed: pd.DataFrame,
    events: Sequence[Event],
    options: ForecastOptions,
    sku: str,
    cutoff: pd.Timestamp,
    horizon: int,
    frame: pd.DataFrame,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Train on days ≤ cutoff, forecast the next ``horizon`` days, score against the days
    that really had sales (``observed``), next to the seasonal-naive baseline.

    ``frame`` is the training input after the missing-day policy; ``observed`` is the raw
    series (days with sales), so every policy is scored on the same days.
    """
    from siprems.forecasting.predict import predict_horizon

    train = frame[frame["ds"] <= cutoff]
    end = cutoff + pd.Timedelta(days=horizon)
    test = observed[(observed["ds"] > cutoff) & (observed["ds"] <= end)]
    history = observed[observed["ds"] <= cutoff].set_index("ds")["y"]
    if test.empty:
        raise InsufficientDataError(
            f"{sku}: no sales in the backtest window after {cutoff:%Y-%m-%d}"
        )
    trained = fit(train, events, options, sku, work_dir)
    started = time.perf_counter()
    quantiles = predict_horizon(trained, test[["ds", "promo"]]).frame
    predict_ms = (time.perf_counter() - started) * 1000
    scale = metrics.seasonal_naive_scale(history)
    actual = test["y"].to_numpy()
    naive = metrics.seasonal_naive_forecast(history, test["ds"])
    naive_ok = ~np.isnan(naive)
    model_scores = metrics.score(
        actual, quantiles["p50"], scale, quantiles["p10"], quantiles["p90"]
    )
    naive_scores = (
        metrics.score(actual[naive_ok], naive[naive_ok], scale) if naive_ok.any() else None
    )
    return {
        "cutoff": cutoff.date().isoformat(),
        "train_days": int(len(train)),
        "test_days": int(len(test)),
        "fit_ms": round(trained.fit_ms, 1),
        "predict_ms": round(predict_ms, 1),
        "model": model_scores,
        "seasonal_naive": naive_scores,
    }


def holdout_backtest(
    frame: pd.DataFrame,
    observed: pd.DataFrame,
    events: Sequence[Event],
    options: ForecastOptions,
    sku: str,
    horizon: int,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """The last ``horizon`` days held out; a dict with ``skipped`` if the history is too short."""
    last = observed["ds"].max()
    cutoff = last - pd.Timedelta(days=horizon)
    try:
        result = evaluate_window(observed, events, options, sku, cutoff, horizon, frame, work_dir)
    except InsufficientDataError as exc:
        return {"horizon_days": horizon, "skipped": exc.message}
    result["horizon_days"] = horizon
    result["accuracy"] = metrics.legacy_accuracy(result["model"]["mape"])
    return result


def rolling_origin_backtest(
    frame: pd.DataFrame,
    observed: pd.DataFrame,
    events: Sequence[Event],
    options: ForecastOptions,
    sku: str,
    horizon: int = 28,
    windows: int = 6,
    step_days: int = 56,
    work_dir: Path | None = None,
    last_day: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """``windows`` origins ``step_days`` apart, the latest ending on ``last_day`` (default:
    the last day of data). An earlier ``last_day`` scores the same protocol on a period
    that played no part in choosing the options (a validation year)."""
    last = observed["ds"].max() if last_day is None else pd.Timestamp(last_day)
    results = []
    for k in range(windows):
        cutoff = last - pd.Timedelta(days=horizon + k * step_days)
        try:
            results.append(
                evaluate_window(observed, events, options, sku, cutoff, horizon, frame, work_dir)
            )
        except InsufficientDataError as exc:
            results.append({"cutoff": cutoff.date().isoformat(), "skipped": exc.message})
    scored = [r for r in results if "model" in r]

    def mean_of(source: str, name: str) -> float | None:
        values = [r[source][name] for r in scored if r.get(source) and r[source][name] is not None]
        return round(float(np.mean(values)), 4) if values else None

    return {
        "windows": list(reversed(results)),
        "scored_windows": len(scored),
        "mean": {name: mean_of("model", name) for name in ("mase", "wape", "smape", "coverage_80")},
        "seasonal_naive_mean": {name: mean_of("seasonal_naive", name) for name in ("mase", "wape")},
    }


def training_window_days(trained: TrainedModel) -> int:
    return (trained.last_day - trained.first_day + timedelta(days=1)).days
