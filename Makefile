# `make demo` and `make test` set up .venv on first use (torch first, pinned: an unpinned torch pulls GB of
# CUDA wheels) and reuse it afterwards. Everything runs offline once installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Unsloth pins older transformers/datasets/trl than we test with, so its backend is tested in a venv of its own.
UNSLOTH_VENV := .venv-unsloth
UNSLOTH_BIN := $(UNSLOTH_VENV)/bin
UNSLOTH_STAMP := $(UNSLOTH_VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: demo test install clean go screenshots unsloth-venv test-unsloth lint

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,qlora]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/backprop demo

test: $(STAMP) go $(UNSLOTH_STAMP) lint
	$(BIN)/python -m pytest
	$(UNSLOTH_BIN)/python -m pytest tests/unsloth

# Style and layering (pyproject.toml): ruff (lint and format), mypy on backprop_engine, and the import contract (the engine never
# imports backprop_tui or Textual). A few seconds; `make test` fails when any of them fails.
lint: $(STAMP)
	$(BIN)/ruff check src tests tools bench
	$(BIN)/ruff format --check src tests tools bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The Unsloth backend on CPU (its fallback), exact versions in constraints-unsloth.txt. torch is its CPU build,
# installed first; PyPI's torchvision (an unsloth dependency) does not load beside it, and nothing on the CPU
# path needs it, so it is removed. `make test` runs this suite too.
unsloth-venv: $(UNSLOTH_STAMP)

$(UNSLOTH_STAMP): pyproject.toml constraints-unsloth.txt
	test -x $(UNSLOTH_BIN)/python || $(PYTHON) -m venv $(UNSLOTH_VENV)
	$(UNSLOTH_BIN)/pip install --quiet --disable-pip-version-check -c constraints-unsloth.txt torch
	$(UNSLOTH_BIN)/pip install --quiet --disable-pip-version-check -c constraints-unsloth.txt -e ".[dev,qlora,unsloth]"
	$(UNSLOTH_BIN)/pip uninstall --quiet --yes torchvision
	touch $(UNSLOTH_STAMP)

test-unsloth: $(UNSLOTH_STAMP)
	$(UNSLOTH_BIN)/python -m pytest tests/unsloth

# The Ollama TEMPLATE test renders templates with Go's text/template (Debian's golang); the SSH-drop test runs
# the app in tmux. Both installed once with apt when missing (as root).
go:
	@command -v go >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go; }
	@command -v tmux >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tmux; }

# Regenerates screenshots/*.svg from the app itself (the snapshot tests' deterministic scenes).
screenshots: $(STAMP)
	$(BIN)/python tools/screenshots.py

clean:
	rm -rf $(VENV) $(UNSLOTH_VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
