"""A trained model ↔ the model store's artefacts, and the serving models a worker keeps.

Per SKU the store holds Prophet's ``model_to_json`` (a user can load the full model), the
serving document (the numpy kernel and the holiday names of the chart: what a forecast
reads) and the metadata (how the model's output turns into demand). The forecast path reads
the metadata and the serving document only, and keeps the built ``ServingModel`` in a
bounded cache keyed by the serving document's S3 version: a warm worker validates its copy
with one small GET (the metadata) per forecast.

Models stored before serving documents existed still forecast: their ``model.json`` is
loaded through Prophet once per worker and version (a slow first forecast), converted and
cached; the next training writes the serving document.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import platform
import sys
import threading
from collections import OrderedDict
from datetime import date
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any

from siprems.forecasting.kernel import ForecastKernel
from siprems.forecasting.options import ForecastOptions
from siprems.forecasting.predict import ServingModel, serving_model_of
from siprems.process import freeze_imported_objects

if TYPE_CHECKING:
    from siprems.forecasting.train import TrainedModel
    from siprems.model_store import ModelStore

LIBRARIES = ("prophet", "cmdstanpy", "pandas", "numpy", "holidays")
SERVING_FORMAT = 1
# Serving models a worker keeps: a few kB each (kernel arrays, holiday names), so the bound
# is about memory churn, not size; a worker serving more SKUs reloads the least recent.
CACHED_MODELS = 256


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    # reading a package's metadata parses its METADATA file (~2 ms each): once a process
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "missing"
    return tuple(versions.items())


def library_versions() -> dict[str, str]:
    return dict(_installed_versions())


def import_prophet() -> None:
    """Import Prophet without matplotlib.

    ``prophet.forecaster`` imports its plotting module, which imports ``matplotlib.pyplot``
    (about a second and 30+ MiB) and falls back quietly when matplotlib is missing. A worker
    never plots, so matplotlib is hidden for the duration of the import; afterwards it is
    importable again (only Prophet's own plot functions stay unavailable in this process).
    """
    if "prophet" in sys.modules:
        return
    with _PROPHET_IMPORT:  # a training and a forecast of an old model may both get here
        _import_prophet_without_matplotlib()


_PROPHET_IMPORT = threading.Lock()


def _import_prophet_without_matplotlib() -> None:
    if "prophet" in sys.modules:
        return
    if "matplotlib" in sys.modules:  # already paid for by someone else
        import prophet  # noqa: F401
    else:
        plot_logger = logging.getLogger("prophet.plot")
        level = plot_logger.level
        plot_logger.setLevel(logging.CRITICAL)  # "Importing matplotlib failed" is expected
        sys.modules["matplotlib"] = None  # type: ignore[assignment] - makes `import` raise
        try:
            import prophet  # noqa: F401
        finally:
            del sys.modules["matplotlib"]
            plot_logger.setLevel(level)
    freeze_imported_objects()


def to_artefact(trained: TrainedModel) -> tuple[str, dict[str, Any]]:
    """(model JSON, metadata describing how the model turns into demand)."""
    from prophet.serialize import model_to_json

    metadata = {
        "training_window": {
            "first_day": trained.first_day.isoformat(),
            "last_day": trained.last_day.isoformat(),
        },
        "samples": trained.samples,
        "outliers_removed": trained.outliers_removed,
        "correction_factor": trained.correction_factor,
        "recent_level": list(trained.recent_level),
        "options": trained.options.to_dict(),
        "config_hash": trained.options.config_hash(),
        "fit_ms": round(trained.fit_ms, 1),
        "library_versions": library_versions(),
    }
    return model_to_json(trained.model), metadata


def serving_document(trained: TrainedModel) -> dict[str, Any]:
    """What a forecast reads instead of ``model.json``: the kernel and the chart's names."""
    return {
        "format": SERVING_FORMAT,
        "kernel": serving_model_of(trained).kernel.to_dict(),
        "holiday_names": _chart_names(trained),
    }


def _chart_names(trained: TrainedModel) -> dict[str, str]:
    """ISO day -> the names of the holidays and events on it (the chart's ``holidayName``)."""
    from siprems.forecasting.events import holiday_names

    names = holiday_names(trained.model.holidays, trained.options)
    return {day.isoformat(): name for day, name in sorted(names.items())}


def from_artefact(model_json: str, metadata: dict[str, Any]) -> TrainedModel:
    """The full Prophet model back (training-side code, tools, old artefacts)."""
    import_prophet()
    from prophet.serialize import model_from_json

    from siprems.forecasting.train import TrainedModel

    window = metadata["training_window"]
    return TrainedModel(
        model=model_from_json(model_json),
        options=ForecastOptions.from_dict(metadata["options"]),
        correction_factor=float(metadata["correction_factor"]),
        first_day=date.fromisoformat(window["first_day"]),
        last_day=date.fromisoformat(window["last_day"]),
        samples=int(metadata["samples"]),
        outliers_removed=int(metadata.get("outliers_removed", 0)),
        fit_ms=float(metadata.get("fit_ms", 0.0)),
        recent_level=tuple(metadata.get("recent_level") or ()),
    )


def serving_model(metadata: dict[str, Any], document: dict[str, Any]) -> ServingModel:
    if document.get("format") != SERVING_FORMAT:
        raise ValueError(f"unknown serving document format {document.get('format')!r}")
    return ServingModel(
        kernel=ForecastKernel.from_dict(document["kernel"]),
        options=ForecastOptions.from_dict(metadata["options"]),
        correction_factor=float(metadata["correction_factor"]),
        last_day=date.fromisoformat(metadata["training_window"]["last_day"]),
        holiday_names=dict(document.get("holiday_names") or {}),
        recent_level=tuple(metadata.get("recent_level") or ()),
    )


def serving_model_from_trained(trained: TrainedModel) -> ServingModel:
    """A trained (or Prophet-loaded) model as a serving model, chart names included."""
    return dataclasses.replace(serving_model_of(trained), holiday_names=_chart_names(trained))


class ModelCache:
    """Serving models by (bucket, SKU), each with the version it was built from; least
    recently used out first beyond ``max_models``."""

    def __init__(self, max_models: int = CACHED_MODELS) -> None:
        self.max_models = max_models
        self._entries: OrderedDict[tuple[str, str], tuple[str, ServingModel]] = OrderedDict()
        # The worker forecasts a batch's records in threads at once.
        self._lock = threading.Lock()
        self.hits = 0
        self.loads = 0

    def get(self, key: tuple[str, str], version: str) -> ServingModel | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: tuple[str, str], version: str, model: ServingModel) -> None:
        with self._lock:
            self.loads += 1
            self._entries[key] = (version, model)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_models:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# The worker process's cache: module state survives between invocations of a warm Lambda.
MODEL_CACHE = ModelCache()


def load_serving_model(
    store: ModelStore, sku: str, metadata: dict[str, Any], cache: ModelCache | None = None
) -> ServingModel:
    """The serving model the metadata names, from the cache when it holds that version."""
    cache = MODEL_CACHE if cache is None else cache
    version = serving_version(metadata)
    key = (store.bucket, sku)
    model = cache.get(key, version) if version else None
    if model is not None:
        return model
    document = store.load_serving(sku, metadata)
    if document is not None:
        model = serving_model(metadata, document)
    else:  # stored before serving documents: through Prophet, once per version
        stored = store.load_model(sku, metadata)
        model = serving_model_from_trained(from_artefact(stored.model_json, stored.metadata))
    if version:
        cache.put(key, version, model)
    return model


def serving_version(metadata: dict[str, Any]) -> str | None:
    """What identifies the content a forecast is computed from (S3 version, else sha256)."""
    for name in ("serving_version_id", "serving_sha256", "model_version_id", "model_sha256"):
        value = metadata.get(name)
        if value and value != "null":
            return f"{name}:{value}"
    return None
