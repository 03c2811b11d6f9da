# The project's commands. Each one installs what it needs first (scripts/bootstrap.sh).
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: venv test demo bench perf perf-stack lint clean sam-local up down e2e token

venv:
	@scripts/bootstrap.sh

## test: the default test suite (unit + integration: moto and an embedded PostgreSQL; the template
## checks need .venv-sam for the SAM transform and `sam validate --lint`)
test: venv
	@scripts/bootstrap.sh sam
	@scripts/ensure-chromium.sh
	$(PY) -m pytest -q

## demo: seed the embedded PostgreSQL with the Kiel bakery data, train and forecast one product
demo: venv
	$(PY) -m scripts.demo $(ARGS)

## bench: the forecasting benchmark on the Kiel data (prints a table, writes bench/results/)
bench: venv
	$(PY) -m bench.forecast_core $(ARGS)

## perf: the performance measurements (worker cold start, imports, throughput, memory; compute
## per SKU next to the original's path; train-all of the 6 products with 1 and 2 workers; fan-out
## of 1,000 children): prints figures, writes bench/results/perf_*.json (docs/PERFORMANCE.md)
perf: venv
	$(PY) -m bench.perf_worker
	$(PY) -m bench.perf_compute
	$(PY) -m bench.perf_train_all
	$(PY) -m bench.perf_enqueue --children 1000 --name perf_enqueue_1000

## perf-stack: the measurements through the local stack (starts LocalStack and PostgreSQL if they
## are not running and stops them after): submit latency and where it goes, submit-to-result,
## the train-all fan-out of 10,000 children against LocalStack (about 15 minutes)
perf-stack: venv
	@scripts/bootstrap.sh sam
	@python3 localstack/launcher.py install
	PYTHONPATH=layers/common/python:. $(PY) -m bench.perf_stack $(ARGS)
	PYTHONPATH=layers/common/python:. $(PY) -m bench.perf_enqueue --localstack --children 10000 --name perf_enqueue_localstack

lint: venv
	$(PY) -m ruff check layers functions tests bench scripts client
	$(PY) -m ruff format --check layers functions tests bench scripts client
	.venv/bin/cfn-lint template.yaml

## sam-local: sam build, sam local invoke of every function with each event, sam local start-api, in
## Docker (starts its own engine if none runs and stops it; base images pulled or built offline)
sam-local: venv
	@scripts/docker/sam-local.sh $(ARGS)

## clean: stop whatever runs from .state (LocalStack, the embedded PostgreSQL, the Docker engine),
## then remove .state and .aws-sam (the venvs stay)
clean:
	-@scripts/docker/engine.sh stop 2>/dev/null
	-@python3 localstack/launcher.py stop 2>/dev/null
	-@if [ -x $(PY) ] && [ -d .state/postgres ]; then PYTHONPATH=layers/common/python $(PY) -m siprems.sales.embedded stop --state-dir .state/postgres; fi
	rm -rf .state .aws-sam

## up: the whole service locally without Docker (LocalStack on the host + embedded PostgreSQL),
## template.yaml deployed with samlocal, then a forecast through the API; leaves it running
up:
	@scripts/up.sh $(ARGS)

## down: stop what `make up` started (says what data it kept)
down:
	@scripts/down.sh

## token: a fresh access token for the running local stack (ARGS="--role admin" for admin routes)
token:
	@PYTHONPATH=layers/common/python:. $(PY) -m scripts.stack token $(ARGS)

## e2e: end-to-end tests against the local stack (starts LocalStack if needed; a few minutes)
e2e: venv
	@scripts/bootstrap.sh sam
	@python3 localstack/launcher.py install
	PYTHONPATH=layers/common/python:. $(PY) -m pytest -q tests/e2e $(ARGS)
