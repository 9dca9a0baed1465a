# One-command entry points. `make test` and `make demo` work on a fresh machine:
# they create .venv on first use and install the package with what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test demo venv clean bench docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

## Run the whole test suite (what CI runs).
test: $(STAMP)
	NUMBA_CACHE_DIR=$(CURDIR)/.numba-cache $(BIN)/python -m pytest -q $(PYTEST_ARGS)

## The main job on the embedded default: the simulated DAQ served on loopback, received over TCP.
demo: $(STAMP)
	$(BIN)/conduit run pipelines/demo.toml
	@echo
	@echo "Look at it:  $(BIN)/rerun out/demo_run_0001.rrd      (the Rerun viewer; needs a display)"
	@echo "             $(BIN)/python -c \"import h5py; f = h5py.File('out/demo_run_0001.h5'); print(list(f))\""
	@echo "Live view:   $(BIN)/conduit run pipelines/demo.toml --set rerun.mode=serve"
	@echo "             then: $(BIN)/rerun --connect rerun+http://127.0.0.1:9876/proxy"

## Benchmarks (results go to docs/performance.md by hand, with the machine).
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

## Regenerate docs/pipeline-reference.md from the stages' parameter models.
docs: $(STAMP)
	$(BIN)/conduit stages --markdown > docs/pipeline-reference.md

clean:
	rm -rf $(VENV) .numba-cache out .pytest_cache
