"""The live view's cost, A/B in one process: another tree's ``rerun`` sink and this one's, fed the same events
alternately.

    .venv/bin/python benchmarks/view_ab.py OTHER_PLUGINS_DIR [--events 60] [--passes 4] [--live-passes 20]

On a machine shared with other jobs, runs of ``benchmarks/view.py`` minutes
apart differ by up to 40 % (a drawn event's median moved from 1.1 to 1.8 ms
between two runs of the same code); here both sinks see the same load event
by event, so their difference is the code's. ``OTHER_PLUGINS_DIR`` is the
``plugins`` folder of another checkout (e.g. a clone at the commit compared
against); ``conduit`` itself is this checkout's for both.

Three feeds, each with its own pair of sinks in mode ``save`` (a temporary
.rrd each) and a histogram stage filled first:

* drawn: every event drawn, run panels not refreshed (what a drawn event
  costs: 3-D view, pad plane, traces, track table);
* drawn, run panels every 50 events (a recorded replay);
* live at 200 events/s: a paced clock, drawing throttled to 5 events/s,
  run panels every second: the cost per *received* event.

Prints CPU ms per event of the calling thread (``thread_time``: median, mean,
p99) and of the whole process (``process_time``, Rerun's threads included;
both sinks' threads run in it, so this figure mixes them a little), and kB
recorded per event, with the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine  # noqa: E402
from view import analysed_events  # noqa: E402


def load_plugins(plugins: str) -> tuple:
    """The rerun sink, its params and the histogram stage of the ``conduit_stages`` under ``plugins``."""
    for name in [n for n in sys.modules if n.startswith("conduit_stages")]:
        del sys.modules[name]  # the classes already loaded keep their own modules
    sys.path.insert(0, plugins)
    try:
        sink = importlib.import_module("conduit_stages.rerun_sink.sink")
        params = importlib.import_module("conduit_stages.rerun_sink.params")
        hist = importlib.import_module("conduit_stages.histogram.sink")
        spec = importlib.import_module("conduit_stages.histogram.spec")
    finally:
        sys.path.remove(plugins)
    if not sink.__file__.startswith(str(Path(plugins).resolve())):
        raise SystemExit(f"{plugins}: loaded {sink.__file__} instead")
    return sink, params, hist, spec


class PacedClock:
    """``time`` for a sink module: a monotonic clock the feed advances by ``1 / 200`` s per event."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def feed(sides: dict[str, tuple], events: list, passes: int, live: bool, tmp: Path, **params) -> dict[str, dict]:
    """Feed ``passes`` passes of ``events`` to one sink per side, alternating which goes first."""
    from conduit.stage import StageContext

    runs = {}
    for name, (sink_module, params_module, hist_module, spec_module) in sides.items():
        ctx = StageContext(run=1, base_dir=tmp / name, live=True)
        hist = hist_module.HistogramSink(spec_module.HistogramParams(save=False), ctx)
        hist.open()
        sink = sink_module.RerunSink(params_module.RerunParams.from_mapping({"mode": "save", "path": "view.rrd",
                                                                             **params}), ctx)
        sink.open()
        hist.begin()
        sink.begin()
        clock = PacedClock()
        sink_module.time = clock if live else time
        runs[name] = {"sink": sink, "hist": hist, "clock": clock, "thread": [], "process": [], "module": sink_module}
    order = list(runs)
    k = 0
    for p in range(passes):
        for event in events:
            event = dataclasses.replace(event, id=event.id + p * len(events)) if p else event
            k += 1
            for name in order if k % 2 else order[::-1]:
                run = runs[name]
                run["hist"].consume(event)
                start, start_process = time.thread_time(), time.process_time()
                run["sink"].consume(event)
                run["thread"].append(time.thread_time() - start)
                run["process"].append(time.process_time() - start_process)
                run["clock"].now += 1 / 200
    for name, run in runs.items():
        run["sink"].close()
        run["module"].time = time
        run["bytes"] = (tmp / name / "view.rrd").stat().st_size / len(run["thread"])
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", help="plugins folder of the tree compared against")
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--passes", type=int, default=4, help="passes over the events when every one is drawn")
    parser.add_argument("--live-passes", type=int, default=20, help="passes over the events when live")
    args = parser.parse_args()
    events = analysed_events(args.events)
    sides = {"other": load_plugins(args.other), "this": load_plugins(str(HERE.parent / "plugins"))}
    print(f"machine: {machine()}")
    print("CPU ms per event: calling thread median / mean / p99, process mean; kB recorded per event")
    print("| feed | tree | thread median | thread mean | thread p99 | process mean | kB/event | load |")
    print("|---|---|---|---|---|---|---|---|")
    feeds = (("every event drawn, run panels not refreshed", args.passes, False,
              {"draw_every_event": True, "refresh_events": 10**9}),
             ("every event drawn, run panels every 50 events", args.passes, False, {"draw_every_event": True}),
             ("live at 200 events/s, per received event", args.live_passes, True, {"max_display_rate": 5.0}))
    for title, passes, live, params in feeds:
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            runs = feed(sides, events, passes, live, Path(tmp), **params)
        for name, run in runs.items():
            thread, process = np.array(run["thread"][20:]) * 1e3, np.array(run["process"][20:]) * 1e3
            print(f"| {title} | {name} | {np.median(thread):.3f} | {thread.mean():.3f} | "
                  f"{np.percentile(thread, 99):.2f} | {process.mean():.3f} | {run['bytes'] / 1e3:.1f} | "
                  f"{load:.1f}-{os.getloadavg()[0]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
