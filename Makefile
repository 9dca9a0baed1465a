# One-command entry points. `make test` and `make demo` work on a fresh machine:
# they create .venv on first use and install the package with what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test demo venv clean bench docs screenshots panel-screenshot

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

## Run the whole test suite (what CI runs); installs Debian's chromium and mesa-vulkan-drivers for the tests if missing.
test: $(STAMP)
	tools/ensure-test-packages.sh
	NUMBA_CACHE_DIR=$(CURDIR)/.numba-cache $(BIN)/python -m pytest -q $(PYTEST_ARGS)

## The main job on the embedded default: the simulated DAQ served on loopback, received over TCP.
demo: $(STAMP)
	$(BIN)/conduit run pipelines/demo.toml
	@echo
	@echo "Look at it:  $(BIN)/rerun out/demo_run_0001.rrd      (the Rerun viewer; needs a display)"
	@echo "             $(BIN)/python -c \"import h5py; f = h5py.File('out/demo_run_0001.h5'); print(list(f))\""
	@echo "Live view:   $(BIN)/conduit run pipelines/demo.toml --set rerun.mode=serve --set rerun.draw_every_event=false"
	@echo "             then: $(BIN)/rerun rerun+http://127.0.0.1:9876/proxy      (panels: docs/reading-the-view.md)"
	@echo "Control panel while it runs: http://127.0.0.1:8765/   (docs/panel.md)"

## Screenshots of the Rerun view, rendered by the native viewer headless (needs a Vulkan driver; on
## Debian: apt-get install mesa-vulkan-drivers): the demo recording, a graw replay and a live serve run,
## each panel maximized, into out/screenshots/; a few, small, into docs/images/ (docs/reading-the-view.md).
SHOTS := out/screenshots
screenshots: $(STAMP)
	test -f out/demo_run_0001.rrd || $(MAKE) demo
	$(BIN)/conduit simulate graw out/sim --run 1 --events 60 --seed 3 -q
	$(BIN)/conduit run pipelines/replay-graw.toml --set engine.workers=2 > /dev/null
	$(BIN)/python tools/screenshots.py file out/demo_run_0001.rrd $(SHOTS)/demo --events 0,50 --views
	$(BIN)/python tools/screenshots.py file out/replay_run_0001.rrd $(SHOTS)/replay --events 0,30 --views
	$(BIN)/python tools/screenshots.py live pipelines/demo.toml $(SHOTS)/live --at 15 --views \
	    --set rerun.draw_every_event=false --set hdf5.path=../out/live_run_{run:04d}.h5
	$(BIN)/python tools/screenshots.py docs $(SHOTS) docs/images \
	    layout.png=demo/layout_event50.png:1400 \
	    event-3d.png=demo/Event_3_D_colour_amplitude_ADC_event50.png:900 \
	    event-3d-clusters.png=demo/Event_3_D_colour_cluster_event50.png:900 \
	    pad-plane.png=demo/Pad_plane_event_seen_from_z_as_in_3_D_event50.png:900 \
	    occupancy.png=live/Pad_occupancy_run_seen_from_z_live_end.png:900 \
	    traces.png=demo/Traces_event_event50.png:900 \
	    event-table.png=demo/Event_tracks_event50.png:900 \
	    pid.png=live/pid_dE_dx_vs_B_live_end.png:900 \
	    vertex-z.png=live/vertex_z_vertex_z_live_end.png:900 \
	    rates.png=live/Rates_vs_wall_clock_time_live_end.png:900 \
	    health.png=live/CoBo_AsAd_health_live_end.png:900 \
	    live.png=live/live_end.png:1400

## The control panel's page during the demo run, rendered by headless Chromium into docs/images/panel.png
## (needs Debian's chromium: apt-get install chromium).
panel-screenshot: $(STAMP)
	NUMBA_CACHE_DIR=$(CURDIR)/.numba-cache $(BIN)/python tools/panel_screenshot.py docs/images/panel.png

## Benchmarks (results go to docs/performance.md by hand, with the machine).
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

## Regenerate docs/pipeline-reference.md from the stages' parameter models.
docs: $(STAMP)
	$(BIN)/conduit stages --markdown > docs/pipeline-reference.md

clean:
	rm -rf $(VENV) .numba-cache out .pytest_cache
