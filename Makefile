# Two commands on a fresh machine (Python 3.11, pip, make):
#   make demo   set up, then run the nightly job on the real Kentucky data
#   make test   set up, then run the tests
PYTHON ?= python3.11
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
CONFIG ?= configs/kentucky.yaml
# The eve of the 2 July 2023 storms (45,828 customers out); AS_OF= (empty) gives the default,
# the latest hour with history and weather for the whole horizon (a quiet late December).
AS_OF ?= 2023-07-01T00:00:00Z
export UV_PYTHON := $(PYTHON)
export FOREWARN_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup demo test test-fast lint bench bench-dispatch bench-advise clean

# uv lives in its own small venv: works where pip --user or the system site-packages are closed.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.13,<0.14"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	@touch $@

setup: $(VENV)/.synced

demo: setup
	$(VENV)/bin/forewarn nightly --config $(CONFIG) $(if $(AS_OF),--as-of $(AS_OF),)

test: setup
	$(VENV)/bin/python -m pytest

test-fast: setup
	$(VENV)/bin/python -m pytest -m "not integration"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy configs features models serving flows

bench: setup
	$(VENV)/bin/python bench/bench_pipeline.py --config $(CONFIG)

bench-dispatch: setup
	$(VENV)/bin/python bench/bench_dispatch.py --n 20000

bench-advise: setup
	$(VENV)/bin/python bench/bench_advise.py

clean:
	rm -rf $(VENV) $(TOOLS) .forewarn .pytest_cache .ruff_cache
