# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AWSCLI_VENV := .venv-awscli
AWSCLI_STAMP := $(AWSCLI_VENV)/.installed
JS_DIR := tests/emulator/js
JS_STAMP := $(JS_DIR)/node_modules/.installed

.PHONY: demo test lint typecheck unit setup clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The AWS CLI pins its own botocore, different from aiobotocore's: it gets its own venv.
$(AWSCLI_STAMP):
	$(PYTHON) -m venv $(AWSCLI_VENV)
	$(AWSCLI_VENV)/bin/pip install -q --upgrade pip
	$(AWSCLI_VENV)/bin/pip install -q awscli
	touch $(AWSCLI_STAMP)

# The AWS SDK for JavaScript v3 of the emulator's contract test; without npm that test skips.
$(JS_STAMP): $(JS_DIR)/package-lock.json
	if command -v npm >/dev/null; then \
		cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	fi

setup: $(STAMP)

# A whole wave from disk images (issue 19) against a local emulator in the background
# (stopped on exit, however the recipe ends): DEMO_VMS VMs over two Regions, their disk
# objects placed in the emulator's S3 by manifests/demo_wave.py; EC2 import tasks of about
# 3 s, 20 slots per Region, 40 ms latency, a 60/s quota and 1% faults, so slots, throttling
# and retries are visible; every image followed to AVAILABLE; the HTML wave report last.
# Throwaway credentials: nothing here can reach AWS. Fresh each time.
DEMO_VMS ?= 300
demo: $(STAMP)
	rm -rf demo-output && mkdir demo-output
	@set -e; \
	unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL; \
	export AWS_ACCESS_KEY_ID=AKIAIBIMPORTDEMO AWS_SECRET_ACCESS_KEY=ibimport-demo \
		AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
		AWS_EC2_METADATA_DISABLED=true; \
	$(BIN)/ibimport emulator --port 0 --seed 19 --latency-ms 40 --rate 60 --burst 10 \
		--fault-rate 0.01 --task-slots 20 --task-duration-s 3 --available-after-s 1 \
		> demo-output/emulator.log 2>&1 & emulator=$$!; \
	trap 'kill $$emulator 2>/dev/null || true; wait $$emulator 2>/dev/null || true' EXIT INT TERM; \
	for _ in $$(seq 100); do grep -q '^export AWS_ENDPOINT_URL=' demo-output/emulator.log && break; sleep 0.1; done; \
	url=$$(sed -n 's/^export AWS_ENDPOINT_URL=//p' demo-output/emulator.log); \
	if [ -z "$$url" ]; then cat demo-output/emulator.log; exit 1; fi; \
	$(BIN)/python manifests/demo_wave.py --endpoint-url $$url --vms $(DEMO_VMS) \
		--manifest demo-output/wave.csv; \
	$(BIN)/ibimport run demo-output/wave.csv --endpoint-url $$url --region us-east-1 \
		--wait --poll-interval 0.5s --tag wave=demo --journal demo-output/wave.journal \
		--report demo-output/report.json --results demo-output/results.csv \
		--html demo-output/wave.html

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# Headless Chromium for the wave report's browser tests (tests/integration/test_html_report.py
# skip without it). Debian's package; installed only where missing and apt-get is there.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ command -v apt-get >/dev/null 2>&1 && apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the browser tests will skip"

unit: $(STAMP) $(AWSCLI_STAMP) $(JS_STAMP) browser
	IBIMPORT_AWS_CLI=$(CURDIR)/$(AWSCLI_VENV)/bin/aws $(BIN)/pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) $(AWSCLI_VENV) $(JS_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache
