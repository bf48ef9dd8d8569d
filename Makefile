# Two commands do all the set-up on a fresh clone:
#   make demo   creates .venv if missing, installs, runs the bundled demo
#   make test   creates .venv if missing, installs with test tools, runs the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck bench clean

$(BIN)/harness: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/harness

demo: $(BIN)/harness
	$(BIN)/harness demo

test: $(BIN)/harness
	$(BIN)/ruff check harness analysis tests benchmarks
	$(BIN)/ruff format --check harness analysis tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(BIN)/harness
	$(BIN)/ruff check harness analysis tests benchmarks
	$(BIN)/ruff format --check harness analysis tests benchmarks

typecheck: $(BIN)/harness
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
