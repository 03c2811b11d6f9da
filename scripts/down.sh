#!/usr/bin/env bash
# `make down`: stops what `make up` started (LocalStack and its function processes, the embedded
# PostgreSQL if `up` started it) and says what data it kept.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  PYTHONPATH="layers/common/python:." exec .venv/bin/python -m scripts.stack down
fi
exec python3 localstack/launcher.py stop
