"""Every forecasting option in one place.

``ForecastOptions.legacy()`` reproduces the original SIPREMS settings; ``default()`` is the
improved configuration chosen by measurement on the rolling-origin backtest (see
docs/FORECASTING.md for what each change bought). ``config_hash()`` identifies a
configuration in model metadata, so a served model always says how it was trained.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from siprems.errors import InvalidInputError

MissingDays = Literal["skip", "zero"]
SeasonalityMode = Literal["additive", "multiplicative"]


@dataclass(frozen=True)
class ForecastOptions:
    # --- preprocessing -------------------------------------------------------------------
    log_transform: bool = True  # fit on log1p(y), forecast expm1(yhat)
    outlier_sigma: float | None = 3.5  # drop training rows beyond this many σ (log scale)
    # σ of the whole series, or of each weekday's rows (a quiet weekday's outliers are
    # hidden in the spread between weekdays)
    outlier_scope: Literal["series", "weekday"] = "series"
    # "drop" the row, or "clip" it to the threshold (winsorise: the day still counts)
    outlier_action: Literal["drop", "clip"] = "drop"
    min_days: int = 5  # fewer days of data (before or after outlier removal) → error
    missing_days: MissingDays = "skip"  # days without sales: absent ("skip") or y=0 ("zero")
    max_history_days: int | None = None  # train on the last N days only (None = all)

    # --- Prophet ---------------------------------------------------------------------------
    yearly_seasonality: bool | int = True  # True = Prophet's default order (10)
    weekly_seasonality: bool | int = True
    weekly_prior_scale: float | None = None  # None = seasonality_prior_scale
    seasonality_mode: SeasonalityMode = "multiplicative"
    seasonality_prior_scale: float = 10.0
    changepoint_prior_scale: float = 0.05
    changepoint_range: float = 0.8
    n_changepoints: int = 25  # Prophet's default: spread over changepoint_range
    holidays_prior_scale: float = 10.0
    interval_width: float = 0.95  # lower/upper in chartData
    monthly_seasonality: bool = True
    monthly_period: float = 30.5
    monthly_fourier_order: int = 15
    # weekly pattern that differs between summer (Apr..Sep) and winter: a conditional
    # seasonality pair replaces the single weekly one when enabled
    summer_winter_weekly: bool = False
    # the weekend's own yearly curve (Fourier order), on top of the yearly one: Saturdays and
    # Sundays do not follow the year as weekdays do (in the summer holidays the weekend's lead
    # over the weekdays shrinks); None = off
    weekend_yearly_order: int | None = None
    promo_regressor: bool = True
    uncertainty_samples: int = 1000
    # L-BFGS stopping rule (cmdstan's tol_rel_grad; None = cmdstan's default 1e7). Looser
    # stops earlier: fewer iterations for forecasts that differ by well under 1 %.
    optimizer_tol_rel_grad: float | None = None
    # start each nightly fit from the previous night's parameters (same options) for up to
    # this many nights in a row, then fit from Prophet's initial values again; 0 = never
    warm_start_nights: int = 0

    # --- events (rows of `events` included in prediction) become Prophet holidays --------
    event_lower_window: int = -2
    event_upper_window: int = 1
    # public holidays of the shop's region (the `holidays` package); None = none
    holiday_country: str | None = None
    holiday_subdiv: str | None = None
    holiday_lower_window: int = 0
    holiday_upper_window: int = 0
    # "name": one effect per holiday (and window day); "single": every public holiday shares
    # one effect per window day (the shop is closed on most of them; fewer parameters)
    holiday_grouping: Literal["name", "single"] = "name"
    # shop days that are not public holidays but behave like them (Dec 24 and Dec 31)
    special_days: bool = False
    # school holidays of the region (the `holidays` package's "school" category): one effect
    # per kind of holidays (summer, autumn, ...) on every day of them
    school_holidays: bool = False

    # --- post-processing -------------------------------------------------------------------
    correction_factor: bool = True  # median(actual / fitted), clamped to the bounds below
    correction_min: float = 0.85
    correction_max: float = 1.15
    correction_window_days: int | None = None  # None = every training day (the original)
    # Carry the last n days' level above or below the fit into the first four weeks of the
    # forecast, as far as the training days show such a level persisting
    # (siprems.forecasting.level); None = off (the original)
    recent_level_days: int | None = None
    # widen (or narrow) the forecast's spread on the log scale; calibrated on the backtest
    interval_scale: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.min_days < 2:
            problems.append("min_days must be >= 2")
        if self.missing_days not in ("skip", "zero"):
            problems.append("missing_days must be 'skip' or 'zero'")
        if self.seasonality_mode not in ("additive", "multiplicative"):
            problems.append("seasonality_mode must be 'additive' or 'multiplicative'")
        if not 0 < self.interval_width < 1:
            problems.append("interval_width must be in (0, 1)")
        if self.correction_min > self.correction_max:
            problems.append("correction_min must be <= correction_max")
        if self.event_lower_window > 0 or self.event_upper_window < 0:
            problems.append("event window must contain the event day")
        if self.uncertainty_samples < 0:
            problems.append("uncertainty_samples must be >= 0")
        if self.holiday_grouping not in ("name", "single"):
            problems.append("holiday_grouping must be 'name' or 'single'")
        if self.max_history_days is not None and self.max_history_days < self.min_days:
            problems.append("max_history_days must be >= min_days")
        if self.outlier_scope not in ("series", "weekday"):
            problems.append("outlier_scope must be 'series' or 'weekday'")
        if self.outlier_action not in ("drop", "clip"):
            problems.append("outlier_action must be 'drop' or 'clip'")
        if self.n_changepoints < 0:
            problems.append("n_changepoints must be >= 0")
        if self.weekly_prior_scale is not None and self.weekly_prior_scale <= 0:
            problems.append("weekly_prior_scale must be > 0")
        if self.warm_start_nights < 0:
            problems.append("warm_start_nights must be >= 0")
        if self.interval_scale <= 0:
            problems.append("interval_scale must be > 0")
        if self.weekend_yearly_order is not None and self.weekend_yearly_order < 1:
            problems.append("weekend_yearly_order must be >= 1 or None")
        if self.recent_level_days is not None and self.recent_level_days < 1:
            problems.append("recent_level_days must be >= 1 or None")
        if problems:
            raise InvalidInputError("invalid forecast options: " + "; ".join(problems))

    # --- named configurations --------------------------------------------------------------
    @classmethod
    def legacy(cls) -> ForecastOptions:
        """The original SIPREMS settings, unchanged."""
        return cls()

    @classmethod
    def default(cls) -> ForecastOptions:
        """The improved settings: each change was measured on the rolling-origin backtest and
        kept only if it also held on a validation year (docs/FORECASTING.md)."""
        return cls(
            # public holidays of Schleswig-Holstein, with the two days before and after:
            # the shop is closed on most of them and demand moves to the days around
            holiday_country="DE",
            holiday_subdiv="SH",
            holiday_lower_window=-2,
            holiday_upper_window=2,
            # on the log1p scale "additive" already means multiplicative effects; the
            # monthly Fourier terms (order 15) fitted noise
            seasonality_mode="additive",
            monthly_seasonality=False,
            # a smoother yearly curve, and a trend that may still bend in the last year
            yearly_seasonality=6,
            changepoint_range=0.95,
            # four yearly cycles are enough: bounds the fit time as years of sales pile up
            max_history_days=1460,
            # stop L-BFGS earlier: about a third less fitting time, forecasts within 0.2 %
            optimizer_tol_rel_grad=1e9,
            # a week of warm-started nightly fits, then a cold one: 2.6x less fitting CPU,
            # backtest MASE +0.35 % (bench/warm_start.py, docs/FORECASTING.md "Speed")
            warm_start_nights=7,
            # Prophet's p10..p90 held too few days out of sample; 10 % wider spread
            interval_scale=1.1,
            # a week that ran above (below) the fit tends to go on doing so for a while:
            # backtest 0.744 -> 0.741, validation year 0.658 -> 0.655 (docs/FORECASTING.md)
            recent_level_days=7,
            # weekends follow the year in their own way: backtest 0.741 -> 0.718, validation
            # year 0.655 -> 0.642 (docs/FORECASTING.md "Fourth round")
            weekend_yearly_order=3,
        )

    @classmethod
    def named(cls, profile: str) -> ForecastOptions:
        if profile == "default":
            return cls.default()
        if profile == "legacy":
            return cls.legacy()
        raise InvalidInputError(f"unknown forecast profile {profile!r} (default | legacy)")

    @classmethod
    def from_settings(cls, settings: Any = None) -> ForecastOptions:
        """The profile named by the settings, with their JSON overrides applied."""
        if settings is None:
            from siprems.config import load_settings

            settings = load_settings()
        options = cls.named(getattr(settings, "forecast_profile", "default"))
        overrides = getattr(settings, "forecast_overrides", None)
        if overrides:
            try:
                values = json.loads(overrides)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"forecast option overrides are not JSON: {exc}") from exc
            if not isinstance(values, dict):
                raise InvalidInputError("forecast option overrides must be a JSON object")
            options = options.with_overrides(**values)
        return options

    def with_overrides(self, **values: Any) -> ForecastOptions:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(f"unknown forecast options: {', '.join(unknown)}")
        return replace(self, **values)

    # --- identity --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ForecastOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def config_hash(self) -> str:
        """Stable short hash of every option (sorted JSON), e.g. for model metadata."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
