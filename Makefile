# wreg — the two commands: `make run` (demo end to end) and `make test` (everything CI runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,dev]'
	touch $@

## make run: start a server on the embedded default, push the real model, pull it back, verify.
run: install
	$(BIN)/python scripts/quickstart.py

## make test: lint, type-check and run the whole suite.
test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python bench/chunk_sizes.py
	$(BIN)/python bench/codec.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
