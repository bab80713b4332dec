# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt
# OpenMP threads spin while waiting; on a shared 2-core machine that slowed torch 50-100x.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test lint format bench docs install data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The default install plus ExecuTorch: every command the README shows, `export --executorch` too.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[executorch]'
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test,bench]'
	@touch $@

install: $(VENV)/.installed

# Fashion-MNIST, WordNet and fortunes come from Debian packages (see scripts/install-data.sh).
data:
	@bash scripts/install-data.sh

demo: $(VENV)/.installed
	$(BIN)/prunekit demo

test: $(VENV)/.installed-test data
	$(BIN)/ruff check prunekit tests bench
	$(BIN)/python -m pytest --durations=30

lint: $(VENV)/.installed-test
	$(BIN)/ruff check prunekit tests bench
	$(BIN)/ruff format --check prunekit tests bench

format: $(VENV)/.installed-test
	$(BIN)/ruff format prunekit tests bench
	$(BIN)/ruff check --fix prunekit tests bench

bench: $(VENV)/.installed-test data
	$(BIN)/python -m bench.run

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP) -e '.[docs]'
	@touch $@

# The docs site in site/; --strict turns every broken link or bad reference into an error.
docs: $(VENV)/.installed-docs
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV)
