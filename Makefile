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
# keylime's wheel declares no dependencies; its verifier needs these, and libefivar for boot logs.
$(KEYLIME_VENV)/bin/python:
	@dpkg-query -W -f='$${Status}' libefivar1 2>/dev/null | grep -q "ok installed" || \
	  dpkg-query -W -f='$${Status}' libefivar1t64 2>/dev/null | grep -q "ok installed" || \
	  { apt-get update -qq && (apt-get install -y -qq libefivar1 || apt-get install -y -qq libefivar1t64); }
	python3 -m venv $(KEYLIME_VENV)
	$(KEYLIME_VENV)/bin/pip install -q --disable-pip-version-check keylime==7.14.3 cryptography==50.0.2 \
	  pyyaml==6.0.4 pyasn1==0.6.5 pyasn1-modules==0.4.2 jsonschema==4.26.0 lark==1.3.1 packaging==26.4

bench: setup $(KEYLIME_VENV)/bin/python
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/vtm_bench.py
	$(BIN)/python benchmarks/appraisal_bench.py
	$(BIN)/python benchmarks/migration_bench.py

lint: setup
	$(BIN)/ruff check
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis src/*.egg-info
