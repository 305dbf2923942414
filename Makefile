# vroot: `make demo` runs the main job, `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test test-fast demo lint bench clean

setup:
	@scripts/setup.sh

test: setup
	$(BIN)/ruff check
	$(BIN)/lint-imports
	$(BIN)/pytest

# Pure-logic tests only (no swtpm), for a quick loop while editing.
test-fast: setup
	$(BIN)/pytest -m "not tpm and not slow"

demo: setup
	$(BIN)/vroot demo

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis src/*.egg-info
