# The two commands a new user runs: `make up` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# checkov pins old boto3/botocore, packaging and networkx: it gets a venv of its own so it never
# downgrades what the registry runs and is tested with.
IAC_VENV ?= .venv-iac
CFN_TEMPLATE := deploy/cloudformation/registry.yaml

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

$(IAC_VENV)/.installed: deploy/cloudformation/lint-requirements.txt
	$(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install -q --upgrade pip
	$(IAC_VENV)/bin/pip install -q -r deploy/cloudformation/lint-requirements.txt
	touch $@

up: $(VENV)/.installed
	$(BIN)/hokusai-registry up

# checkov runs with --skip-download and without its update check: otherwise it calls its vendor's API and PyPI.
lint: $(VENV)/.dev-installed $(IAC_VENV)/.installed
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy src
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/cfn-lint $(CFN_TEMPLATE)
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(IAC_VENV)/bin/checkov -f $(CFN_TEMPLATE) \
		--framework cloudformation --quiet --compact --skip-download

# The tests start what they need themselves: PostgreSQL (a throw-away cluster) and moto's S3 server.
# One pytest worker per core (at most 4), each test file kept on one worker so its servers start once:
# most of a test's time is spent waiting on servers it started, so two workers on two cores halve it.
test: lint
	$(BIN)/pytest -n auto --maxprocesses 4 --dist loadfile

clean:
	rm -rf $(VENV) $(IAC_VENV) .hokusai-registry .pytest_cache .mypy_cache .ruff_cache
