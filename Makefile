# One entry for people and CI: `make run` serves on the embedded SQLite default,
# `make test` runs lint, format check, import contracts, strict types and the whole suite
# (PostgreSQL and SQLite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run demo test lint typecheck install browser bench

$(BIN)/shopify-receiver: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/shopify-receiver

# `make run PORT=9000` (or PORT in the environment) picks the port.
PORT ?= 8000

run: install
	$(BIN)/shopify-receiver serve --host 127.0.0.1 --port $(PORT)

# A simulated store (20,000 orders over three years), backfilled and trading live, on the
# embedded default in var/demo/; prints the dashboard address and a sign-in. Ctrl-C stops it.
demo: install
	$(BIN)/python -m demo --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The layer contract (receiver -> backfill -> handlers -> models) and strict types.
typecheck: install
	$(BIN)/lint-imports
	$(BIN)/mypy

# The end-to-end tests drive Debian's Chromium through Playwright; no browser is downloaded.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: lint typecheck browser
	$(BIN)/pytest -n auto --dist loadfile

# Every figure of bench/RESULTS.md, one run each, appended there with the machine and the date:
# webhooks (service vs a careful minimal peer, SQLite, a burst during a backfill) and the
# backfill (throughput against PostgreSQL's COPY ceiling, rate limits, memory from 100k to 1M
# orders). About an hour and a half on a 2-core machine; needs the local PostgreSQL.
bench: install
	$(BIN)/python -m bench.webhooks
	$(BIN)/python -m bench.backfill
