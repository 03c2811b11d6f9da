"""Prophet training, the hold-out backtest and the rolling-origin backtest."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import resource
import shutil
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from siprems.errors import InsufficientDataError, TrainingFailedError
from siprems.forecasting import level, metrics
from siprems.forecasting.events import holiday_frame
from siprems.forecasting.kernel import ForecastKernel, weekend
from siprems.forecasting.preprocess import day_numbers, to_original_scale, training_frame

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
YEARLY_PERIOD = 365.25  # Prophet's yearly period


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
    # offsets on the model's scale for forecast days 1, 2, ... after last_day (recent_level)
    recent_level: tuple[float, ...] = ()
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
    if options.weekend_yearly_order:
        out["weekend"] = weekend(day_numbers(out["ds"]))
    return out


def build_model(options: ForecastOptions, holidays: pd.DataFrame | None) -> Prophet:
    from prophet import Prophet

    model = Prophet(
        growth="linear",
        yearly_seasonality=options.yearly_seasonality,
        weekly_seasonality=(
            False
            if options.summer_winter_weekly or options.weekly_prior_scale is not None
            else options.weekly_seasonality
        ),
        daily_seasonality=False,
        seasonality_mode=options.seasonality_mode,
        seasonality_prior_scale=options.seasonality_prior_scale,
        changepoint_prior_scale=options.changepoint_prior_scale,
        changepoint_range=options.changepoint_range,
        n_changepoints=options.n_changepoints,
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
    order = 3 if options.weekly_seasonality is True else int(options.weekly_seasonality)
    if options.weekly_prior_scale is not None and order and not options.summer_winter_weekly:
        # Prophet's own weekly terms, with their own prior
        model.add_seasonality(
            name="weekly", period=7, fourier_order=order, prior_scale=options.weekly_prior_scale
        )
    if options.summer_winter_weekly:
        model.add_seasonality(
            name="weekly_summer", period=7, fourier_order=order, condition_name="summer"
        )
        model.add_seasonality(
            name="weekly_winter", period=7, fourier_order=order, condition_name="winter"
        )
    if options.weekend_yearly_order:
        model.add_seasonality(
            name="yearly_weekend",
            period=YEARLY_PERIOD,
            fourier_order=options.weekend_yearly_order,
            condition_name="weekend",
        )
    if options.promo_regressor:
        model.add_regressor("promo")
    return model


@dataclass
class FeatureMatrix:
    """Prophet's regression features (seasonalities, holidays, regressors) for every calendar
    day of a span, built once (``seasonality_features``: Prophet's, with numpy) and sliced
    for each fit of a training (the hold-out fit and the refit on all data see the same days
    but one window apart; Prophet rebuilt the matrix, holiday loop included, for each fit).

    Features are functions of the day alone (Fourier terms, holiday windows, month-based
    conditions), except the regressor columns, which each fit takes from its own history
    (Prophet standardises a regressor by the history it is fitted on). Every fit of one
    matrix has the same columns, in the same order, so one fit's coefficients can start
    another (``warm_start``). A holiday whose window touches only days a fit does not train
    on is an all-zero column for that fit: its coefficient stays 0 at the optimum, as if
    Prophet had not seen the holiday (which is what it did before).
    """

    columns: pd.DataFrame  # index: calendar days; columns: Prophet's feature names
    prior_scales: list[float]
    component_cols: pd.DataFrame
    modes: dict[str, list[str]]
    holiday_names: pd.Series | None
    regressors: tuple[str, ...]

    @classmethod
    def build(
        cls,
        options: ForecastOptions,
        holidays: pd.DataFrame | None,
        first_day: pd.Timestamp,
        last_day: pd.Timestamp,
    ) -> FeatureMatrix:
        days = pd.DataFrame({"ds": pd.date_range(first_day, last_day, freq="D")})
        days["y"] = 0.0
        model = build_model(options, holidays)
        prepared = model.setup_dataframe(add_conditions(days, options), initialize_scales=True)
        model.history = prepared
        model.set_auto_seasonalities()
        with holidays_near(model, prepared["ds"]):
            features, prior_scales, component_cols, modes = seasonality_features(model, prepared)
        return cls(
            columns=features,
            prior_scales=list(prior_scales),
            component_cols=component_cols,
            modes=modes,
            holiday_names=model.train_holiday_names,
            regressors=tuple(model.extra_regressors),
        )

    def rows(self, history: pd.DataFrame) -> pd.DataFrame:
        """The features of a prepared history (Prophet's ``setup_dataframe`` output)."""
        days = pd.DatetimeIndex(history["ds"])
        if not days.isin(self.columns.index).all():
            raise ValueError("the feature matrix does not cover every day of the history")
        features = self.columns.loc[days].reset_index(drop=True)
        for name in self.regressors:
            features[name] = history[name].to_numpy()
        return features


def seasonality_features(
    model: Prophet, df: pd.DataFrame
) -> tuple[pd.DataFrame, list[float], pd.DataFrame, dict[str, list[str]]]:
    """Prophet's ``make_all_seasonality_features`` (1.5.0) with numpy: the same feature
    columns (bit for bit: the same float operations in the same order), prior scales,
    component matrix and modes, indexed by ``df``'s days, without Prophet's per-block
    DataFrames, ``concat`` and ``crosstab`` (most of the matrix's time once the holiday
    block was numpy). ``test_numpy_features_equal_prophets`` compares them on the Kiel data."""
    dates = pd.DatetimeIndex(df["ds"])
    # Prophet's t: (ds - epoch).total_seconds() / 86400, exact for whole seconds
    seconds = (dates - pd.Timestamp("1970-01-01", tz=dates.tz)).total_seconds().to_numpy()
    x_t = np.pi * 2 * (seconds / (24 * 60 * 60))
    blocks: list[np.ndarray] = []
    names: list[str] = []
    prior_scales: list[float] = []
    modes: dict[str, list[str]] = {"additive": [], "multiplicative": []}
    for name, props in model.seasonalities.items():
        order = int(props["fourier_order"])
        if not order >= 1:
            raise ValueError("series_order must be >= 1")
        block = np.empty((len(dates), 2 * order))
        for i in range(order):
            c = (i + 1) / props["period"] * x_t
            block[:, 2 * i] = np.sin(c)
            block[:, 2 * i + 1] = np.cos(c)
        if props["condition_name"] is not None:
            block[~df[props["condition_name"]].to_numpy(dtype=bool)] = 0.0
        blocks.append(block)
        names.extend(f"{name}_delim_{i + 1}" for i in range(2 * order))
        prior_scales.extend([props["prior_scale"]] * (2 * order))
        modes[props["mode"]].append(name)
    holidays = model.construct_holiday_dataframe(df["ds"])
    if len(holidays) > 0:
        block, columns, holiday_priors, holiday_names = _holiday_features(model, df["ds"], holidays)
        blocks.append(block)
        names.extend(columns)
        prior_scales.extend(holiday_priors)
        modes[model.holidays_mode].extend(holiday_names)
    for name, props in model.extra_regressors.items():
        blocks.append(df[name].to_numpy(dtype=float).reshape(-1, 1))
        names.append(name)
        prior_scales.append(props["prior_scale"])
        modes[props["mode"]].append(name)
    if not blocks:  # Prophet's dummy column, so that X is never empty
        blocks.append(np.zeros((len(dates), 1)))
        names.append("zeros")
        prior_scales.append(1.0)
    features = pd.DataFrame(np.hstack(blocks), columns=names, index=dates)
    return features, prior_scales, _component_columns(model, names, modes), modes


def _component_columns(
    model: Prophet, columns: Sequence[str], modes: dict[str, list[str]]
) -> pd.DataFrame:
    """Prophet's ``regressor_column_matrix`` (1.5.0) without ``crosstab``: for each
    component (seasonality, holiday, regressor and the groups Prophet adds), which feature
    columns it sums. Appends the group components to ``modes`` as Prophet does."""
    own = [name.split("_delim_")[0] for name in columns]
    members: dict[str, set[int]] = {}
    for col, component in enumerate(own):
        members.setdefault(component, set()).add(col)

    def add_group(name: str, group: Sequence[str]) -> None:
        wanted = set(group)
        cols = {col for col, component in enumerate(own) if component in wanted}
        if cols:
            members.setdefault(name, set()).update(cols)

    if model.train_holiday_names is not None:
        add_group("holidays", list(model.train_holiday_names.unique()))
    for mode in ("additive", "multiplicative"):
        add_group(f"{mode}_terms", modes[mode])
        regressors = [r for r, props in model.extra_regressors.items() if props["mode"] == mode]
        add_group(f"extra_regressors_{mode}", regressors)
        modes[mode].append(f"{mode}_terms")
        modes[mode].append(f"extra_regressors_{mode}")
    modes[model.holidays_mode].append("holidays")
    # crosstab's order: the components sorted, then the missing terms columns appended
    names = sorted(members)
    names += [n for n in ("additive_terms", "multiplicative_terms") if n not in members]
    matrix = np.zeros((len(own), len(names)), dtype=np.int64)
    for j, name in enumerate(names):
        matrix[sorted(members.get(name, ())), j] = 1
    component_cols = pd.DataFrame(
        matrix,
        index=pd.Index(np.arange(len(own)), name="col"),
        columns=pd.Index(names, name="component"),
    ).drop(columns="zeros", errors="ignore")
    if (component_cols["additive_terms"] + component_cols["multiplicative_terms"]).max() > 1:
        raise ValueError("A bug occurred in seasonal components.")
    return component_cols


def _holiday_features(
    model: Prophet, dates: pd.Series, holidays: pd.DataFrame
) -> tuple[np.ndarray, list[str], list[float], list[str]]:
    """Prophet's ``make_holiday_features`` (1.5.0) with numpy: the same columns (one per
    holiday name and window day, sorted by name; returned as an array and their names),
    prior scales and holiday names, without its ``pd.to_datetime`` and ``get_loc`` per
    holiday row and window day. Sets ``train_holiday_names`` as Prophet does."""
    position = {
        int(day): i
        for i, day in enumerate(np.asarray(dates, dtype="datetime64[D]").astype(np.int64))
    }
    count = len(holidays)
    days = np.asarray(holidays["ds"], dtype="datetime64[D]").astype(np.int64)
    lowers = holidays["lower_window"] if "lower_window" in holidays else pd.Series([0] * count)
    uppers = holidays["upper_window"] if "upper_window" in holidays else pd.Series([0] * count)
    default_scale = float(model.holidays_prior_scale)
    scales = holidays["prior_scale"] if "prior_scale" in holidays else [default_scale] * count
    hits: dict[str, list[int]] = {}
    prior_scales: dict[str, float] = {}
    for name, day, lower, upper, scale in zip(
        holidays["holiday"], days.tolist(), lowers, uppers, scales, strict=True
    ):
        try:
            lower, upper = int(lower), int(upper)
        except ValueError:  # Prophet's rule for a missing window
            lower = upper = 0
        scale = float(scale)
        if np.isnan(scale):
            scale = default_scale
        if name in prior_scales and prior_scales[name] != scale:
            raise ValueError(f"Holiday {name!r} does not have consistent prior scale")
        if scale <= 0:
            raise ValueError("Prior scale must be > 0")
        prior_scales[name] = scale
        for offset in range(lower, upper + 1):
            rows = hits.setdefault(f"{name}_delim_{'+' if offset >= 0 else '-'}{abs(offset)}", [])
            at = position.get(day + offset)
            if at is not None:
                rows.append(at)
    names = sorted(hits)
    block = np.zeros((len(position), len(names)))
    for j, key in enumerate(names):
        block[hits[key], j] = 1.0
    scale_list = [prior_scales[key.split("_delim_")[0]] for key in names]
    holiday_names = list(prior_scales)
    if model.train_holiday_names is None:
        model.train_holiday_names = pd.Series(holiday_names)
    return block, names, scale_list, holiday_names


def fit(
    frame: pd.DataFrame,
    events: Sequence[Event],
    options: ForecastOptions,
    sku: str,
    work_dir: Path | None = None,
    *,
    features: FeatureMatrix | None = None,
    init: FitState | None = None,
) -> TrainedModel:
    """Fit one model on a raw daily frame (ds, y, promo on the original scale).

    ``features`` covering the training days saves building them (one matrix per training);
    ``init`` starts the optimiser from an earlier fit of the product (``warm_start``).
    """
    data, removed = training_frame(frame, options, sku)
    first_day = data["ds"].iloc[0].date()
    last_day = data["ds"].iloc[-1].date()
    holidays = holidays_of(events, options, first_day, last_day)
    # the fit's time includes building its features (Prophet's fit builds them too)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    if features is None:
        features = FeatureMatrix.build(options, holidays, data["ds"].iloc[0], data["ds"].iloc[-1])
    model = build_model(options, holidays)
    stan_args: dict[str, Any] = {}
    if options.optimizer_tol_rel_grad is not None and len(data) >= NEWTON_BELOW_ROWS:
        # Prophet optimises short series with Newton, which takes no such tolerance
        stan_args["tol_rel_grad"] = options.optimizer_tol_rel_grad
    with job_directory(work_dir) as output_dir:
        try:
            iterations = fit_prophet(
                model, add_conditions(data, options), features, output_dir, init, **stan_args
            )
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
        extra={
            "fit_cpu_ms": fit_cpu_ms,
            "iterations": iterations,
            "chain": 0 if init is None else init.chain + 1,
            "features": features,
        },
    )
    if options.correction_factor or options.recent_level_days:
        # both read the fit over the training days: computed once
        point = kernel_of(trained).point(data["ds"].to_numpy(), _promo(data))
        if options.correction_factor:
            trained.correction_factor = correction_factor(trained, data, point)
        if options.recent_level_days:
            trained.recent_level = recent_level(trained, data, point)
    return trained


def fit_prophet(
    model: Prophet,
    df: pd.DataFrame,
    features: FeatureMatrix,
    output_dir: Path,
    init: FitState | None = None,
    **stan_args: Any,
) -> int | None:
    """``Prophet.fit`` (prophet 1.5.0, MAP, no regressor models), step for step with
    Prophet's own methods, except where the time went: the features are rows of
    ``features`` and cmdstan's input files are written with orjson (the same numbers as
    stanio's writer: shortest round-trip repr) instead of stanio's pure-Python encoder.
    The fitted model is Prophet's (``model_to_json``, ``predict`` work as after ``fit``);
    ``tests/integration/test_forecasting_train.py`` checks the parameters against
    ``Prophet.fit``. Returns the optimiser's iterations (None when it did not run).
    """
    if model.history is not None:
        raise ValueError("Prophet object can only be fit once")
    history = df[df["y"].notnull()].copy()
    if history.shape[0] < 2:
        raise ValueError("Dataframe has less than 2 non-NaN rows.")
    model.history_dates = pd.to_datetime(pd.Series(df["ds"].unique(), name="ds")).sort_values()
    model.history = model.setup_dataframe(history, initialize_scales=True)
    model.set_auto_seasonalities()
    seasonal_features = features.rows(model.history)
    # copies: one matrix serves many fits (and, cached, many products)
    names = features.holiday_names
    model.train_holiday_names = names.copy() if names is not None else None
    model.train_component_cols = features.component_cols.copy()
    model.component_modes = deepcopy(features.modes)
    model.fit_kwargs = deepcopy(stan_args)
    model.set_changepoints()

    from prophet.models import TrendIndicator

    start = dataclasses.asdict(model.calculate_initial_params(seasonal_features.shape[1]))
    if init is not None:
        carried = warm_start(init, model, seasonal_features.columns)
        start = model.stan_backend.sanitize_custom_inits(start, carried)
    iterations = None
    y = model.history["y_scaled"].to_numpy()
    if y.min() == y.max():
        # Prophet's own shortcut for a constant series: its initial parameters
        default = dataclasses.asdict(model.calculate_initial_params(seasonal_features.shape[1]))
        model.params = {name: np.array(value).reshape((1, -1)) for name, value in default.items()}
        model.params["sigma_obs"] = np.array([[1e-9]])
        model.stan_fit = None
    else:
        cols = features.component_cols
        data = {
            "T": int(len(y)),
            "S": int(len(model.changepoints_t)),
            "K": int(seasonal_features.shape[1]),
            "tau": float(model.changepoint_prior_scale),
            "trend_indicator": TrendIndicator[model.growth.upper()].value,
            "y": y,
            "t": model.history["t"].to_numpy(),
            "cap": np.zeros(len(y)),
            "t_change": np.asarray(model.changepoints_t, dtype=float),
            "s_a": cols["additive_terms"].to_numpy(),
            "s_m": cols["multiplicative_terms"].to_numpy(),
            "X": seasonal_features.to_numpy(dtype=float),
            "sigmas": [float(s) for s in features.prior_scales],
        }
        model.params, model.stan_fit, iterations = _optimize(
            model, data, start, output_dir, stan_args
        )
    if len(model.changepoints) == 0:
        # as Prophet: with no changepoints the slope is k alone
        model.params["k"] = model.params["k"] + model.params["delta"].reshape(-1)
        model.params["delta"] = np.zeros(model.params["delta"].shape).reshape((-1, 1))
    return iterations


def _optimize(
    model: Prophet,
    data: dict[str, Any],
    init: dict[str, Any],
    output_dir: Path,
    stan_args: dict[str, Any],
) -> tuple[dict[str, np.ndarray], Any, int | None]:
    """cmdstan's optimiser on files written here; Prophet's choice of algorithm and its
    fallback to Newton when L-BFGS ends abnormally."""
    import orjson

    backend = model.stan_backend
    data_file, init_file = output_dir / "data.json", output_dir / "init.json"
    option = orjson.OPT_SERIALIZE_NUMPY
    data_file.write_bytes(orjson.dumps(_contiguous(data), option=option))
    init_values = {
        "k": float(init["k"]),
        "m": float(init["m"]),
        "delta": np.asarray(init["delta"], dtype=float).ravel(),
        "beta": np.asarray(init["beta"], dtype=float).ravel(),
        "sigma_obs": float(init["sigma_obs"]),
    }
    init_file.write_bytes(orjson.dumps(_contiguous(init_values), option=option))
    args: dict[str, Any] = {
        "data": str(data_file),
        "inits": str(init_file),
        "algorithm": "Newton" if data["T"] < NEWTON_BELOW_ROWS else "LBFGS",
        "iter": int(1e4),
        "output_dir": str(output_dir),
        # the console shows the last iteration whatever the interval (its count is read
        # back for the benchmarks); a line per iteration cost ~6 ms of Python a fit
        "refresh": int(1e4),
        **stan_args,
    }
    try:
        stan_fit = backend.model.optimize(**args)
    except RuntimeError:
        if not backend.newton_fallback or args["algorithm"] == "Newton":
            raise
        args["algorithm"] = "Newton"
        args.pop("tol_rel_grad", None)
        stan_fit = backend.model.optimize(**args)
    params = backend.stan_to_dict_numpy(stan_fit.column_names, stan_fit.optimized_params_np)
    for name in params:
        params[name] = params[name].reshape((1, -1))
    return params, stan_fit, _iterations(stan_fit)


def _contiguous(values: dict[str, Any]) -> dict[str, Any]:
    """orjson writes C-contiguous numpy arrays only."""
    return {
        k: np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v for k, v in values.items()
    }


def _iterations(stan_fit: Any) -> int | None:
    """The optimiser's iteration count, from cmdstan's console output (for the benchmarks)."""
    try:
        text = Path(stan_fit.runset.stdout_files[0]).read_text()
    except (AttributeError, IndexError, OSError):
        return None
    counts = [int(line.split()[0]) for line in text.splitlines() if line.strip()[:1].isdigit()]
    return counts[-1] if counts else None


@dataclass(frozen=True)
class FitState:
    """What a later fit of the same product needs to start from this one: the fitted
    parameters, the scales they are on, and the feature column of each coefficient. Small
    and JSON-able (it travels in the model's metadata to the next night's training).
    ``chain`` counts the warm starts in a row that led to this fit (0: a cold fit)."""

    k: float
    m: float
    delta: tuple[float, ...]
    beta: Mapping[str, float]  # by Prophet's feature column name
    additive: frozenset[str]  # the columns of additive components (their beta scales with y)
    sigma_obs: float
    y_scale: float
    start: str  # ISO timestamp of t = 0
    t_scale_days: float
    changepoints_t: tuple[float, ...]
    chain: int = 0

    @classmethod
    def of(cls, trained: TrainedModel) -> FitState:
        model, columns = trained.model, trained.extra["features"].columns.columns
        params = model.params
        additive = model.train_component_cols["additive_terms"].to_numpy()
        return cls(
            k=float(params["k"][0, 0]),
            m=float(params["m"][0, 0]),
            delta=tuple(float(x) for x in params["delta"][0]),
            beta={str(c): float(b) for c, b in zip(columns, params["beta"][0], strict=True)},
            additive=frozenset(str(c) for c, a in zip(columns, additive, strict=True) if a),
            sigma_obs=float(params["sigma_obs"][0, 0]),
            y_scale=float(model.y_scale),
            start=model.start.isoformat(),
            t_scale_days=model.t_scale / pd.Timedelta(days=1),
            changepoints_t=tuple(float(x) for x in model.changepoints_t),
            chain=int(trained.extra.get("chain", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["beta"] = dict(self.beta)
        values["additive"] = sorted(self.additive)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FitState:
        return cls(
            k=float(values["k"]),
            m=float(values["m"]),
            delta=tuple(float(x) for x in values["delta"]),
            beta={str(c): float(b) for c, b in values["beta"].items()},
            additive=frozenset(values["additive"]),
            sigma_obs=float(values["sigma_obs"]),
            y_scale=float(values["y_scale"]),
            start=str(values["start"]),
            t_scale_days=float(values["t_scale_days"]),
            changepoints_t=tuple(float(x) for x in values["changepoints_t"]),
            chain=int(values.get("chain", 0)),
        )


def warm_start(source: FitState, target: Prophet, columns: Sequence[str]) -> dict[str, Any]:
    """Initial values for ``target`` (set up, not yet optimised) from the fit ``source``,
    carried over to ``target``'s scales: y (Prophet divides y by its largest value) and time
    (t runs from 0 at the first training day to 1 at the last). The trend keeps its level
    and slope at ``target``'s first day; changepoint coefficients keep their index (the
    changepoints of two windows a night apart are a day apart); feature coefficients follow
    their column by name (a column new to ``target`` starts at 0). The optimiser then runs
    from there with its usual stopping rule."""
    ratio = source.y_scale / float(target.y_scale)
    target_days = target.t_scale / pd.Timedelta(days=1)
    t0 = (target.start - pd.Timestamp(source.start)) / pd.Timedelta(days=1) / source.t_scale_days
    deltas = np.asarray(source.delta, dtype=float)
    changepoints = np.asarray(source.changepoints_t, dtype=float)
    passed = changepoints <= t0
    slope = source.k + deltas[passed].sum()
    level = slope * t0 + source.m - (deltas[passed] * changepoints[passed]).sum()
    time_ratio = target_days / source.t_scale_days
    beta = np.asarray(
        [
            source.beta.get(c, 0.0) * (ratio if c in source.additive else 1.0)
            for c in map(str, columns)
        ]
    )
    return {
        "k": slope * time_ratio * ratio,
        "m": level * ratio,
        "delta": deltas * time_ratio * ratio,
        "beta": beta,
        "sigma_obs": source.sigma_obs * ratio,
    }


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


def correction_factor(trained: TrainedModel, data: pd.DataFrame, point: np.ndarray) -> float:
    """median(actual / fitted) over the training days ``data`` (or the last
    ``correction_window_days`` of them), clamped to the configured bounds. ``point``: the fit
    on each of ``data``'s days (model scale), from the numpy kernel (Prophet's ``predict`` to
    rounding error, without rebuilding its feature frames)."""
    options = trained.options
    if options.correction_window_days:
        start = data["ds"].iloc[-1] - pd.Timedelta(days=options.correction_window_days - 1)
        recent = (data["ds"] >= start).to_numpy()
        data, point = data[recent], point[recent]
    fitted = to_original_scale(point, options)
    actual = to_original_scale(data["y"].to_numpy(), options)
    usable = (fitted > 0) & (actual > 0)
    if not usable.any():
        return 1.0
    ratio = float(np.median(actual[usable] / fitted[usable]))
    return float(np.clip(ratio, options.correction_min, options.correction_max))


def recent_level(trained: TrainedModel, data: pd.DataFrame, point: np.ndarray) -> tuple[float, ...]:
    """The recent-level offsets of a fitted model from its training days' residuals (model
    scale; siprems.forecasting.level): ``data``'s actual values less ``point``, the fit."""
    return level.persisting_offsets(
        data["ds"].to_numpy().astype("datetime64[D]"),
        data["y"].to_numpy(dtype=float) - point,
        days_back=trained.options.recent_level_days or 0,
    )


def kernel_of(trained: TrainedModel) -> ForecastKernel:
    """The numpy kernel of a fitted model, built once and kept with it."""
    kernel = trained.extra.get("kernel")
    if kernel is None:
        kernel = trained.extra["kernel"] = ForecastKernel.from_prophet(trained.model)
    return kernel


def _promo(frame: pd.DataFrame) -> np.ndarray | None:
    return frame["promo"].to_numpy(dtype=float) if "promo" in frame else None


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
    *,
    features: FeatureMatrix | None = None,
    init: FitState | None = None,
) -> tuple[dict[str, Any], TrainedModel]:
    """Train on days ≤ cutoff, forecast the next ``horizon`` days, score against the days
    that really had sales (``observed``), next to the seasonal-naive baseline. Returns the
    scores and the model trained on the window.

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
    trained = fit(train, events, options, sku, work_dir, features=features, init=init)
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
    scores = {
        "cutoff": cutoff.date().isoformat(),
        "train_days": int(len(train)),
        "test_days": int(len(test)),
        "fit_ms": round(trained.fit_ms, 1),
        "predict_ms": round(predict_ms, 1),
        "model": model_scores,
        "seasonal_naive": naive_scores,
    }
    return scores, trained


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
    return _holdout(frame, observed, events, options, sku, horizon, work_dir)[0]


def train_with_holdout(
    frame: pd.DataFrame,
    observed: pd.DataFrame,
    events: Sequence[Event],
    options: ForecastOptions,
    sku: str,
    horizon: int,
    work_dir: Path | None = None,
    previous: Mapping[str, FitState] | None = None,
    *,
    concurrent: bool | None = None,
) -> tuple[TrainedModel, dict[str, Any]]:
    """A training: the hold-out backtest of the last ``horizon`` days, then the model fitted
    on all data (the one to serve), and the backtest's scores.

    Both fits share one feature matrix (built once). With two CPUs (``concurrent``, by
    default ``two_cpus()``) they run at the same time (two cmdstan processes: on two free
    CPUs the training takes about as long as its longer fit; each fit's
    ``fit_ms``/``fit_cpu_ms`` then overlaps the other's); else one after the other (the
    same fits: on one CPU the overlap only adds switching). With ``previous`` (the
    last training's ``fit_states``, same options) and ``options.warm_start_nights``, each
    fit starts from its counterpart of the night before, unless that one already ends a
    chain of that many warm starts. The refit never starts from the hold-out fit:
    measured, that start (28 days apart) saved no iterations on some products and moved
    forecasts by up to 1 %
    (docs/FORECASTING.md, "Speed"). The fits' states are in ``trained.extra["fit_states"]``.
    """
    cutoff = observed["ds"].max() - pd.Timedelta(days=horizon)
    held_frame = frame[frame["ds"] <= cutoff]
    first = training_start(held_frame if not held_frame.empty else frame, options)
    last = frame["ds"].iloc[-1]
    holidays = holidays_of(events, options, first.date(), last.date())
    features = _shared_features(options, holidays, first, last)
    # The two fits are independent: the refit runs in a thread while this one runs the
    # hold-out, so their cmdstan processes overlap (Python's parts still take turns).
    refit = functools.partial(
        fit,
        frame,
        events,
        options,
        sku,
        work_dir,
        features=features,
        init=_warm(previous, "final", options),
    )
    if concurrent is None:
        concurrent = two_cpus()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="refit") as pool:
        refitted = pool.submit(refit) if concurrent else None
        backtest, held_out = _holdout(
            frame,
            observed,
            events,
            options,
            sku,
            horizon,
            work_dir,
            features=features,
            init=_warm(previous, "holdout", options),
        )
        trained = refitted.result() if refitted is not None else refit()
    trained.extra["fit_states"] = {
        "final": FitState.of(trained),
        **({"holdout": FitState.of(held_out)} if held_out is not None else {}),
    }
    return trained, backtest


# Lambda gives a function one full vCPU at this memory size and a second one above it.
LAMBDA_ONE_VCPU_MB = 1769


def two_cpus() -> bool:
    """Whether this process can run two CPU-bound processes at once: on Lambda, whether its
    memory size buys more than one vCPU (the runtime shows two vCPUs whatever it buys);
    elsewhere, whether two CPUs are usable."""
    memory_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if memory_mb:
        return int(memory_mb) > LAMBDA_ONE_VCPU_MB
    return (os.process_cpu_count() or 1) >= 2


class _BoundedCache:
    """The ``size`` values last used, by key; built under a lock (a training's two fits, and
    the products of a train-all, may ask at the same time), read-only once built."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._values:
                self._values[key] = build()
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
            self._values.move_to_end(key)
            return self._values[key]

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


# Holiday frames by (options, events, years): ``holiday_frame`` depends on the years of the
# span alone, and builds the country's calendar anew on each call (three per training).
CACHED_HOLIDAY_FRAMES = 8
_HOLIDAYS = _BoundedCache(CACHED_HOLIDAY_FRAMES)


def holidays_of(
    events: Sequence[Event], options: ForecastOptions, first_day: date, last_day: date
) -> pd.DataFrame | None:
    """``holiday_frame(events, options, first_day, last_day)``, a copy of a cached one."""
    key = (options.config_hash(), tuple(events), first_day.year, last_day.year)
    frame = _HOLIDAYS.get_or_build(key, lambda: holiday_frame(events, options, first_day, last_day))
    return None if frame is None else frame.copy()


# Feature matrices by (options, holidays, span): features depend on the calendar alone, so
# the products of a nightly train-all whose histories span the same days share one.
CACHED_FEATURE_MATRICES = 8
_FEATURES = _BoundedCache(CACHED_FEATURE_MATRICES)


def _shared_features(
    options: ForecastOptions,
    holidays: pd.DataFrame | None,
    first: pd.Timestamp,
    last: pd.Timestamp,
) -> FeatureMatrix:
    holiday_key = (
        None
        if holidays is None
        else tuple(pd.util.hash_pandas_object(holidays, index=False).to_numpy().tolist())
    )
    key = (options.config_hash(), holiday_key, first, last)
    return _FEATURES.get_or_build(key, lambda: FeatureMatrix.build(options, holidays, first, last))


def _warm(
    previous: Mapping[str, FitState] | None, which: str, options: ForecastOptions
) -> FitState | None:
    state = (previous or {}).get(which)
    if state is None or state.chain >= options.warm_start_nights:
        return None
    return state


def training_start(frame: pd.DataFrame, options: ForecastOptions) -> pd.Timestamp:
    """The first day a fit of ``frame`` trains on (``max_history_days`` before its last day
    of data); the first day of ``frame`` without a limit."""
    if frame.empty:
        raise InsufficientDataError("no days to train on")
    first, last = frame["ds"].iloc[0], frame["ds"].iloc[-1]
    if options.max_history_days is None:
        return first
    return max(first, last - pd.Timedelta(days=options.max_history_days - 1))


def _holdout(
    frame: pd.DataFrame,
    observed: pd.DataFrame,
    events: Sequence[Event],
    options: ForecastOptions,
    sku: str,
    horizon: int,
    work_dir: Path | None = None,
    features: FeatureMatrix | None = None,
    init: FitState | None = None,
) -> tuple[dict[str, Any], TrainedModel | None]:
    last = observed["ds"].max()
    cutoff = last - pd.Timedelta(days=horizon)
    try:
        result, trained = evaluate_window(
            observed,
            events,
            options,
            sku,
            cutoff,
            horizon,
            frame,
            work_dir,
            features=features,
            init=init,
        )
    except InsufficientDataError as exc:
        return {"horizon_days": horizon, "skipped": exc.message}, None
    result["horizon_days"] = horizon
    result["accuracy"] = metrics.legacy_accuracy(result["model"]["mape"])
    return result, trained


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
                evaluate_window(observed, events, options, sku, cutoff, horizon, frame, work_dir)[0]
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
