# Two commands on a fresh clone: `make bench` and `make test`. Both create .venv when it is missing.
# `make bench` is the quick pass (about 2 minutes on 2 idle cores); `make bench-full` the full sweep (well over an hour).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-toolkit-dev
OV_STAMP := $(VENV)/.installed-openvino

.PHONY: install bench bench-full bench-openvino test test-slow test-all clean

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

$(OV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[toolkit,dev,openvino]'
	touch $(OV_STAMP)

# Ours vs OpenVINO, every registry model, 2 threads, batch 1 (on an idle machine); ARGS="--models a,b --resume".
bench-openvino: $(OV_STAMP)
	$(BIN)/python benchmarks/openvino_compare.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not gpu'

clean:
	rm -rf $(VENV) build *.egg-info
