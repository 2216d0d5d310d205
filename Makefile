# One command to set up and run each main job. Every install step lives here so
# that a clean clone (and .ci/run) needs nothing else.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS := -q -c constraints.txt

.PHONY: setup test demo bench clean

$(BIN)/workbench: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install $(PIP_FLAGS) -e '.[dev,ray]'
	touch $@

setup: $(BIN)/workbench

## Run the whole test suite (the command .ci/run calls).
test: setup
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

## Build the demo models and open the workbench on a demo case.
demo: setup
	$(BIN)/workbench demo

bench: setup
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
