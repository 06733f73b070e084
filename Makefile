# Two commands for a fresh machine: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JDBC_JAR := /usr/share/java/postgresql.jar
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: setup system-packages demo ui test unit min-airflow lint bench clean

setup: system-packages $(STAMP)

# Java runs Spark; the PostgreSQL JDBC driver is how Spark reads the Redshift stand-in; the browser test drives
# Debian's chromium. Each is installed only when missing.
system-packages:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	[ -f $(JDBC_JAR) ] || missing="$$missing libpostgresql-jdbc-java"; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# uv's own output (what it resolves, builds and installs, each step timed) stands for a progress bar.
$(STAMP): pyproject.toml aporia-local/pyproject.toml
	@echo "setup: $(VENV) with uv"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade uv
	@echo "setup: the provider (editable) and its stand-ins (aporia-local/) with Airflow, PySpark and the dev tools:"
	@echo "setup: 2-3 minutes the first time (PySpark builds from its source distribution), seconds from uv's cache"
	@# Byte-compiled once here: with PYTHONDONTWRITEBYTECODE set, every airflow command and task would compile
	@# Airflow from source again (a third of a short command's CPU).
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -e ".[openlineage,s3,spark]" -e ./aporia-local --group dev
	@# uv keeps a fresh build of PySpark's source distribution (~2 GB) at every install: drop the ones unused.
	$(BIN)/uv cache prune
	touch $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

# Airflow's UI on the demo's metadata (after `make demo`), with the sync view at /aporia-sync/.
ui: setup
	$(BIN)/python scripts/demo.py ui

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Both tiers (tests/unit, tests/integration), then the declared minimum Airflow (scripts/min_airflow.sh).
test: setup lint
	$(BIN)/pytest -q
	scripts/min_airflow.sh

# The fast tier: no Java, no servers.
unit: setup
	$(BIN)/pytest -q tests/unit

# The built wheel at the declared floors (Airflow 3.1.0, PySpark 4.0.0, ...) in .venv-min, and without its spark extra
# in .venv-nospark (its size; a sync in the task, and one that needs Spark refused): the unit tier and
# `airflow dags test` of the example sync DAG through Spark on local[*], a standalone cluster and Spark Connect
# against the local stack (2-3 minutes once the venv is built, from uv's cache).
min-airflow: setup
	scripts/min_airflow.sh

bench: setup
	$(BIN)/python -m benchmarks.sync_benchmark $(ARGS)

clean:
	rm -rf $(VENV) .venv-min .venv-nospark .venv-sdk .local-stack airflow-home
