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

``--total REPEATS``: instead, the whole cost of each tree's sink, one sink per
process: each side in a fresh interpreter of its own, the sides alternating
``REPEATS`` times per feed, fed the same events (analysed once, passed in a
file). Counted from before ``open()`` to after ``close()``: that process's
user+sys CPU (every thread: the caller's, Rerun's; the histogram stage
filled beside it is counted apart and left out) and its children's (the
rerun sink's draw process, when it has one), per event, with the calling
thread's median per event. Whether drawing apart adds CPU in all is the
difference of the sums.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pickle
import pkgutil
import resource
import subprocess
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
    """The rerun sink, its params, the histogram stage of the ``conduit_stages`` under ``plugins``, and
    every ``conduit_stages`` module of that tree (:func:`use` puts them back in ``sys.modules``)."""
    for name in [n for n in sys.modules if n.startswith("conduit_stages")]:
        del sys.modules[name]  # the classes already loaded keep their own modules
    sys.path.insert(0, plugins)
    try:
        sink = importlib.import_module("conduit_stages.rerun_sink.sink")
        params = importlib.import_module("conduit_stages.rerun_sink.params")
        hist = importlib.import_module("conduit_stages.histogram.sink")
        spec = importlib.import_module("conduit_stages.histogram.spec")
        package = importlib.import_module("conduit_stages.rerun_sink")
        for module in pkgutil.iter_modules(package.__path__):  # those imported inside functions too
            importlib.import_module(f"conduit_stages.rerun_sink.{module.name}")
    finally:
        sys.path.remove(plugins)
    if not sink.__file__.startswith(str(Path(plugins).resolve())):
        raise SystemExit(f"{plugins}: loaded {sink.__file__} instead")
    tree = {name: module for name, module in sys.modules.items() if name.startswith("conduit_stages")}
    return sink, params, hist, spec, tree


def use(tree: dict) -> None:
    """Make ``tree``'s modules the ones ``sys.modules`` holds: a relative import run inside a function (``from
    . import kernels`` when a sink opens, ``from .kernels import count_pairs`` per event) then finds the
    module of the sink's own tree, not of the tree loaded last."""
    for name in [n for n in sys.modules if n.startswith("conduit_stages") and n not in tree]:
        del sys.modules[name]
    sys.modules.update(tree)


class PacedClock:
    """``time`` for a sink module: a monotonic clock the feed advances by ``1 / 200`` s per event."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def feed(sides: dict[str, tuple], events: list, passes: int, live: bool, tmp: Path, hist_cpu: list | None = None,
         opened=None, own: dict[str, dict] | None = None, **params) -> dict[str, dict]:
    """Feed ``passes`` passes of ``events`` to one sink per side, alternating which goes first (``hist_cpu``:
    collects the process CPU seconds of each histogram-stage call; ``opened(sinks)`` is called once every sink
    has begun; ``own``: more sink parameters of one side, by its name)."""
    from conduit.stage import StageContext

    runs = {}
    for name, (sink_module, params_module, hist_module, spec_module, tree) in sides.items():
        use(tree)
        ctx = StageContext(run=1, base_dir=tmp / name, live=True)
        hist = hist_module.HistogramSink(spec_module.HistogramParams(save=False), ctx)
        hist.open()
        sink = sink_module.RerunSink(params_module.RerunParams.from_mapping({"mode": "save", "path": "view.rrd",
                                                                             **params, **(own or {}).get(name, {})}),
                                     ctx)
        sink.open()
        hist.begin()
        sink.begin()
        clock = PacedClock()
        sink_module.time = clock if live else time
        runs[name] = {"sink": sink, "hist": hist, "clock": clock, "thread": [], "process": [], "module": sink_module,
                      "tree": tree}
    if opened is not None:
        opened([run["sink"] for run in runs.values()])
    order = list(runs)
    k = 0
    for p in range(passes):
        for event in events:
            event = dataclasses.replace(event, id=event.id + p * len(events)) if p else event
            k += 1
            for name in order if k % 2 else order[::-1]:
                run = runs[name]
                use(run["tree"])
                if hist_cpu is not None:
                    before = time.process_time()
                    run["hist"].consume(event)
                    hist_cpu.append(time.process_time() - before)
                else:
                    run["hist"].consume(event)
                start, start_process = time.thread_time(), time.process_time()
                run["sink"].consume(event)
                run["thread"].append(time.thread_time() - start)
                run["process"].append(time.process_time() - start_process)
                run["clock"].now += 1 / 200
    for name, run in runs.items():
        use(run["tree"])
        run["sink"].close()
        run["module"].time = time
        run["bytes"] = (tmp / name / "view.rrd").stat().st_size / len(run["thread"])
    return runs


def _cpu(who: int) -> float:
    """User + system CPU seconds of this process (every thread) or of its waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_side(plugins: str, events_file: str, feed_name: str, own: dict) -> None:
    """``--one``: feed one tree's sink in this process and print its whole cost as JSON (see ``--total``)."""
    with open(events_file, "rb") as f:
        events, passes, live, params = pickle.load(f)[feed_name]
    side = load_plugins(plugins)
    start: dict[str, float] = {}

    def opened(sinks: list) -> None:
        """CPU spent so far (the sink's start, its draw process's start) is not a per-event cost."""
        drawer = getattr(sinks[0], "drawer", None)
        start["self"] = _cpu(resource.RUSAGE_SELF)
        start["children"] = _cpu(resource.RUSAGE_CHILDREN) + (_proc_cpu(drawer.pid) if drawer is not None else 0.0)

    hist_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = feed({"side": side}, events, passes, live, Path(tmp), hist_cpu=hist_cpu, opened=opened,
                    own={"side": own}, **params)
    run = runs["side"]
    n = len(run["thread"])
    own = _cpu(resource.RUSAGE_SELF) - start["self"] - sum(hist_cpu)
    children = _cpu(resource.RUSAGE_CHILDREN) - start["children"]
    thread = np.array(run["thread"][20:]) * 1e3
    print(json.dumps({"thread_median": float(np.median(thread)), "process": own * 1e3 / n,
                      "children": children * 1e3 / n, "events": n}))


