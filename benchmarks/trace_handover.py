"""CPU of an event's trace matrix from the builder to a worker's slot: ordinary array + copy, or built in a slot.

For ``--events`` default-mix events (700 signal channels over 40 AsAds plus FPN: about 700 rows,
0.72 MB) the builder's frames are decoded, then per event, timed with ``time.thread_time``:

* ``copy``: the builder's ordered copy at emission into a new ordinary array, then
  ``TraceSlots.holding`` copying it into a shared-memory slot (the path before the fourth round,
  and still the path of an event whose traces are not in a slot);
* ``lent``: the ordered copy straight into a slot lent by ``TraceSlots.array``, then
  ``TraceSlots.holding`` handing that slot as it is.

Events are released after each (their slots come back), as when the sinks keep up. Both
alternate, repetition by repetition, pinned to one CPU.

    python benchmarks/trace_handover.py --reps 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba-cache"))

from _common import machine  # noqa: E402
from conduit.engine.shared_traces import TraceSlots  # noqa: E402
from conduit.get.builder import EventBuilder  # noqa: E402
from ingest import make_events  # noqa: E402


def one_pass(builder: EventBuilder, slots: TraceSlots, events, lent: bool) -> float:
    """CPU seconds spent in emission + hand-over for ``events`` (the frames' decoding not counted)."""
    builder.trace_memory = slots.array if lent else None
    spent = 0.0
    for frames in events:
        items = list(frames.values())
        for f in items[:-1]:
            assert not builder.add_frame(f)
        # The last frame completes the event: its decode is timed too, the same in both (small).
        t0 = time.thread_time()
        (event,) = builder.add_frame(items[-1])
        with slots.holding(event.traces):
            pass
        spent += time.thread_time() - t0
        del event
    return spent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="pin to this CPU; -1: do not pin")
    args = ap.parse_args(argv)
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    emap, unique = make_events(args.events, 700)
    builder = EventBuilder(emap, timeout=None, remember=1)
    builder.warm_up()
    slots = TraceSlots()
    times: dict[str, list[float]] = {"copy": [], "lent": []}
    load0 = os.getloadavg()
    try:
        for rep in range(args.reps + 1):
            for n, name in enumerate(times):
                first = (2 * rep + n) * len(unique)  # fresh ids each pass, consecutive
                spent = one_pass(builder, slots, [{k: f[:22] + (first + i).to_bytes(4, "big") + f[26:]
                                                   for k, f in ev.items()} for i, ev in enumerate(unique)],
                                 name == "lent")
                if rep:  # the first pass warms the slots and matrices
                    times[name].append(spent / args.events * 1e3)
    finally:
        slots.close()
    load1 = os.getloadavg()
    print(f"machine: {machine()}; pinned to CPU {args.cpu}; load average {load0[0]:.1f} -> {load1[0]:.1f}")
    print(f"slots: {slots.copies} copied, {slots.handed} handed without a copy, {slots.lent} lent\n")
    print("| path | ms per event, median | best |")
    print("|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.3f} | {min(t):.3f} |")


if __name__ == "__main__":
    main()
