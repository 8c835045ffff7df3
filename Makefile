# Every target bootstraps .venv itself: a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench soak openapi clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	HOST=$(HOST) PORT=$(PORT) APIKEYS_DEV=1 $(if $(SEED),APIKEYS_SEED=$(abspath $(SEED))) \
		$(BIN)/gunicorn -c gunicorn.conf.py app:app

test: $(BIN)/.installed lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Benchmarks and the soak print tables; they are measurements, not tests.
bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

soak: $(BIN)/.installed
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

openapi: $(BIN)/.installed
	$(BIN)/flask --app app openapi write --format=json schemas/openapi.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
