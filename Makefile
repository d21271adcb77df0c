# Two commands on a fresh clone: `make bench` and `make test`. Both create .venv when it is missing.
# `make bench` is the quick pass (minutes); `make bench-full` the full sweep (about 90 minutes on 2 cores).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-toolkit-dev

.PHONY: install bench bench-full test test-slow test-all clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[toolkit,dev]'
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/fgvc-edge bench

bench-full: $(STAMP)
	$(BIN)/fgvc-edge bench --full

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not gpu'

clean:
	rm -rf $(VENV) build *.egg-info
