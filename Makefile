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

# A real batch against the embedded emulator: 300 rows, 40 ms latency and a 60/s quota with
# a burst of 10, so progress, throttling and the adaptive limiter are visible. Fresh each time.
demo: $(STAMP)
	rm -rf demo-output && mkdir demo-output
	$(BIN)/ibimport run manifests/example.csv --local \
		--emulator-latency-ms 40 --emulator-rate 60 --emulator-burst 10 --emulator-fault-rate 0.01 \
		--emulator-available-after-s 2 --emulator-task-mix completed=1 --wait --poll-interval 1 \
		--tag wave=demo --journal demo-output/example.journal \
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
