# Every target bootstraps .venv itself: a fresh clone needs nothing but python3.
# `make run` installs only what serving needs; tests and benchmarks add their extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench soak openapi clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(BIN)/.installed $@

run: $(BIN)/.installed
	HOST=$(HOST) PORT=$(PORT) $(BIN)/apikeys serve --dev $(if $(SEED),--seed $(abspath $(SEED)))

test: $(BIN)/.installed-test lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Benchmarks and the soak print tables; they are measurements, not tests.
bench: $(BIN)/.installed-test
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

soak: $(BIN)/.installed-test
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

openapi: $(BIN)/.installed
	$(BIN)/flask --app app openapi write --format=json schemas/openapi.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