def total(args, events: list, feeds: tuple) -> int:
    """``--total``: each side in processes of its own, alternating; whole-process and children's CPU per event."""
    print(f"machine: {machine()}")
    print("CPU ms per event, each sink alone in a process (open to close): the calling thread's median, the whole "
          "process (all threads, the histogram stage left out), its children (the draw process); medians of "
          f"{args.total} alternated runs each")
    print("| feed | tree | thread median | main process | draw process | both | load |")
    print("|---|---|---|---|---|---|---|")
    plugins = {"other": args.other, "this": str(HERE.parent / "plugins")}
    with tempfile.TemporaryDirectory() as tmp:
        events_file = Path(tmp) / "events.pickle"
        with open(events_file, "wb") as f:
            pickle.dump({title: (events, passes, live, params) for title, passes, live, params in feeds}, f)
        for title, *_ in feeds:
            load = os.getloadavg()[0]
            results: dict[str, list[dict]] = {"other": [], "this": []}
            for k in range(args.total):
                for name in ("other", "this") if k % 2 == 0 else ("this", "other"):
                    own = json.dumps(args.own if name == "this" else {})
                    out = subprocess.run([sys.executable, __file__, plugins["other"], "--one", plugins[name], "--own", own,
                                          "--events-file", str(events_file), "--feed", title],
                                         capture_output=True, text=True, check=True)
                    results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            for name, rows in results.items():
                med = {key: float(np.median([r[key] for r in rows])) for key in ("thread_median", "process",
                                                                                  "children")}
                both = float(np.median([r["process"] + r["children"] for r in rows]))
                print(f"| {title} | {name} | {med['thread_median']:.3f} | {med['process']:.3f} | "
                      f"{med['children']:.3f} | {both:.3f} | {load:.1f}-{os.getloadavg()[0]:.1f} |", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", help="plugins folder of the tree compared against")
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--passes", type=int, default=4, help="passes over the events when every one is drawn")
    parser.add_argument("--live-passes", type=int, default=20, help="passes over the events when live")
    parser.add_argument("--total", type=int, default=0, metavar="REPEATS",
                        help="whole-process and draw-process CPU, each side in processes of its own")
    parser.add_argument("--draw-process", action="store_true",
                        help="this tree's sink draws in a process of its own (draw_process = true)")
    parser.add_argument("--own", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # (--total's subprocess: the plugins folder fed)
    parser.add_argument("--events-file", help=argparse.SUPPRESS)
    parser.add_argument("--feed", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # (--own: this side's sink parameters as JSON, from --total)
        one_side(args.one, args.events_file, args.feed, json.loads(args.own))
        return 0
    args.own = {"draw_process": True} if args.draw_process else {}
    feeds = (("every event drawn, run panels not refreshed", args.passes, False,
              {"draw_every_event": True, "refresh_events": 10**9}),
             ("every event drawn, run panels every 50 events", args.passes, False, {"draw_every_event": True}),
             ("live at 200 events/s, per received event", args.live_passes, True, {"max_display_rate": 5.0}))
    events = analysed_events(args.events)
    if args.total:
        return total(args, events, feeds)
    sides = {"other": load_plugins(args.other), "this": load_plugins(str(HERE.parent / "plugins"))}
    print(f"machine: {machine()}")
    print("CPU ms per event: calling thread median / mean / p99, process mean; kB recorded per event")
    print("| feed | tree | thread median | thread mean | thread p99 | process mean | kB/event | load |")
    print("|---|---|---|---|---|---|---|---|")
    for title, passes, live, params in feeds:
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            runs = feed(sides, events, passes, live, Path(tmp), own={"this": args.own}, **params)
        for name, run in runs.items():
            thread, process = np.array(run["thread"][20:]) * 1e3, np.array(run["process"][20:]) * 1e3
            print(f"| {title} | {name} | {np.median(thread):.3f} | {thread.mean():.3f} | "
                  f"{np.percentile(thread, 99):.2f} | {process.mean():.3f} | {run['bytes'] / 1e3:.1f} | "
                  f"{load:.1f}-{os.getloadavg()[0]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
