# Everything a fresh machine needs (Python 3.11+, Node 22+): `make demo` or `make test`.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup demo test lint synth lock clean-models browser

setup: $(VENV)/.installed node_modules/.installed models browser

# The venv installs exactly what the lock pins (requirements/dev.txt: the local, infra and dev extras, with
# hashes; infra/lock.py), then the project itself without resolving anything.
$(VENV)/.installed: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# Converts the shipped ncnn weights to ONNX once, into the per-user cache (checksummed).
models: $(VENV)/.installed
	$(BIN)/upscaler models build

# The web page's test drives Debian's chromium through Playwright (whose own browser download is not used).
# CI runs as root and installs it; elsewhere, without root or apt-get, the test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "note: chromium is missing and cannot be installed here (needs root and apt-get);" \
	         "the web page's test will be skipped: sudo apt-get install chromium"; \
	  fi; }

demo: setup
	$(BIN)/upscaler demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

synth: setup
	npx cdk synth --quiet

# After any change to pyproject.toml's dependencies: re-resolve uv.lock and export requirements/*.txt.
lock: $(VENV)/.installed
	$(BIN)/python -m infra.lock

clean-models:
	$(BIN)/upscaler models build --force
