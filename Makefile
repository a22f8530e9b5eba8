# Two entry points that work on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench bench-models

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sesemi demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Benchmarks (not part of `make test`). The tools environment (tensorflow-cpu)
# only builds the standard models with random weights; they are cached, not committed.
TOOLS := .venv-tools
$(TOOLS)/.installed: tools/requirements-tools.txt
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet -r tools/requirements-tools.txt
	touch $@

bench-models: $(TOOLS)/.installed
	$(TOOLS)/bin/python tools/make_bench_models.py

bench: $(STAMP) bench-models
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
