# Developer tasks.  `make demo` and `make test` work on a fresh clone: they create .venv
# and install into it once (a stamp file keyed on pyproject.toml's hash decides when to
# reinstall), so repeated runs start in seconds.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HASH   := $(shell (sha256sum pyproject.toml 2>/dev/null || shasum -a 256 pyproject.toml) | cut -c1-16)
STAMP  := $(VENV)/.installed-$(HASH)
PYTEST_ARGS ?=

.PHONY: help install test test-all demo bench clean docs-check

help:
	@echo "make demo      train, evaluate and inspect a small model end to end (out/demo/)"
	@echo "make test      the test suite (default markers: not slow, not gpu)"
	@echo "make test-all  every test, slow ones included"
	@echo "make bench     the benchmarks in bench/"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

test: $(STAMP)
	@# best effort: a headless browser for the report test (tests/test_report.py skips without one)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || true
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

demo: $(STAMP)
	$(MAKE) --no-print-directory -f recipes/demo.mk INTERP=$(abspath $(BIN))/interp OUT=out/demo

bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf out/demo .pytest_cache
