# Omnichat: the two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-handover lint bench-ingest bench-pipeline clean

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

# The two-worker handover test (also in `make test`) five times over.
test-handover: $(STAMP)
	for i in 1 2 3 4 5; do $(BIN)/pytest -q tests/integration/test_two_workers.py || exit 1; done

bench-ingest: $(STAMP)
	$(BIN)/python ops/bench/ingest.py

bench-pipeline: $(STAMP)
	$(BIN)/python ops/bench/pipeline.py

clean:
	rm -rf $(VENV) .omnichat .pytest_cache .ruff_cache
