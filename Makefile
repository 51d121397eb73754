# backup-ops: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: demo test lint typecheck unit tools bench lock clean help

help:
	@echo "make demo   - install everything, start a throwaway PostgreSQL + S3 endpoint, run the real DAGs"
	@echo "make test   - install what tests need, then lint, type-check and run the whole suite"
	@echo "make bench  - backup throughput and memory benchmark against pg_dump | gzip"
	@echo "make lock   - re-pin requirements*.txt from requirements*.in"

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "backup-ops needs Python 3.11 or newer (PYTHON=$(PYTHON))")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt -r requirements-dev.txt
	@touch $@

# 7-Zip is what users open encrypted archives with; the tests prove it can.
tools:
	@command -v 7zz >/dev/null 2>&1 || command -v 7z >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing 7-Zip (Debian package 7zip)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq 7zip >/dev/null; \
	  else echo "7-Zip is missing: install it (e.g. sudo apt-get install 7zip) and rerun"; exit 1; fi; }

demo: $(STAMP)
	$(BIN)/python -m devtools.demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) tools lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/backup_throughput.py

lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf .airflow_home .demo .pytest_cache .mypy_cache .ruff_cache
