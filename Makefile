# facelens — two-command quick start: `make repro` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help install repro test test-fast lint format bench clean-venv

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (facelens needs Python 3.11; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## create .venv and install facelens with dev extras

repro: $(STAMP)  ## run the whole DVC pipeline on SynthFACS (offline)
	$(BIN)/facelens params check
	$(BIN)/dvc repro

test: $(STAMP)  ## ruff + the whole test suite (slow tests included)
	$(BIN)/ruff check src tests pipelines benchmarks tools
	$(BIN)/ruff format --check src tests pipelines benchmarks tools
	$(BIN)/python -m pytest -q --durations=25

test-fast: $(STAMP)  ## the unit tier: pure tests, under 90 s
	$(BIN)/python -m pytest -q -m unit

format: $(STAMP)  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix src tests pipelines benchmarks tools
	$(BIN)/ruff format src tests pipelines benchmarks tools

clean-venv:  ## remove .venv
	rm -rf $(VENV)
