# Everything a fresh machine needs (Python 3.11+, Node 18+): `make demo` or `make test`.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo test lint synth clean-models

setup: $(VENV)/.installed node_modules/.installed models

# Extras by target (pyproject.toml): the local stack and CLI, the CDK app, the test tools.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,infra,dev]'
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# Converts the shipped ncnn weights to ONNX once, into the per-user cache (checksummed).
models: $(VENV)/.installed
	$(BIN)/upscaler models build

demo: setup
	$(BIN)/upscaler demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

synth: setup
	npx cdk synth --quiet

clean-models:
	$(BIN)/upscaler models build --force
