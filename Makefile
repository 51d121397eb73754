# backup-ops: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: demo up test lint typecheck unit tools bench lock clean help

help:
	@echo "make demo   - install everything, start a throwaway PostgreSQL + S3 endpoint, run the real DAGs"
	@echo "make up     - a local Airflow with the DAGs and the Backups page (demo services, a first backup) until Ctrl-C"
	@echo "make test   - install what tests need, then lint, type-check and run the whole suite"
	@echo "make bench  - benchmarks: backup against pg_dump | gzip, restore drill against gunzip | psql"
	@echo "make lock   - re-pin requirements*.txt from requirements*.in"

# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (as on some CI machines) every airflow
# process would otherwise compile Airflow again at its start (~2 s each, and the tests start many).
$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "backup-ops needs Python 3.11 or newer (PYTHON=$(PYTHON))")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@# One retry: uv's bytecode compilation was seen to lose a worker once ("expected …, received \"\""); a second
	@# run finds the packages installed and compiles site-packages again.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt -r requirements-dev.txt \
	  || { echo "Installing again once (the first attempt failed)"; \
	       $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt -r requirements-dev.txt; }
	@touch $@

# 7-Zip is what users open encrypted archives with, and rsync what docs/BACKUP_RESTORE.md puts files
# back with; the tests run both, so a missing one is installed (Debian packages 7zip and rsync).
# Chromium, headless, loads the Backups page in tests/ui (Debian package chromium). redis-server is the
# Celery broker of the multi-worker test (tests/distributed; Debian package redis-server).
tools:
	@missing=""; \
	command -v 7zz >/dev/null 2>&1 || command -v 7z >/dev/null 2>&1 || missing="$$missing 7zip"; \
	command -v rsync >/dev/null 2>&1 || missing="$$missing rsync"; \
	command -v zstd >/dev/null 2>&1 || missing="$$missing zstd"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing:$$missing (Debian packages)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "Missing:$$missing; install them (e.g. sudo apt-get install$$missing) and rerun"; exit 1; fi; \
	fi

demo: $(STAMP)
	$(BIN)/python -m devtools.demo

up: $(STAMP)
	$(BIN)/python -m devtools.up

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) tools lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/backup_throughput.py
	$(BIN)/python bench/restore_drill.py

lock: $(STAMP)
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf .airflow_home .demo .pytest_cache .mypy_cache .ruff_cache
