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

lint: $(STAMP)
	$(BIN)/python -m compileall -q cortex_node cortex_tui

clean:
	rm -rf $(VENV) .cortex-demo
