# tako: `make run` serves the embedded default, `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup run test lint bench clean

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
	$(VENV)/bin/pytest

bench: setup
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) .tmp
