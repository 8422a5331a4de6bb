# The two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REACT := tests/react/node_modules/.package-lock.json
# Tests run in this many processes (each test has its own database and ports); 1 = serial.
TEST_PROCESSES ?= 2

.PHONY: test browser lint types unit demo bench clean rules

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## test: lint, types and every test (unit, integration, end-to-end, browser)
test: browser $(STAMP) $(REACT) lint types
	$(BIN)/pytest -n $(TEST_PROCESSES)

# React for errands-react.js's tests only (tests/react/package-lock.json, from npm)
$(REACT): tests/react/package-lock.json
	npm ci --prefix tests/react --no-audit --no-fund --silent

## browser: Chromium and Node for the browser tests; installs them if root, else says how
browser:
	@scripts/test-prerequisites

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

types: $(STAMP)
	$(BIN)/mypy

## rules: regenerate src/errands/web/rules.js from protocol.py (a test fails while it is stale)
rules: $(STAMP)
	$(BIN)/python -m errands.protocol_export

## demo: the whole system on an embedded Postgres; prints the page's URL
demo: $(STAMP)
	$(BIN)/errands demo

## bench: the worker next to Procrastinate and PgQueuer, sync fan-out, client round trip, fair share
bench: $(STAMP)
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/worker_bench.py
	$(BIN)/python bench/sync_bench.py
	$(BIN)/python bench/client_bench.py
	$(BIN)/python bench/hostile_bench.py

clean:
	rm -rf $(VENV) tests/react/node_modules .pgdata-test .mypy_cache .pytest_cache .ruff_cache
