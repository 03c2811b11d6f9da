"""A worker process leaves what its imports created out of the garbage collector's passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import gc, importlib.util, json, sys
sys.path.insert(0, "layers/common/python")
spec = importlib.util.spec_from_file_location("worker_app", "functions/worker/app.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
after_worker = gc.get_freeze_count()
from siprems.forecasting.artefact import import_prophet
import_prophet()
print(json.dumps([after_worker, gc.get_freeze_count(), len(gc.get_objects())]))
"""


def test_the_worker_freezes_its_imports_and_again_prophets():
    out = subprocess.run(  # noqa: S603 - our interpreter, our script
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    )
    after_worker, after_prophet, still_collected = json.loads(out.stdout.splitlines()[-1])
    assert after_worker > 50_000  # botocore, Powertools, pydantic ...
    assert after_prophet > after_worker + 20_000  # pandas, cmdstanpy, Prophet
    assert still_collected < after_prophet / 10  # what the collector still walks
