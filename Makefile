# botvisor developer entry points. A fresh Debian with python3 and make needs only
# `make demo` or `make test`; the venv and tools/ are built on first use.
#
#   make demo DEMO_ARGS="--bots 50 --duration 10"
#   make test TEST_ARGS="-x tests/unit/test_logging.py"   (TEST_JOBS= runs in one process)
#   make venv PYTHON=/usr/bin/python3.11

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
DEMO_ARGS ?=
TEST_ARGS ?=
# two pytest-xdist workers; the fleet-under-load tests keep to one of them (tests/conftest.py)
TEST_JOBS ?= -n 2 --dist loadgroup
BINDIR ?= $(HOME)/.local/bin
PIP_COMPILE = $(BIN)/uv pip compile pyproject.toml --no-header --python-version 3.11 --no-annotate

# Many bots mean many sockets: raise the soft open-files limit to the hard one.
RAISE_NOFILE := ulimit -n "$$(ulimit -Hn)" 2>/dev/null || true

.PHONY: help venv install demo test lint bench requirements promtool clean distclean

help:
	@echo "make venv          create $(VENV) with the pinned dev requirements"
	@echo "make install       link $(BIN)/botvisor into BINDIR (default ~/.local/bin) to put it on PATH"
	@echo "make demo          run the demo (DEMO_ARGS=... passes options to 'botvisor demo')"
	@echo "make test          run the tests (TEST_ARGS=... passes options to pytest)"
	@echo "make lint          ruff check, ruff format --check, mypy"
	@echo "make bench         run bench/run_all.py"
	@echo "make requirements  recompile requirements*.txt from pyproject.toml with uv"
	@echo "make clean         remove caches, build files and tools/; distclean also removes $(VENV)"

venv: $(STAMP)

# Re-run only when the pins, the project metadata or the bootstrap itself change.
$(STAMP): requirements-dev.txt pyproject.toml scripts/bootstrap.py
	@command -v $(PYTHON) >/dev/null || { \
		echo "make: '$(PYTHON)' not found; install python3 >= 3.11 or pass PYTHON=/path/to/python3" >&2; \
		exit 1; }
	$(PYTHON) scripts/bootstrap.py --venv $(VENV) --requirements requirements-dev.txt
	@touch $@

# The venv stays where it is; the link follows it (make venv again after a pull).
install: $(STAMP)
	install -d "$(BINDIR)"
	ln -sfn "$(CURDIR)/$(BIN)/botvisor" "$(BINDIR)/botvisor"
	@echo "botvisor -> $(BINDIR)/botvisor"; case ":$$PATH:" in *":$(BINDIR):"*) ;; \
		*) echo "note: $(BINDIR) is not on PATH; add it, e.g. export PATH=\"$(BINDIR):\$$PATH\"";; esac

demo: $(STAMP)
	$(RAISE_NOFILE); $(BIN)/botvisor demo $(DEMO_ARGS)

# tools/ first on PATH: tests run `promtool` by name.
test: $(STAMP) promtool
	$(RAISE_NOFILE); PATH="$(CURDIR)/tools:$$PATH" $(BIN)/pytest $(TEST_JOBS) $(TEST_ARGS)

promtool:
	@scripts/promtool.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(RAISE_NOFILE); $(BIN)/python bench/run_all.py

requirements: $(STAMP)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install uv
	$(PIP_COMPILE) -o requirements.txt
	$(PIP_COMPILE) --extra dev -o requirements-dev.txt

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis tools bench/out
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
