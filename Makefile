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

# The keylime anchor lives in its own venv (it pins its own world); made once.
KEYLIME_VENV := benchmarks/.keylime-venv
$(KEYLIME_VENV)/bin/python:
	python3 -m venv $(KEYLIME_VENV)
	$(KEYLIME_VENV)/bin/pip install -q --disable-pip-version-check keylime==7.14.3 cryptography==50.0.2 pyyaml==6.0.4

bench: setup $(KEYLIME_VENV)/bin/python
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/vtm_bench.py

lint: setup
	$(BIN)/ruff check
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis src/*.egg-info
