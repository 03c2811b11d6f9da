"""A trained model ↔ the model store's artefact (``model_to_json``) and metadata."""

from __future__ import annotations

import platform
from datetime import date
from importlib import metadata as importlib_metadata
from typing import Any

from siprems.forecasting.options import ForecastOptions
from siprems.forecasting.train import TrainedModel

LIBRARIES = ("prophet", "cmdstanpy", "pandas", "numpy", "holidays")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


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
        "options": trained.options.to_dict(),
        "config_hash": trained.options.config_hash(),
        "fit_ms": round(trained.fit_ms, 1),
        "library_versions": library_versions(),
    }
    return model_to_json(trained.model), metadata


def from_artefact(model_json: str, metadata: dict[str, Any]) -> TrainedModel:
    from prophet.serialize import model_from_json

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
    )
