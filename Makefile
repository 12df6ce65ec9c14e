# The two commands a new user runs: `make up` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

up: $(VENV)/.installed
	$(BIN)/hokusai-registry up

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy src
	$(BIN)/hadolint deploy/Dockerfile

# The tests start what they need themselves: PostgreSQL (a throw-away cluster) and moto's S3 server.
test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .hokusai-registry .pytest_cache .mypy_cache .ruff_cache
