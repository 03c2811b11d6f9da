"""What a long-lived function process does once, outside any request."""

from __future__ import annotations

import gc


def freeze_imported_objects() -> None:
    """Leave the objects alive now (what imports created: modules, classes, botocore's and
    pandas' tables; about 105,000 in the worker after its imports, 60,000 more with Prophet)
    out of the cyclic garbage collector's passes. They live as long as the process, and
    every full collection a training triggers would walk all of them again."""
    gc.freeze()
