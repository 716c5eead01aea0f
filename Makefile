# Every target sets itself up from nothing: a .venv with the project installed editable, and for
# `test` the Debian packages the suite runs against (rsyslog for the syslog sink).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := rsyslog rsyslog-gnutls gnutls-bin prometheus

.PHONY: help install system-deps lint typecheck unit test demo bench soak proto clean

help:
	@echo "make demo   start a receiver on its embedded default, run an example app, show where every record went"
	@echo "make test   install everything needed, then lint, type-check and run the whole suite"
	@echo "make bench  benchmarks, printed as ratios against named peers measured in the same run"
	@echo "make soak   the long reliability runs (10 min steady load, overload, SIGKILL, fuzzing); ~15 minutes"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check sdk collector_ext tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: $(STAMP) system-deps
	$(BIN)/ruff check sdk collector_ext tests bench examples
	$(BIN)/mypy
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/receiver.py
	$(BIN)/python bench/masking.py
	$(BIN)/python bench/sdk_logging.py
	$(BIN)/python bench/run_capture.py

# Regenerate collector_ext/sluice_collector/query/_proto/ from proto/sluice/v1/query.proto; the
# result is committed, and tests/collector/test_query_proto.py fails when it is stale.
proto: $(STAMP)
	$(BIN)/python -m pip install -q 'grpcio-tools==1.85.1'
	$(BIN)/python -m sluice_collector.query.codegen

soak: $(STAMP)
	$(BIN)/python bench/soak.py all --duration 600

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache build *.egg-info
