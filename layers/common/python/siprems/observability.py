"""Powertools logging, metrics and tracing, set up once for every function.

The service name comes from ``POWERTOOLS_SERVICE_NAME`` (one per function, set by the
template). The metrics namespace is fixed here: the template's alarms name it too.
"""

from __future__ import annotations

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

__all__ = ["MetricUnit", "job_context", "logger", "metrics", "tracer"]


@contextmanager
def job_context(task_id: str | None, product_sku: str | None = None) -> Iterator[None]:
    """Every log line inside names the job (``task_id``, ``product_sku``)."""
    keys = {"task_id": task_id, "product_sku": product_sku}
    logger.append_keys(**keys)
    try:
        yield
    finally:
        logger.remove_keys(list(keys))
