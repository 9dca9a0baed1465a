"""Cost of the live view (the ``rerun`` sink) per event, and the size of what it records.

    .venv/bin/python benchmarks/view.py [--events 60] [--repeat 3]

Simulates ``--events`` events of the default reaction (~700 traces each),
analyses them (pointcloud, cluster.hdbscan, estimate, histogram) once, then
feeds them ``--repeat`` times to a ``rerun`` sink in mode ``save`` (an .rrd in
a temporary directory):

* drawn: every event drawn (``draw_every_event``), as when a replay is
  recorded; the run panels refresh every 50 events (after events 1, 2, 5, 10
  and 20); and the same without those refreshes (what a drawn event costs
  by itself: its 3-D view, pad plane and traces);
* throttled: drawing limited to 5 events/s (a live view fed faster than
  that), run panels refreshed every second: most events are only counted
  (occupancy, health) and a marker is logged once per stretch not drawn;
* not drawn: the cost of an event that is only counted.

Prints the rerun sink's CPU ms per event: of the whole process (``process_time``:
Rerun's own encoder and writer threads included) and of the calling thread
alone (``thread_time``: what the engine's main loop spends); mean over the
events, the median event and the 99th percentile; median of the repeats; the
histogram stage is timed apart. Also bytes recorded per event.
The figures go into docs/performance.md, with the machine and the load average.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import ANALYSIS_STAGES, machine  # noqa: E402


def analysed_events(n: int) -> list:
    from conduit.config.pipeline import load_pipeline
    from conduit.engine.runner import run_pipeline

    text = f'[source]\nkind = "simulate"\nevents = {n}\nseed = 11\nrun = 1\n\n[engine]\nworkers = 0\n{ANALYSIS_STAGES}'
    events: list = []
    with tempfile.TemporaryDirectory() as tmp:
        text = text.replace('use = "histogram"', 'use = "histogram"\nsave = false')
        summary = run_pipeline(load_pipeline(Path(tmp) / "bench.toml", text=text), handle_signals=False,
                               on_event=events.append)
    if summary.error:
        raise SystemExit(summary.error)
    return events


def feed(events: list, **params) -> dict[str, float]:
    """CPU ms per event (process and calling thread: mean, median, p99) and bytes recorded per event for one
    pass of ``events`` through a fresh sink."""
    from conduit.stage import StageContext
    from conduit_stages.histogram.sink import HistogramSink
    from conduit_stages.histogram.spec import HistogramParams
    from conduit_stages.rerun_sink.params import RerunParams
    from conduit_stages.rerun_sink.sink import RerunSink

    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(run=1, base_dir=Path(tmp), live=True)
        hist = HistogramSink(HistogramParams(save=False), ctx)
        hist.open()
        sink = RerunSink(RerunParams.from_mapping({"mode": "save", "path": "view.rrd", **params}), ctx)
        sink.open()
        hist.begin()
        sink.begin()
        process, thread = [], []
        for event in events:
            hist.consume(event)  # the histogram stage's own cost is not the view's
            start, start_thread = time.process_time(), time.thread_time()
            sink.consume(event)
            thread.append(time.thread_time() - start_thread)
            process.append(time.process_time() - start)
        sink.close()
        size = (Path(tmp) / "view.rrd").stat().st_size
    out = {"bytes": size / len(events)}
    for name, times in (("process", process), ("thread", thread)):
        ms = np.array(times) * 1e3
        out |= {f"{name}_mean": float(ms.mean()), f"{name}_median": float(np.median(ms)),
                f"{name}_p99": float(np.percentile(ms, 99))}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    events = analysed_events(args.events)
    traces = statistics.median(e.n_traces for e in events)
    print(f"machine: {machine()}")
    print(f"{len(events)} simulated events, median {traces:.0f} traces, "
          f"{statistics.median(len(e.get('cloud')) for e in events):.0f} cloud points\n")
    import os

    print(f"CPU ms per event (mean, median, p99), process (all threads) / main thread; kB recorded per event; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| view | process mean | median | p99 | main thread mean | median | p99 | kB/event |")
    print("|---|---|---|---|---|---|---|---|")
    for name, params in (("every event drawn (run panels every 50 events)", {"draw_every_event": True}),
                         ("every event drawn, run panels not refreshed", {"draw_every_event": True,
                                                                         "refresh_events": 10**9}),
                         ("throttled to 5 events/s", {"max_display_rate": 5.0}),
                         ("not drawn, no run-panel refresh", {"max_display_rate": 1e-6,
                                                              "histogram_interval": 1e9})):
        runs = [feed(events, **params) for _ in range(args.repeat)]
        figures = " | ".join(f"{statistics.median(r[f'{clock}_{stat}'] for r in runs):.2f}"
                             for clock in ("process", "thread") for stat in ("mean", "median", "p99"))
        print(f"| {name} | {figures} | {runs[0]['bytes'] / 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
