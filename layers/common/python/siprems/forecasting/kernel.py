"""A fitted Prophet model evaluated with numpy alone: the forecast path's model.

Prophet's ``predict`` rebuilds its feature matrices with pandas on every call (most of a
forecast's time) and ``import prophet`` costs seconds; a fitted (MAP) model, however, is a
handful of arrays: a piecewise-linear trend, Fourier terms, holiday indicator columns and
regressor columns times the fitted coefficients. ``ForecastKernel`` holds those arrays,
taken from a fitted model by ``from_prophet`` (generic over its seasonalities, conditions,
holidays, regressors and component modes), and evaluates them:

- ``point``: Prophet's ``predict(...)["yhat"]`` (equal to rounding error);
- ``samples``: Prophet's ``predictive_samples(...)["yhat"]`` with its default vectorised
  sampler: future trend changes (a change at each future step with probability
  changepoints × step, Laplace sizes with the mean historical |delta|) and observation noise
  sigma_obs. The same random calls in the same order, from a ``RandomState(seed)``, so a
  seed gives the very draws Prophet gives after ``np.random.seed(seed)``.

``to_dict`` / ``from_dict`` give a small JSON-able form, stored next to ``model_to_json``.
Importing this module imports numpy only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = 1
_NS_PER_DAY = 86_400 * 10**9
_DELIM = "_delim_"


def weekend(day_numbers: np.ndarray) -> np.ndarray:
    """Saturday or Sunday, for days counted from 1970-01-01 (a Thursday)."""
    return (np.asarray(day_numbers, dtype=np.int64) + 3) % 7 >= 5


# Seasonality conditions that are a rule of the calendar: training builds the condition's
# column with the same function (siprems.forecasting.train.add_conditions), so every day of
# every shop has its value, including weekdays a product never sold on.
CALENDAR_CONDITIONS = {"weekend": weekend}


@dataclass(frozen=True)
class Seasonality:
    name: str
    period: float
    fourier_order: int
    condition: str | None


@dataclass(frozen=True, eq=False)  # numpy fields: identity, not element-wise, equality
class HolidayColumn:
    """One holiday feature column (a holiday name and a window offset): 1 on ``days``."""

    key: str  # Prophet's column name, e.g. "Ostermontag_delim_-1"
    days: np.ndarray  # int64 days since 1970-01-01 on which the column is 1


@dataclass(frozen=True)
class Regressor:
    name: str
    mu: float
    std: float


@dataclass(frozen=True, eq=False)  # numpy fields: identity, not element-wise, equality
class ForecastKernel:
    growth: str  # "linear" or "flat"
    start_ns: int  # model.start, ns since the epoch
    t_scale_ns: float  # model.t_scale in ns
    y_scale: float
    floor: float  # 0 with Prophet's default "absmax" scaling
    k: float
    m: float
    deltas: np.ndarray  # (changepoints,)
    changepoints_t: np.ndarray  # (changepoints,)
    beta: np.ndarray  # (columns,)
    additive: np.ndarray  # (columns,) 1.0 where the column is an additive term
    multiplicative: np.ndarray  # (columns,)
    sigma_obs: float
    history_step_t: float  # mean step of the training days on the t scale
    seasonalities: tuple[Seasonality, ...]
    holiday_columns: tuple[HolidayColumn, ...]
    regressors: tuple[Regressor, ...]
    # condition name -> its value in each month (Jan..Dec), read from the training data
    conditions: Mapping[str, tuple[bool | None, ...]]

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_prophet(cls, model: Any) -> ForecastKernel:
        """The kernel of a fitted Prophet model (MAP fit, linear or flat growth)."""
        if model.history is None or model.params is None:
            raise ValueError("the Prophet model is not fitted")
        if model.growth not in ("linear", "flat"):
            raise NotImplementedError(f"growth {model.growth!r} is not supported")
        if np.asarray(model.params["k"]).shape[0] != 1:
            raise NotImplementedError("only MAP fits (one parameter set) are supported")

        seasonalities = tuple(
            Seasonality(
                name=name,
                period=float(props["period"]),
                fourier_order=int(props["fourier_order"]),
                condition=props["condition_name"],
            )
            for name, props in model.seasonalities.items()
        )
        holiday_columns = _holiday_columns(model)
        regressors = tuple(
            Regressor(name=name, mu=float(props["mu"]), std=float(props["std"]))
            for name, props in model.extra_regressors.items()
        )
        keys = [
            f"{s.name}{_DELIM}{i + 1}" for s in seasonalities for i in range(2 * s.fourier_order)
        ]
        keys += [c.key for c in holiday_columns] + [r.name for r in regressors]
        beta = np.asarray(model.params["beta"], dtype=float)[0]
        _check_columns(model, keys, beta)
        cols = model.train_component_cols
        history = model.history
        t_hist = np.asarray(history["t"], dtype=float)
        return cls(
            growth=model.growth,
            start_ns=int(np.datetime64(model.start.to_datetime64(), "ns").astype(np.int64)),
            t_scale_ns=float(np.timedelta64(model.t_scale.to_timedelta64(), "ns").astype(np.int64)),
            y_scale=float(model.y_scale),
            floor=float(model.y_min) if model.scaling == "minmax" else 0.0,
            k=float(np.asarray(model.params["k"]).ravel()[0]),
            m=float(np.asarray(model.params["m"]).ravel()[0]),
            deltas=np.asarray(model.params["delta"], dtype=float)[0].copy(),
            changepoints_t=np.asarray(model.changepoints_t, dtype=float).copy(),
            beta=beta.copy(),
            additive=np.asarray(cols["additive_terms"], dtype=float),
            multiplicative=np.asarray(cols["multiplicative_terms"], dtype=float),
            sigma_obs=float(np.asarray(model.params["sigma_obs"]).ravel()[0]),
            history_step_t=float(np.diff(t_hist).mean()) if len(t_hist) > 1 else 0.0,
            seasonalities=seasonalities,
            holiday_columns=holiday_columns,
            regressors=regressors,
            conditions=_conditions_by_month(history, seasonalities),
        )

    # --- evaluation ------------------------------------------------------------------------
    def point(
        self,
        days: np.ndarray,
        promo: np.ndarray | None = None,
        *,
        regressors: Mapping[str, np.ndarray] | None = None,
        conditions: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """yhat on the model's scale for ``days`` (ascending), as Prophet's ``predict``.

        ``promo`` is the value of a ``promo`` regressor (0 if None); other regressors come in
        ``regressors``. Seasonality conditions are derived from the month (or the calendar rule
        of ``CALENDAR_CONDITIONS``) unless given.
        """
        day_numbers = _day_numbers(days)
        t = self._t(day_numbers)
        features = self._features(day_numbers, promo, regressors, conditions)
        trend = self._trend(t, self.deltas, self.changepoints_t) * self.y_scale + self.floor
        multiplicative = features @ (self.beta * self.multiplicative)
        additive = features @ (self.beta * self.additive) * self.y_scale
        return trend * (1 + multiplicative) + additive

    def samples(
        self,
        days: np.ndarray,
        promo: np.ndarray | None = None,
        n: int = 1000,
        seed: int = 0,
        *,
        regressors: Mapping[str, np.ndarray] | None = None,
        conditions: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``n`` posterior predictive draws of yhat per day, shape (len(days), n): Prophet's
        ``predictive_samples`` (vectorised) after ``np.random.seed(seed)``."""
        if n < 1:
            raise ValueError("n must be >= 1")
        day_numbers = _day_numbers(days)
        rng = np.random.RandomState(seed)  # Prophet's generator: same algorithms, same draws
        t = self._t(day_numbers)
        features = self._features(day_numbers, promo, regressors, conditions)
        expected = self._trend(t, self.deltas, self.changepoints_t)
        shifts = self._trend_uncertainty(t, n, rng)
        trend = (expected[None, :] + shifts) * self.y_scale + self.floor
        multiplicative = features @ (self.beta * self.multiplicative)
        additive = features @ (self.beta * self.additive) * self.y_scale
        noise = rng.normal(0, self.sigma_obs, trend.shape) * self.y_scale
        # (days, n) in C order: the callers reduce over the samples of each day
        return np.ascontiguousarray((trend * (1 + multiplicative) + additive + noise).T)

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "growth": self.growth,
            "start_ns": self.start_ns,
            "t_scale_ns": self.t_scale_ns,
            "y_scale": self.y_scale,
            "floor": self.floor,
            "k": self.k,
            "m": self.m,
            "deltas": self.deltas.tolist(),
            "changepoints_t": self.changepoints_t.tolist(),
            "beta": self.beta.tolist(),
            "additive": [int(x) for x in self.additive],
            "multiplicative": [int(x) for x in self.multiplicative],
            "sigma_obs": self.sigma_obs,
            "history_step_t": self.history_step_t,
            "seasonalities": [
                [s.name, s.period, s.fourier_order, s.condition] for s in self.seasonalities
            ],
            "holiday_columns": [[c.key, c.days.tolist()] for c in self.holiday_columns],
            "regressors": [[r.name, r.mu, r.std] for r in self.regressors],
            "conditions": {name: list(months) for name, months in self.conditions.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ForecastKernel:
        if d.get("format") != FORMAT:
            raise ValueError(f"unknown kernel format {d.get('format')!r}")
        return cls(
            growth=d["growth"],
            start_ns=int(d["start_ns"]),
            t_scale_ns=float(d["t_scale_ns"]),
            y_scale=float(d["y_scale"]),
            floor=float(d["floor"]),
            k=float(d["k"]),
            m=float(d["m"]),
            deltas=np.asarray(d["deltas"], dtype=float),
            changepoints_t=np.asarray(d["changepoints_t"], dtype=float),
            beta=np.asarray(d["beta"], dtype=float),
            additive=np.asarray(d["additive"], dtype=float),
            multiplicative=np.asarray(d["multiplicative"], dtype=float),
            sigma_obs=float(d["sigma_obs"]),
            history_step_t=float(d["history_step_t"]),
            seasonalities=tuple(
                Seasonality(name, float(period), int(order), condition)
                for name, period, order, condition in d["seasonalities"]
            ),
            holiday_columns=tuple(
                HolidayColumn(key, np.asarray(days, dtype=np.int64))
                for key, days in d["holiday_columns"]
            ),
            regressors=tuple(
                Regressor(name, float(mu), float(std)) for name, mu, std in d["regressors"]
            ),
            conditions={name: tuple(months) for name, months in d["conditions"].items()},
        )

    # --- internals -------------------------------------------------------------------------
    def _t(self, day_numbers: np.ndarray) -> np.ndarray:
        return (day_numbers * _NS_PER_DAY - self.start_ns) / self.t_scale_ns

    def _trend(self, t: np.ndarray, deltas: np.ndarray, changepoints_t: np.ndarray) -> np.ndarray:
        if self.growth == "flat":
            return self.m * np.ones_like(t)
        # Prophet's piecewise_linear, term for term
        deltas_t = (changepoints_t[None, :] <= t[..., None]) * deltas
        k_t = deltas_t.sum(axis=1) + self.k
        m_t = (deltas_t * -changepoints_t).sum(axis=1) + self.m
        return k_t * t + m_t

    def _trend_uncertainty(self, t: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
        """Prophet's ``_sample_uncertainty`` for linear growth: zero on training days (t <= 1),
        random slope changes accumulated over the future steps."""
        future = t > 1
        steps = int(future.sum())
        if steps == 0 or self.growth == "flat":
            return np.zeros((n, len(t)))
        step = np.diff(t[future]).mean() if steps > 1 else self.history_step_t
        likelihood = len(self.changepoints_t) * step
        mean_delta = np.mean(np.abs(self.deltas)) + 1e-8
        changes = rng.uniform(size=(n, steps)) < likelihood
        sizes = rng.laplace(0, mean_delta, size=changes.shape)
        shifts = sizes * changes
        shifts = (np.hstack([np.zeros((n, 1)), shifts])[:, :-1] + shifts) / 2
        future_part = shifts.cumsum(axis=1).cumsum(axis=1) * step
        return np.concatenate([np.zeros((n, len(t) - steps)), future_part], axis=1)

    def _features(
        self,
        day_numbers: np.ndarray,
        promo: np.ndarray | None,
        regressors: Mapping[str, np.ndarray] | None,
        conditions: Mapping[str, np.ndarray] | None,
    ) -> np.ndarray:
        """Prophet's seasonal feature matrix: Fourier terms, holiday columns, regressors."""
        columns: list[np.ndarray] = []
        x_t = np.pi * 2 * day_numbers.astype(float)
        months: np.ndarray | None = None
        for s in self.seasonalities:
            block = np.empty((len(day_numbers), 2 * s.fourier_order))
            for i in range(s.fourier_order):
                c = (i + 1) / s.period * x_t
                block[:, 2 * i] = np.sin(c)
                block[:, 2 * i + 1] = np.cos(c)
            if s.condition is not None:
                if conditions is not None and s.condition in conditions:
                    active = np.asarray(conditions[s.condition], dtype=bool)
                elif s.condition in CALENDAR_CONDITIONS:
                    active = CALENDAR_CONDITIONS[s.condition](day_numbers)
                else:
                    if months is None:
                        months = _months(day_numbers)
                    active = self._condition(s.condition, months)
                block[~active] = 0
            columns.append(block)
        if self.holiday_columns:
            holidays = np.zeros((len(day_numbers), len(self.holiday_columns)))
            by_day = self._holiday_columns_by_day
            for i, day in enumerate(day_numbers.tolist()):
                active = by_day.get(day)
                if active is not None:
                    holidays[i, active] = 1.0
            columns.append(holidays)
        for r in self.regressors:
            if r.name == "promo" and (regressors is None or "promo" not in regressors):
                values = np.zeros(len(day_numbers)) if promo is None else promo
            elif regressors is not None and r.name in regressors:
                values = regressors[r.name]
            else:
                raise ValueError(f"the model needs the regressor {r.name!r}")
            values = np.asarray(values, dtype=float)
            if values.shape != day_numbers.shape:
                raise ValueError(f"regressor {r.name!r}: one value per day is needed")
            columns.append(((values - r.mu) / r.std)[:, None])
        if not columns:  # Prophet's placeholder column when a model has no features
            return np.zeros((len(day_numbers), len(self.beta)))
        return np.hstack(columns)

    @functools.cached_property
    def _holiday_columns_by_day(self) -> dict[int, list[int]]:
        """Day -> the holiday columns that are 1 on it (a forecast looks up a few days)."""
        by_day: dict[int, list[int]] = {}
        for j, column in enumerate(self.holiday_columns):
            for day in column.days.tolist():
                by_day.setdefault(day, []).append(j)
        return by_day

    def _condition(self, name: str, months: np.ndarray) -> np.ndarray:
        by_month = self.conditions.get(name)
        if by_month is None:
            raise ValueError(f"the seasonality condition {name!r} must be given")
        values = [by_month[m - 1] for m in months]
        if any(v is None for v in values):
            unknown = sorted({int(m) for m, v in zip(months, values, strict=True) if v is None})
            raise ValueError(
                f"the condition {name!r} is unknown in months {unknown} (not in the training "
                "data): pass it in `conditions`"
            )
        return np.asarray(values, dtype=bool)


# --- helpers -------------------------------------------------------------------------------
def _day_numbers(days: np.ndarray | Sequence[Any]) -> np.ndarray:
    values = np.asarray(days, dtype="datetime64[D]").astype(np.int64)
    if values.ndim != 1:
        raise ValueError("days must be one-dimensional")
    if len(values) == 0:
        raise ValueError("days must not be empty")
    if np.any(np.diff(values) < 0):
        raise ValueError("days must be in ascending order (as Prophet sorts them)")
    return values


def _months(day_numbers: np.ndarray) -> np.ndarray:
    as_months = day_numbers.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return as_months % 12 + 1


def _holiday_columns(model: Any) -> tuple[HolidayColumn, ...]:
    """Prophet's holiday feature columns after the fit (``make_holiday_features``): one per
    (trained holiday name, window offset), sorted by column name; names trained on but absent
    from the holidays frame get an all-zero ``+0`` column, as Prophet gives them."""
    trained = model.train_holiday_names
    if trained is None:
        return ()
    names = [str(n) for n in trained]
    days: dict[str, set[int]] = {}
    frame = model.holidays
    if frame is not None and len(frame):
        dates = np.asarray(frame["ds"].to_numpy(), dtype="datetime64[D]").astype(np.int64)
        lower = frame["lower_window"].to_numpy() if "lower_window" in frame else None
        upper = frame["upper_window"].to_numpy() if "upper_window" in frame else None
        for i, name in enumerate(frame["holiday"].astype(str)):
            if name not in names:
                continue
            lw = int(lower[i]) if lower is not None else 0
            uw = int(upper[i]) if upper is not None else 0
            for offset in range(lw, uw + 1):
                key = f"{name}{_DELIM}{'+' if offset >= 0 else '-'}{abs(offset)}"
                days.setdefault(key, set()).add(int(dates[i]) + offset)
    for name in names:
        if not any(key.split(_DELIM)[0] == name for key in days):
            days[f"{name}{_DELIM}+0"] = set()
    return tuple(
        HolidayColumn(key=key, days=np.asarray(sorted(days[key]), dtype=np.int64))
        for key in sorted(days)
    )


def _check_columns(model: Any, keys: list[str], beta: np.ndarray) -> None:
    """The columns rebuilt here are the model's: same count, same component of each."""
    cols = model.train_component_cols
    if len(keys) != len(beta) or cols is None or len(cols) != len(keys):
        raise NotImplementedError(
            f"the model has {len(beta)} feature columns, the kernel rebuilt {len(keys)}"
        )
    position = {name: j for j, name in enumerate(cols.columns)}
    flags = cols.to_numpy()
    for i, key in enumerate(keys):
        j = position.get(key.split(_DELIM)[0])
        if j is None or int(flags[i, j]) != 1:
            raise NotImplementedError(f"feature column {i} ({key}) does not match the model")


def _conditions_by_month(
    history: Any, seasonalities: tuple[Seasonality, ...]
) -> dict[str, tuple[bool | None, ...]]:
    """Each condition's value per month, read from the training data. A condition that is
    not a function of the month is left out: callers pass its values (``conditions=``),
    unless it is one of the ``CALENDAR_CONDITIONS``."""
    conditions: dict[str, tuple[bool | None, ...]] = {}
    names = {s.condition for s in seasonalities if s.condition is not None}
    names -= set(CALENDAR_CONDITIONS)
    if not names:
        return conditions
    day_numbers = np.asarray(history["ds"].to_numpy(), dtype="datetime64[D]").astype(np.int64)
    months = _months(day_numbers)
    for name in sorted(names):
        values = np.asarray(history[name], dtype=bool)
        by_month: list[bool | None] = []
        for month in range(1, 13):
            seen = set(values[months == month].tolist())
            if len(seen) > 1:
                break
            by_month.append(seen.pop() if seen else None)
        else:
            conditions[name] = tuple(by_month)
    return conditions
