"""Powertools logging, metrics and tracing, set up once for every function.

The service name comes from ``POWERTOOLS_SERVICE_NAME`` (one per function, set by the
template). The metrics namespace is fixed here: the template's alarms name it too.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

METRICS_NAMESPACE = "SipremsForecast"

logger = Logger()
metrics = Metrics(namespace=METRICS_NAMESPACE)
tracer = Tracer()

# A request refused before any job was written has no metric to publish: that is normal.
warnings.filterwarnings("ignore", message="No application metrics to publish")

__all__ = ["MetricUnit", "add_metric", "job_context", "logger", "metrics", "tracer"]

_metrics_lock = threading.Lock()


def add_metric(name: str, unit: MetricUnit, value: float) -> None:
    """``metrics.add_metric`` for code that may run in several threads at once (the worker's
    records): Powertools' metric set is a plain dict, read and written back per call."""
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)


@contextmanager
def job_context(task_id: str | None, product_sku: str | None = None) -> Iterator[None]:
    """Every log line inside names the job (``task_id``, ``product_sku``). The keys belong
    to the calling thread only: the worker runs a batch's records in threads at once."""
    keys = {"task_id": task_id, "product_sku": product_sku}
    logger.thread_safe_append_keys(**keys)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(list(keys))
