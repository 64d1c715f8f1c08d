# wreg — the two commands: `make run` (demo end to end) and `make test` (everything CI runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The torch suite's environment: .venv plus torch. .venv itself stays without torch (the
# client must work without it). The pin is the CPU build in /opt/wheels (find-links); an
# unpinned `torch` would download a multi-GB CUDA build.
TORCH_VENV  := .venv-torch
TORCH_BIN   := $(TORCH_VENV)/bin
TORCH_STAMP := $(TORCH_VENV)/.installed
TORCH_PIN   := torch==2.13.0
# What the torch suite loads into besides torch: README's transformers example and the
# sentence-transformers-through-HF_ENDPOINT check (tests/torch/test_hf_endpoint.py) are tests.
TORCH_WITH  := 'transformers>=4.45' 'sentence-transformers>=3'

.PHONY: install install-torch run test test-torch test-fast check lint format docs bench \
	bench-tools soak clean

install: $(STAMP)

# pip's own chatter (and any warnings the machine's pip configuration draws) goes to a log,
# so `make run` fits one screen; a failed install prints the log's tail.
INSTALL_LOG := $(VENV)/install.log
$(STAMP): pyproject.toml
	@echo "installing wreg and its test tools into $(VENV) (pip's log: $(INSTALL_LOG))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@{ $(BIN)/python -m pip install --quiet --upgrade pip \
		&& $(BIN)/python -m pip install --quiet -e '.[server,dev]'; } > $(INSTALL_LOG) 2>&1 \
		|| { tail -n 40 $(INSTALL_LOG); echo "pip install failed: see $(INSTALL_LOG)"; exit 1; }
	@touch $@

install-torch: $(TORCH_STAMP)

$(TORCH_STAMP): pyproject.toml Makefile
	test -x $(TORCH_BIN)/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_BIN)/python -m pip install --quiet --upgrade pip
	$(TORCH_BIN)/python -m pip install --quiet -e '.[server,dev,torch]' '$(TORCH_PIN)' $(TORCH_WITH)
	touch $@

## make run: start a server on the embedded default, push the real model, pull it back, verify.
run: install
	@$(BIN)/python scripts/quickstart.py

## make test: run the whole suite (every backend; starts PostgreSQL and moto itself), then
## the torch suite (tests/torch) in .venv-torch. Both run even when the first fails.
## It never stops at lint: CI runs `make test` and `make lint` as two steps, both required.
## The main suite runs on TEST_WORKERS pytest-xdist processes, a test file per worker at a
## time (its module fixtures shared); its 25 slowest tests are listed at the end.
TEST_WORKERS ?= 2
test: install install-torch
	status=0; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations 25 || status=$$?; \
	WREG_REQUIRE_TORCH=1 $(TORCH_BIN)/python -m pytest tests/torch || status=$$((status ? status : $$?)); \
	exit $$status

## make test-torch: only the torch suite, in .venv-torch (built once, rebuilt when
## pyproject.toml changes). Without torch it fails rather than skips (WREG_REQUIRE_TORCH=1).
test-torch: install-torch
	WREG_REQUIRE_TORCH=1 $(TORCH_BIN)/python -m pytest tests/torch

## make test-fast: core, client and server tests on SQLite + files only, first failure stops.
test-fast: install
	$(BIN)/python -m pytest -q -x tests/core tests/client tests/server -k "not postgres and not s3"

## make check: both of CI's steps.
check: test lint

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## make docs: regenerate README's error code table from the error table.
docs: install
	$(BIN)/python scripts/error_table.py README.md

## make bench: every benchmark (about 25 minutes); figures go to bench/RESULTS.md with --write.
bench: install install-torch bench-tools
	$(BIN)/python bench/chunk_sizes.py
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/s3_clients.py
	$(BIN)/python bench/server_data_path.py
	$(BIN)/python bench/http_engines.py
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/many_chunks.py --singles-chunks 0
	$(BIN)/python bench/memory_scaling.py
	$(BIN)/python bench/loading.py
	$(BIN)/python bench/hf_api.py
	$(BIN)/python bench/ui_tags.py

# The baselines the benches compare against, from Debian's packages (and Run:ai's
# streamer, a loader baseline, from PyPI into the torch environment: it needs torch).
bench-tools: install-torch
	$(TORCH_BIN)/python -c 'import runai_model_streamer' 2>/dev/null \
		|| $(TORCH_BIN)/python -m pip install --quiet runai-model-streamer
	@command -v nginx >/dev/null && command -v casync >/dev/null && test -x /usr/bin/time \
		&& command -v curl >/dev/null || { apt-get update -q && \
		apt-get install -y -q --no-install-recommends nginx-light casync time curl; }

## make soak: the long runs: property tests and schema fuzzing with many more examples
## (HYPOTHESIS_PROFILE=soak), then load (bench/load.py): 120 s of fresh models, and 60 s
## over a fixed set of models, where the server's RSS must stay within 16 MiB.
soak: install
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest --timeout 3600 \
		tests/core/test_properties.py tests/server/test_schema_fuzz.py
	$(BIN)/python bench/load.py --duration 120
	$(BIN)/python bench/load.py --duration 60 --models 4 --max-rss-growth-mib 16

clean:
	rm -rf $(VENV) $(TORCH_VENV) .mypy_cache .ruff_cache .pytest_cache
