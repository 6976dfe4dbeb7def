# Every target creates .venv itself: on a fresh machine with only Python, `make run`
# and `make test` are all the set-up there is.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= auto

.PHONY: run test test-slow bench screenshots lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cortex swarm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) -m "not slow" tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) -m slow --timeout 900 tests

bench: $(STAMP)
	$(BIN)/python -m bench.run

screenshots: $(STAMP)
	command -v rsvg-convert >/dev/null || (apt-get update -q && apt-get install -y -q librsvg2-bin)
	$(BIN)/python screenshots/generate.py

# ruff and import-linter are configured in pyproject.toml ([tool.ruff], [tool.importlinter]);
# both run, so one pass reports every finding.
lint: $(STAMP)
	$(BIN)/python -m compileall -q cortex_node cortex_tui
	status=0; \
	$(BIN)/ruff check cortex_node cortex_tui tests bench || status=1; \
	$(BIN)/lint-imports --no-logo --cache-dir $(VENV)/.import_linter_cache || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .cortex-demo
