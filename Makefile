# Every target sets itself up from nothing: a .venv with the project installed editable, and for
# `test` the Debian packages the suite runs against (rsyslog for the syslog sink, prometheus
# and prometheus-alertmanager for the alert rules and the deploy stack, chromium for the viewer's
# browser tests, driven by Playwright: nothing downloads a browser).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := rsyslog rsyslog-gnutls gnutls-bin prometheus prometheus-alertmanager faketime chromium
BUILD_PACKAGES  := g++ libre2-dev

.PHONY: help install build-deps system-deps node-deps lint typecheck unit test test-dates demo bench soak proto screenshots clean

help:
	@echo "make demo   start a receiver on its embedded default, run an example app, show where every record went"
	@echo "make test   install everything needed, then lint, type-check and run the whole suite"
	@echo "make test-dates  the whole suite under faked dates (faketime): +30 days, +1 year, month end, year end, DST"
	@echo "make bench  benchmarks, printed as ratios against named peers measured in the same run"
	@echo "make screenshots  regenerate the viewer's pictures in docs/ (headless chromium)"
	@echo "make soak   the long reliability runs (10 min steady load, overload, SIGKILL, fuzzing); ~15 minutes"

$(STAMP): pyproject.toml | build-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The distribution was once called `sluice`: drop such an install so one dist owns the packages.
	$(BIN)/python -m pip uninstall -q -y sluice 2>/dev/null || true
	$(BIN)/python -m pip install -q -e '.[receiver,dev]'
	touch $@

# The receiver's compiled hot path (setup.py: optional, so without a compiler the build only
# warns and the receiver runs its pure-Python reference). Rebuilt when its source changes.
FASTPATH := $(VENV)/.built-fastpath
$(FASTPATH): $(STAMP) setup.py collector_ext/sluice_collector/_fastpath.c sdk/sluice/masking/_plainmask.c \
             sdk/sluice/masking/_re2scan.cc | build-deps
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP) $(FASTPATH)

# Installs the Debian packages in $(1) that are missing (one `apt-get update` first).
define apt_install
missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "installing Debian packages:$$missing"; \
  $(SUDO) apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
fi
endef

system-deps:
	@$(call apt_install,$(DEBIAN_PACKAGES))

# g++ and RE2's headers build masking's C++ pre-scan twin (sluice.masking._re2scan). It is
# optional like the C twins: where they cannot be installed the build leaves it out and says so.
build-deps:
	@$(call apt_install,$(BUILD_PACKAGES)) || \
	  echo "warning: could not install $(BUILD_PACKAGES); masking's pre-scans use the RE2 binding"

# The official OpenTelemetry JavaScript exporters that tests/e2e/test_node_exporters.py runs under
# Node: `npm ci` from tests/node/package-lock.json whenever node_modules (not in git) is missing or
# was installed from another lock file. The test does the same on its own when run directly.
NODE_APP   := tests/node
NODE_STAMP := $(NODE_APP)/node_modules/.sluice-installed

node-deps:
	@command -v npm >/dev/null || { echo "installing Debian packages: nodejs npm"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	@want=$$(sha256sum $(NODE_APP)/package-lock.json | cut -d' ' -f1); \
	if [ "$$(cat $(NODE_STAMP) 2>/dev/null)" != "$$want" ]; then \
	  (cd $(NODE_APP) && npm ci --no-audit --no-fund --loglevel=error) && echo "$$want" > $(NODE_STAMP); \
	fi

lint: $(STAMP)
	$(BIN)/ruff check sdk collector_ext tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(FASTPATH)
	$(BIN)/pytest -q

# Under libfaketime (`faketime -f +30d make test`, or `make test-dates`) only the calendar is
# faked and time.sleep is patched around a libfaketime bug: see tests/faketime/README.md.
FAKETIME_ENV := FAKETIME_DONT_FAKE_MONOTONIC=1 PYTHONPATH=$(CURDIR)/tests/faketime
ifneq (,$(findstring faketime,$(LD_PRELOAD)))
PYTEST_ENV := $(FAKETIME_ENV)
endif
# TZ|faketime spec: each run starts a few minutes before the edge it crosses while the suite runs
# (the last one is the spring-forward DST change in Berlin, 02:00 local).
FAKED_DATES := "UTC|+30d" "UTC|+365d" "UTC|@2027-01-31 23:57:00" "UTC|@2026-12-31 23:57:00" \
               "Europe/Berlin|@2027-03-28 01:57:00"

# The suite runs on the compiled hot path, then the receiver's tests again on the pure-Python
# reference (SLUICE_PURE_PYTHON=1), which is what runs where no compiler was: tests/collector,
# the reliability tests and the receiver's end-to-end test: everything that routes, encodes or
# writes records, and the masking corpus and detector tests (masking's twins are _plainmask.c
# and _re2scan.cc), in about 3 minutes on 2 cores. Not again: the rest of the SDK's tests (no receiver), and
# the CLI, viewer, query and browser end-to-end tests, which read files whatever wrote them and
# would double the suite's ~10 minutes to see the same lines (test_fastpath.py proves the two
# paths write the same bytes).
PURE_PYTHON_TESTS := tests/collector tests/reliability tests/e2e/test_receiver_e2e.py \
                     tests/sdk/test_masking_corpus.py tests/sdk/test_masking_detectors.py \
                     tests/sdk/test_masking_properties.py

test: $(STAMP) $(FASTPATH) system-deps node-deps
	$(BIN)/ruff check sdk collector_ext tests bench examples
	$(BIN)/mypy
	$(PYTEST_ENV) $(BIN)/pytest -q
	SLUICE_PURE_PYTHON=1 $(PYTEST_ENV) $(BIN)/pytest -q $(PURE_PYTHON_TESTS)

test-dates: $(STAMP) system-deps node-deps
	@for date in $(FAKED_DATES); do \
	  zone=$${date%%|*}; spec=$${date#*|}; \
	  echo "== TZ=$$zone faketime -f '$$spec'"; \
	  TZ=$$zone $(FAKETIME_ENV) faketime -f "$$spec" $(BIN)/pytest -q -p no:cacheprovider || exit 1; \
	done

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[receiver,dev,bench]'
	$(BIN)/python bench/receiver.py --load easy
	$(BIN)/python bench/receiver.py --load pii --configs default,no-masking,indexed
	$(BIN)/python bench/receiver.py --load pii --configs default,workers-2 --shared-connection
	$(BIN)/python bench/receiver_cpu.py --load pii --configs default,no-masking,indexed
	$(BIN)/python bench/receiver_stages.py --load pii
	$(BIN)/python bench/index_lag.py
	$(BIN)/python bench/masking.py
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/sdk_logging.py
	$(BIN)/python bench/run_capture.py
	$(BIN)/python bench/viewer.py

# Regenerate collector_ext/sluice_collector/query/_proto/ from proto/sluice/v1/query.proto; the
# result is committed, and tests/collector/test_query_proto.py fails when it is stale.
proto: $(STAMP)
	$(BIN)/python -m pip install -q 'grpcio-tools==1.85.1'
	$(BIN)/python -m sluice_collector.query.codegen

# Pictures of each viewer page for docs/viewer.md: a real receiver fed by the OTel SDK, shot in
# Debian's headless chromium (tests/e2e/viewer_harness.py). The viewer itself has no build step.
screenshots: $(STAMP) system-deps
	$(BIN)/python -m tests.e2e.viewer_harness screenshots docs

soak: $(STAMP)
	$(BIN)/python bench/soak.py all --duration 600

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache build *.egg-info
