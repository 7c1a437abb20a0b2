# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests drive for real: the browser of the browser tests,
# the Redis of the scale-out tests, nginx in front of them, and the
# PostgreSQL server that generated projects with a database test against.
SYSTEM_PACKAGES := chromium redis-server redis-tools nginx postgresql

# The demo: a project baked from the template with its defaults, in its own
# virtual environment (it installs stargate from this checkout, not editable).
# `make demo PORT=7000` serves on another port (the project is baked again).
DEMO := demo
PORT := 6543
DEMO_VENV := $(DEMO)/.venv
DEMO_PROJECT := $(DEMO)/myproject
DEMO_BAKED := $(DEMO)/.baked-for-port-$(PORT)
DEMO_STAMP := $(DEMO_VENV)/.installed
LIBRARY := $(shell find stargate -name '*.py') pyproject.toml

.PHONY: demo screenshot docs test test-python venv-python bench lint venv system-packages clean

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

$(DEMO_VENV)/bin/cookiecutter:
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --upgrade pip cookiecutter

# The port is written into the project's ini files: another PORT bakes again.
$(DEMO_BAKED): | $(DEMO_VENV)/bin/cookiecutter
	rm -f $(DEMO)/.baked-for-port-*
	$(DEMO_VENV)/bin/cookiecutter --no-input --overwrite-if-exists \
		--output-dir $(DEMO) . port=$(PORT)
	touch $@

