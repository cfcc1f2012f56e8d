# The two commands of the README: `make run` (the main job) and `make test` (the suite).
# Each creates its own virtual environment and installs what it needs; only Python and pip are assumed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vitdata-installed

.PHONY: run test test-quick test-all install clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[test,report]"
	touch $(STAMP)

install: $(STAMP)

# Main job: train a small ViT on the built-in synthetic dataset (or ARGS="--data ROOT ...").
run: $(STAMP)
	$(BIN)/vitdata train $(ARGS)

# Test suite (CPU by default; `gpu` tests skip without CUDA, `slow` tests are deselected).
test: $(STAMP)
	$(BIN)/python -P -m pytest -m "not slow" $(ARGS)

# Day-to-day tier: the suite without `heavy` tests (child processes, long runs); CI runs `make test`.
test-quick: $(STAMP)
	$(BIN)/python -P -m pytest -m "not slow and not heavy" $(ARGS)

test-all: $(STAMP)
	$(BIN)/python -P -m pytest $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
