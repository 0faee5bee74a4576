# Everything goes through the virtual environment at .venv (created or reused on demand).
#   make run    the main job on the embedded default (SQLite MLflow store, local Ray, synthetic data)
#   make test   the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test stack-test stack-up stack-down stack-status tools bench gpu-check manifests chart-docs clean

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

setup: $(STAMP)

tools: setup
	$(BIN)/python -m tools.devtools fetch-helm

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . -e train_resnet -P sparsity=topk --env-manager local

# The stack tests run in a process of their own: the stack (a session fixture) sets the
# client environment of the whole process while it runs.
test: setup tools
	$(BIN)/python -m pytest tests --ignore=tests/stack
	$(BIN)/python -m pytest tests/stack -m stack

stack-test: setup
	$(BIN)/python -m pytest tests/stack -m stack

stack-up: setup
	$(BIN)/python platform/local/stack.py up

stack-down:
	$(BIN)/python platform/local/stack.py down

stack-status:
	$(BIN)/python platform/local/stack.py status

bench: setup
	$(BIN)/python -m benchmarks

gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check

# manifests/ and the chart's README.md are generated from deploy/helm/shapebias (repository tooling in tools/).
manifests: tools
	$(BIN)/python -m tools.devtools render-manifests

chart-docs: setup
	$(BIN)/python -m tools.devtools chart-docs

clean:
	rm -rf .pytest_cache mlruns .ray_results
