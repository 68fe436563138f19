# Two commands do the whole set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv, installs sage (torch pinned to the local CPU wheel via constraints.txt),
# builds the sample catalog if it is missing, then runs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sage-installed
CATALOG := catalogs/sample
CATALOG_STAMP := $(CATALOG)/.sage-catalog.json
PYTEST_ARGS ?=

.PHONY: demo test install catalog bench soak clean-catalog

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,research,marl,foundation,ray]'
	touch $(STAMP)

catalog: $(CATALOG_STAMP)

$(CATALOG_STAMP): $(STAMP) $(wildcard catalogs/raw/*.csv.gz)
	$(BIN)/sage catalog build --catalog $(CATALOG)

demo: catalog
	$(BIN)/sage demo --catalog $(CATALOG)

test: catalog
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: catalog
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

soak: catalog
	$(BIN)/python -m pytest -m soak -s tests/reliability/

clean-catalog:
	rm -rf $(CATALOG)
