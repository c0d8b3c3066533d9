# `make demo` and `make test` set up .venv on first use (torch first, pinned: an unpinned torch pulls GB of
# CUDA wheels) and reuse it afterwards. Everything runs offline once installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: demo test install clean go screenshots

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,qlora]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/backprop demo

test: $(STAMP) go
	$(BIN)/python -m pytest

# The Ollama TEMPLATE test renders templates with Go's text/template: Debian's golang, installed once (as root).
go:
	@command -v go >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go; }

# Regenerates screenshots/*.svg from the app itself (the snapshot tests' deterministic scenes).
screenshots: $(STAMP)
	$(BIN)/python tools/screenshots.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