# stargate from this checkout first, as the project's README says; then the
# project, which requires it by version.
$(DEMO_STAMP): $(DEMO_BAKED) $(LIBRARY)
	$(DEMO_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps .
	$(DEMO_VENV)/bin/python -m pip install --quiet -e "$(DEMO_PROJECT)"
	touch $(DEMO_STAMP)

# docs/demo.png, taken from the demo's page in Chromium.
screenshot: $(DEMO_STAMP) $(STAMP)
	$(BIN)/python docs/screenshot.py

demo: $(DEMO_STAMP)
	@echo "Serving the demo on http://127.0.0.1:$(PORT)/ (Ctrl-C stops it)"
	cd $(DEMO_PROJECT) && exec ../.venv/bin/pserve development.ini

# The Sphinx site: the pages of docs/ and the API reference from the
# docstrings, warnings as errors.
docs: $(STAMP)
	$(BIN)/python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check stargate tests bench hooks local_extensions.py docs/conf.py docs/screenshot.py
	$(BIN)/ruff format --check stargate tests bench hooks local_extensions.py docs/conf.py docs/screenshot.py
	$(BIN)/mypy stargate

# The library's own tests (unit and live), without the template, the browser
# and the benchmarks: what runs on the second runtime and other interpreters.
LIBRARY_TESTS := tests --ignore=tests/test_template.py \
	--ignore=tests/test_end_to_end.py --ignore=tests/test_bench.py \
	--ignore=tests/test_packaging.py --ignore=tests/test_readme.py \
	--ignore=tests/test_demo.py --ignore=tests/test_two_processes.py \
	--ignore=tests/test_generated_readme.py
# Every other CPython 3.10+ of the machine, one per minor version.
OTHER_PYTHONS = $(shell .ci/other-pythons $(PYTHON))
# What runs again in a test process patched as a gevent server is: the
# in-process Redis brokers (redis-py is green on gevent only when patched).
PATCHED_TESTS := tests/test_redis_broker.py tests/test_recovery.py tests/test_nginx.py \
	tests/test_live.py tests/test_presence.py tests/test_drain.py tests/test_redis_cluster.py
COVERAGE := --cov=stargate --cov-append --cov-report=
# Three test processes on two cores: most tests wait on sockets and child
# processes.  The tests of the installed projects stay in one of them.  Not
# for the monkey-patched pass: patching would turn pytest-xdist's own
# threads into green threads.
PARALLEL := -n 3 --dist loadgroup

test: system-packages lint docs
	rm -f .coverage .coverage.*
	# eventlet: everything, the template and the browser included.
	$(BIN)/python -m pytest $(PARALLEL) $(COVERAGE)
	# gevent: the library's tests again, then the in-process Redis broker and
	# the live suite in a process patched as a gevent server is.
	STARGATE_TEST_RUNTIME=gevent $(BIN)/python -m pytest $(PARALLEL) $(COVERAGE) \
		$(LIBRARY_TESTS)
	STARGATE_TEST_RUNTIME=gevent STARGATE_TEST_MONKEY_PATCH=1 \
		$(BIN)/python -m pytest $(COVERAGE) $(PATCHED_TESTS)
	$(BIN)/python -m coverage report --fail-under=100
	@for python in $(OTHER_PYTHONS); do \
		$(MAKE) --no-print-directory test-python INTERPRETER=$$python || exit 1; \
	done

# A virtual environment for one more interpreter (.venv-3.X), rebuilt only
# when the packaging metadata changes.  One at a time: an editable install
# builds in the checkout's build/ folder.
venv-python:
	@version=$$($(INTERPRETER) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	venv=.venv-$$version; \
	if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
		$(INTERPRETER) -m venv $$venv && \
		$$venv/bin/python -m pip install --quiet --upgrade pip && \
		$$venv/bin/python -m pip install --quiet -e ".[dev]" && \
		touch $$venv/.installed; \
	fi

# The library's tests on one more interpreter, on both runtimes, three
# processes as in the main passes.  The monkey-patched pass runs on the
# main interpreter only: it repeats tests that run here unpatched.
test-python: venv-python
	@version=$$($(INTERPRETER) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	venv=.venv-$$version; \
	echo "== Python $$version ($(INTERPRETER))"; \
	$$venv/bin/python -m pytest -q -p no:cacheprovider $(PARALLEL) $(LIBRARY_TESTS) && \
	STARGATE_TEST_RUNTIME=gevent $$venv/bin/python -m pytest -q -p no:cacheprovider \
		$(PARALLEL) $(LIBRARY_TESTS)

# The benchmarks, with figures (minutes; not part of make test, which runs
# their quick mode and checks only that every message arrived).  Every one
# runs; the target fails if one lost a message or missed a target.
bench: system-packages $(STAMP)
	@status=0; \
	$(BIN)/python bench/suite.py || status=1; \
	$(BIN)/python bench/broadcast.py || status=1; \
	$(BIN)/python bench/broadcast.py --runtime gevent || status=1; \
	$(BIN)/python bench/churn.py || status=1; \
	$(BIN)/python bench/stuck.py || status=1; \
	$(BIN)/python bench/flood.py || status=1; \
	$(BIN)/python bench/flood.py --runtime gevent || status=1; \
	$(BIN)/python bench/lagging.py || status=1; \
	$(BIN)/python bench/lagging.py --runtime gevent || status=1; \
	$(BIN)/python bench/history.py || status=1; \
	$(BIN)/python bench/history.py --runtime gevent || status=1; \
	$(BIN)/python bench/multiplex.py || status=1; \
	$(BIN)/python bench/multiplex.py --runtime gevent || status=1; \
	$(BIN)/python bench/presence.py || status=1; \
	$(BIN)/python bench/presence.py --runtime gevent || status=1; \
	$(BIN)/python bench/drain.py || status=1; \
	$(BIN)/python bench/drain.py --runtime gevent || status=1; \
	$(BIN)/python bench/metrics.py || status=1; \
	$(BIN)/python bench/metrics.py --runtime gevent || status=1; \
	$(BIN)/python bench/cluster.py || status=1; \
	$(BIN)/python bench/cluster.py --runtime gevent || status=1; \
	$(BIN)/python bench/soak.py --compare-keepalive || status=1; \
	$(BIN)/python bench/soak.py --compare-keepalive --runtime gevent || status=1; \
	$(BIN)/python bench/soak.py --redis || status=1; \
	$(BIN)/python bench/soak.py --redis --runtime gevent || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .venv-3.* $(DEMO) .pytest_cache .ruff_cache .coverage .coverage.* \
		test-artifacts docs/_build
