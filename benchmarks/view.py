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
* not drawn: the cost of an event that is only counted;
* live at 200 events/s: 1,200 events (the simulated ones again and again)
  received at 200 events/s on a paced clock, drawing throttled to 5
  events/s and run panels refreshed every second as on an online run: the
  sink's cost per *received* event (drawn, marker and counted-only events
  together).

Prints the rerun sink's CPU ms per event: of the whole process (``process_time``:
Rerun's own encoder and writer threads included) and of the calling thread
alone (``thread_time``: what the engine's main loop spends); mean over the
events, the median event and the 99th percentile; median of the repeats; the
histogram stage is timed apart. Also bytes recorded per event.
The figures go into docs/performance.md, with the machine and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
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


class _PacedClock:
    """``time`` for the sink with a monotonic clock that advances ``1 / rate`` seconds per event fed: drawing
    throttled as on a live run at ``rate`` events/s, however fast the machine feeds them."""

    def __init__(self, rate: float):
        self.step, self.now = 1.0 / rate, 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def feed(events: list, rate: float | None = None, passes: int = 1, **params) -> dict[str, float]:
    """CPU ms per event (process and calling thread: mean, median, p99) and bytes recorded per event for
    ``passes`` passes of ``events`` through a fresh sink; ``rate``: as received live at that many events/s
    (:class:`_PacedClock`)."""
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
        import conduit_stages.rerun_sink.sink as sink_module

        clock = _PacedClock(rate) if rate else None
        if clock is not None:
            sink_module.time = clock
        process, thread = [], []
        try:
            for k in range(passes):
                for event in events:
                    if k:  # a later pass: the same events with new ids
                        event = dataclasses.replace(event, id=event.id + k * len(events))
                    hist.consume(event)  # the histogram stage's own cost is not the view's
                    start, start_thread = time.process_time(), time.thread_time()
                    sink.consume(event)
                    thread.append(time.thread_time() - start_thread)
                    process.append(time.process_time() - start)
                    if clock is not None:
                        clock.now += clock.step
        finally:
            sink_module.time = time
        sink.close()
        size = (Path(tmp) / "view.rrd").stat().st_size
    out = {"bytes": size / len(process)}
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
        print_row(name, runs)
    # Live: events arrive at 200 events/s (paced clock), drawing throttled to 5 events/s and the run panels
    # refreshed every second: what the sink costs per *received* event on an online run.
    runs = [feed(events, rate=200.0, passes=max(1, 1200 // len(events)), max_display_rate=5.0)
            for _ in range(args.repeat)]
    print_row("live at 200 events/s (5 drawn/s, panels every 1 s), per received event", runs)
    return 0


def print_row(name: str, runs: list[dict]) -> None:
    """One table row: the median over the repeats of each figure."""
    figures = " | ".join(f"{statistics.median(r[f'{clock}_{stat}'] for r in runs):.2f}"
                         for clock in ("process", "thread") for stat in ("mean", "median", "p99"))
    print(f"| {name} | {figures} | {runs[0]['bytes'] / 1e3:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
