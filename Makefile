# Everything goes through the virtual environment at .venv (created or reused on demand).
# `make help` lists the targets (from the `## ` comments below).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help setup run test lint stack-test stack-up stack-down stack-status tools bench gpu-check generate manifests chart-docs clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

# The project with every extra, at the exact versions of constraints.txt.
$(STAMP): pyproject.toml constraints.txt requirements.txt requirements-cluster.txt requirements-server.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,cluster,server]"
	touch $@

setup: $(STAMP) ## create or update .venv (pinned by constraints.txt)

# ruff reads every Python file of the checkout (its exclusions are in pyproject.toml); mypy the files
# that pyproject.toml lists (the library, the repository tooling, the local stack).
lint: setup ## ruff (lint and format check) on the whole tree, mypy on the library and tooling
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

tools: setup ## fetch helm and kubectl into .tools/bin
	$(BIN)/python -m tools.devtools fetch-helm

run: setup ## the main job on the embedded default (SQLite MLflow store, local Ray, synthetic data)
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_LOGGING_LEVEL=WARNING $(BIN)/mlflow run . -e train_resnet -P sparsity=topk --env-manager local --experiment-name shapebias-train_resnet

# The stack tests run in a process of their own: the stack (a session fixture) sets the
# client environment of the whole process while it runs.
test: setup tools ## the whole test suite
	$(BIN)/python -m pytest tests --ignore=tests/stack
	$(BIN)/python -m pytest tests/stack -m stack

stack-test: setup ## the local platform stack's tests
	$(BIN)/python -m pytest tests/stack -m stack

stack-up: setup ## start the local platform stack
	$(BIN)/python platform/local/stack.py up

stack-down: ## stop the local platform stack
	$(BIN)/python platform/local/stack.py down

stack-status: ## show the local platform stack
	$(BIN)/python platform/local/stack.py status

bench: setup ## the benchmarks
	$(BIN)/python -m benchmarks

gpu-check: setup ## the GPU check: Top-K and ResNet-18 steps on CUDA, one table
	$(BIN)/python -m benchmarks.gpu_check

# MLproject and the chart's rayjobs.experiments are generated from the task registry (shapebias/tasks.py)
# and the jobs' Config dataclasses; manifests/ and the chart's README.md from deploy/helm/shapebias
# (repository tooling in tools/). `make manifests` runs all three, in that order.
generate: setup ## regenerate MLproject and the chart's experiments from shapebias/tasks.py
	$(BIN)/python -m tools.devtools gen-project

manifests: tools generate chart-docs ## regenerate MLproject, the chart's experiments and README, and manifests/
	$(BIN)/python -m tools.devtools render-manifests

chart-docs: setup ## regenerate the chart's README.md from its values
	$(BIN)/python -m tools.devtools chart-docs

clean: ## remove local run outputs
	rm -rf .pytest_cache mlruns .ray_results
