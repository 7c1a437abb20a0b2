# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint venv clean

venv: $(STAMP)

# One virtual environment for the library and its tests, rebuilt only
# when the packaging metadata changes.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check stargate tests
	$(BIN)/ruff format --check stargate tests

test: lint
	$(BIN)/python -m pytest --cov=stargate --cov-report=term-missing

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage
