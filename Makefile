# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests drive for real: the browser of the browser tests,
# the Redis of the scale-out tests, and nginx in front of them.
SYSTEM_PACKAGES := chromium redis-server nginx

# The demo: a project baked from the template with its defaults, in its own
# virtual environment (it installs stargate from this checkout, not editable).
DEMO := demo
DEMO_VENV := $(DEMO)/.venv
DEMO_PROJECT := $(DEMO)/myproject
DEMO_STAMP := $(DEMO_VENV)/.installed
LIBRARY := $(wildcard stargate/*.py) pyproject.toml

.PHONY: demo test bench lint venv system-packages clean

venv: $(STAMP)

# One virtual environment for the library and its tests, rebuilt only
# when the packaging metadata changes.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Installs what is missing with apt-get when run as root on Debian; otherwise
# names it.  With CI set, a missing package is an error, never a skip.
system-packages:
	@missing=""; \
	for package in $(SYSTEM_PACKAGES); do \
		dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing system packages:$$missing"; \
			echo "install them with: sudo apt-get install$$missing"; \
			if [ -n "$$CI" ]; then exit 1; fi; \
		fi; \
	fi

$(DEMO_PROJECT)/development.ini:
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --upgrade pip cookiecutter
	$(DEMO_VENV)/bin/cookiecutter --no-input --output-dir $(DEMO) .

$(DEMO_STAMP): $(DEMO_PROJECT)/development.ini $(LIBRARY)
	$(DEMO_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps .
	$(DEMO_VENV)/bin/python -m pip install --quiet -e "$(DEMO_PROJECT)"
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	@echo "Serving the demo on http://127.0.0.1:6543/ (Ctrl-C stops it)"
	cd $(DEMO_PROJECT) && exec ../.venv/bin/pserve development.ini

lint: $(STAMP)
	$(BIN)/ruff check stargate tests bench hooks local_extensions.py
	$(BIN)/ruff format --check stargate tests bench hooks local_extensions.py

test: system-packages lint
	$(BIN)/python -m pytest --cov=stargate --cov-report=term-missing

# The benchmarks, with figures (minutes; not part of make test, which runs
# their quick mode and checks only that every message arrived).  Every one
# runs; the target fails if one lost a message or missed a target.
bench: system-packages $(STAMP)
	@status=0; \
	$(BIN)/python bench/suite.py || status=1; \
	$(BIN)/python bench/broadcast.py || status=1; \
	$(BIN)/python bench/churn.py || status=1; \
	$(BIN)/python bench/stuck.py || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache .coverage .coverage.* test-artifacts
