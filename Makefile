# parcel: carrier-scale package tracking. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PARCEL := $(BIN)/python cli.py
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help bootstrap venv up down status migrate seed run test test-unit test-integration lint bench bench-eta bench-routing bench-lastmile web clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

bootstrap: ## install missing system packages (JDK 17, Maven, PostgreSQL, Redis) when root
	@PYTHON=$(PY) stack/bootstrap.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed ## create the virtualenv with the pinned dependencies

api/web/node_modules/.installed: api/web/package.json api/web/package-lock.json
	@cd api/web && npm ci --no-audit --no-fund --silent
	@touch $@

web: api/web/node_modules/.installed ## the tracking page's map library (Leaflet, US outline) from npm, exact versions

up: bootstrap venv web ## start Kafka, Cassandra, PostgreSQL, Redis (idempotent), migrate, seed
	@$(PARCEL) up

down: ## stop the local stack (data kept in .stack/)
	@test -x $(BIN)/python && $(PARCEL) down || true

status: venv ## report each server: address, up/down, memory, log
	@$(PARCEL) status

migrate: venv ## apply PostgreSQL (Alembic) and Cassandra (CQL) migrations
	@$(PARCEL) migrate

seed: venv ## load the facility network into PostgreSQL
	@$(PARCEL) seed

run: up ## the main job: stack up, the scan pipeline fed a simulated day, where to look
	@$(PARCEL) status --check
	@$(PARCEL) demo

test: up ## every test against the real servers (starts them first)
	@$(BIN)/pytest -q tests

test-unit: venv ## the pure tests only (no servers)
	@$(BIN)/pytest -q tests/unit

test-integration: up ## the tests against the real servers
	@$(BIN)/pytest -q tests/integration

lint: venv ## ruff, mypy on the core packages, and the topology linter
	@$(BIN)/ruff check .
	@$(BIN)/mypy --ignore-missing-imports config operators topologies stack
	@$(PARCEL) lint topologies/*.yaml

bench: up ## scan pipeline end to end vs pass-through and naive baselines (docs/bench/pipeline.md)
	@$(BIN)/python -m bench.pipeline --scans 200000

bench-eta: venv ## ETA model vs seller estimate, route median and rules on Olist (docs/bench/eta.md)
	@nice -n 10 $(BIN)/python -m models.eta.bench ../shared/data/olist

bench-routing: venv ## route optimizer engines on TSPLIB, Solomon, Dumas and a 150-stop day (docs/bench/routing.md)
	@mkdir -p artifacts/routing
	@for set in tsplib solomon tsptw_dumas; do \
	  nice -n 10 $(BIN)/python -m routing.cli bench ../shared/data/$$set --time-limit 10 --json \
	    --solver lkh --solver pyvrp --solver ortools=5 --solver vroom=5 > artifacts/routing/$$set.jsonl && \
	  $(BIN)/python -m routing.cli report artifacts/routing/$$set.jsonl; done
	@$(BIN)/python -m routing.cli bench-day --seed 7 --json

bench-lastmile: up ## GPS heartbeats/s into Redis GEO vs one GEOADD per request; SSE fan-out p99 (docs/bench/lastmile.md)
	@nice -n 10 $(BIN)/python -m bench.lastmile --write

.PHONY: bench-notifier
bench-notifier: up ## notifier decisions/s and p99 from `notifications` to the provider's receipt (docs/bench/notifier.md)
	@nice -n 10 $(BIN)/python -m bench.notifier

clean: down ## stop the stack and delete its data, logs and jars
	@test -x $(BIN)/python && $(BIN)/python -c "from config.settings import get_settings; from stack.servers import pg_home; print(pg_home(get_settings()))" | grep '^/var/lib/parcel-stack/' | xargs -r rm -rf || true
	rm -rf .stack
