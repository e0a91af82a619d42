# Omnichat: the two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench-ingest bench-pipeline clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/omnichat dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench-ingest: $(STAMP)
	$(BIN)/python ops/bench/ingest.py

bench-pipeline: $(STAMP)
	$(BIN)/python ops/bench/pipeline.py

clean:
	rm -rf $(VENV) .omnichat .pytest_cache .ruff_cache
