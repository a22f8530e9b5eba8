# Two entry points that work on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test soak install clean bench bench-models image-test occlum-check

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# -q -q: errors only. setuptools' editable-install BuildBackendWarning (a
	@# meta path finder is used) is about layouts like ours and not actionable.
	$(BIN)/pip install -q -q -e '.[test]'
	touch $(STAMP)
	@echo "installed: put sesemi on PATH with  . $(VENV)/bin/activate  (or run $(BIN)/sesemi)"

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sesemi demo
	@echo "the sesemi command: . $(VENV)/bin/activate puts it on PATH (README: a session by hand)"

# Three workers on two cores: most of the suite waits on servers it started.
# A module's tests share a worker (tests/conftest.py assigns the groups).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 3 --dist loadgroup

# Long suites (load, kill loops, full property runs): bounded, loopback only.
soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak -p no:cacheprovider

# The plain action image in a real container (podman + runc, from Debian's
# packages), started as OpenWhisk starts a blackbox action; the /init and /run
# contract and the encrypted flow against it. Not part of `make test` / .ci/run.
image-test: $(STAMP)
	@command -v podman >/dev/null && command -v runc >/dev/null || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y podman runc; }
	SESEMI_IMAGE_TEST=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/image

# Static checks of the Occlum appliances and images alone (also part of `make test`).
occlum-check: $(STAMP)
	$(BIN)/python -m occlum_instance.checks

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
	$(BIN)/pip install -q -q -e '.[test,bench]'
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info
