# tako: `make run` serves the embedded default, `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup run test lint bench bench-compare bench-runtime bench-search clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

run: setup
	$(VENV)/bin/tako serve

lint: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup
	./scripts/system-deps.sh
	$(MAKE) lint
	$(VENV)/bin/pytest -n 2

# Benchmarks. BENCH_SECONDS sets the timed runs (seconds per row or measurement; below 2
# `make bench` is quick: one round, fewer RSS requests), BENCH_ROUNDS and
# BENCH_RSS_REQUESTS the gateway bench, BENCH_SEEDS the search benchmark; BENCH_ARGS
# passes more flags to the script.
BENCH_DEPS := ./scripts/system-deps.sh

bench: setup  # the gateway's performance table: direct, thin proxy, tako (memory, Redis, tracing)
	$(BENCH_DEPS) nginx wrk redis-server
	$(PY) bench/gateway_bench.py $(BENCH_ARGS)

bench-runtime: setup  # admission alone (admit + reconcile, guarded call), memory and Redis
	$(BENCH_DEPS) redis-server
	$(PY) bench/runtime_bench.py $(BENCH_ARGS)

bench-compare: setup  # tako at REF against this checkout, in one run (REF=<git revision>)
	$(BENCH_DEPS) nginx wrk
	$(PY) bench/compare_bench.py --ref $(REF) $(BENCH_ARGS)

bench-search: setup  # AB-MCTS against repeated sampling, simulated workers
	$(PY) bench/search_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .tmp
