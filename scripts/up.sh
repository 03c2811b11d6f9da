#!/usr/bin/env bash
# `make up`: the whole service on this machine, without Docker, and one forecast through its API.
# Installs what is missing (.venv, .venv-sam, .venv-localstack; later runs reuse them), starts the
# embedded PostgreSQL (seeded with the Kiel bakery data) and LocalStack on 127.0.0.1:4566, deploys
# template.yaml with samlocal, then runs the demo. Options go to `scripts.stack up`
# (--schedule 'rate(1 minute)', --sku, --days, --no-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/bootstrap.sh
scripts/bootstrap.sh sam
python3 localstack/launcher.py install
export PYTHONPATH="layers/common/python:."
.venv/bin/python -m scripts.stack up "$@"
echo "[up] done in $(( $(date +%s) - start )) s"
