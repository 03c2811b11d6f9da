# The project's commands. Each one installs what it needs first (scripts/bootstrap.sh).
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: venv test demo bench lint clean

venv:
	@scripts/bootstrap.sh

## test: the default test suite (unit + integration: moto and an embedded PostgreSQL)
test: venv
	$(PY) -m pytest -q

## demo: seed the embedded PostgreSQL with the Kiel bakery data, train and forecast one product
demo: venv
	$(PY) -m scripts.demo $(ARGS)

## bench: the forecasting benchmark on the Kiel data (prints a table, writes bench/results/)
bench: venv
	$(PY) -m bench.forecast_core $(ARGS)

lint: venv
	$(PY) -m ruff check layers functions tests bench scripts
	$(PY) -m cfn_lint template.yaml

clean:
	rm -rf .state .aws-sam
