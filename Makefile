# SmartCloudOps AI — the README's commands. Every target builds .venv itself when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# NOTES.md: litellm fetches a cost map on import; offline that deadlocks MLflow's server.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help demo test test-fast lint lint-imports up down status bench bench-scoring bench-nab \
        bench-remediation bench-chatops constraints clean

help:
	@echo "make demo    one end-to-end pass of the loop on the embedded default"
	@echo "make test    the whole test suite (unit, DAG, integration, demo smoke)"
	@echo "make up/down the long-running stack (Airflow, MLflow, scoring, ChatOps, simulator, Prometheus)"
	@echo "make lint    ruff, mypy, import contracts"
	@echo "make bench   every benchmark (one JSON line each)"

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/smartcloudops demo

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -x -q

lint: $(STAMP)
	$(BIN)/ruff check smartcloudops ml serving remediation chatops dags bench tests
	$(BIN)/mypy smartcloudops ml serving remediation chatops
	$(BIN)/lint-imports

lint-imports: $(STAMP)
	$(BIN)/lint-imports

up: $(STAMP)
	$(BIN)/smartcloudops up

down: $(STAMP)
	$(BIN)/smartcloudops down

status: $(STAMP)
	$(BIN)/smartcloudops status

bench: bench-nab bench-scoring bench-remediation bench-chatops

bench-nab bench-scoring bench-remediation bench-chatops: bench-%: $(STAMP)
	@test -f bench/$*.py || { echo "bench/$*.py is not written yet" >&2; exit 2; }
	$(BIN)/python bench/$*.py

constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable > constraints.new
	@echo "review: diff constraints.txt constraints.new"

clean:
	rm -rf .smartcloudops build *.egg-info
