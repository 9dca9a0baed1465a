"""The hdf5 writer's own work per event, in one process: CPU time, or instructions under callgrind.

    .venv/bin/python benchmarks/sinks_hdf5_recorder_cost.py [--events 600] [--warm 200] [--dir /tmp]
        [--commit-every 400] [--traces 700]

Runs :class:`conduit_stages.hdf5_sink.recorder.Recorder` (what the writer
process does with each event: the store's objects, the direct writes, the
journal, a commit every ``--commit-every`` events = 2 s at 200 events/s) on
the default mix of ``sinks_hdf5_throughput.py`` (700 traces + a 2000-point
cloud + 3 estimate rows, no cluster copies; page-aligned as in the ring),
without a writer process, a ring or a socket, and prints the CPU time (user, system) per event after the
first ``--warm`` events, then closes the store (no consolidation).

Instructions, which the machine's load does not move: run it under
``valgrind --tool=callgrind --callgrind-out-file=F`` with ``--events 200``
and ``--events 600`` and divide the difference of the totals
(``callgrind_annotate F | head``) by 400.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sinks_hdf5_throughput import events, make_pool  # noqa: E402


def init_master(f) -> None:
    """The master as the sink stages it (its groups and the estimates table)."""
    import numpy as np

    from conduit_stages.hdf5_sink import layout
    from conduit_stages.hdf5_sink.recorder import TABLE_DTYPE

    f.attrs["events_flushed"] = np.int64(0)
    f.create_group(layout.EVENTS).attrs.update(layout.events_group_attrs(0, 0, 0, 0))
    f.create_group(layout.CLOUD).attrs.update(layout.range_attrs(0, 0))
    f.create_dataset(layout.ESTIMATES, shape=(0,), maxshape=(None,), dtype=TABLE_DTYPE, chunks=(1024,))


def page_aligned(pool) -> list:
    """The pool as the writer gets it: its traces and clouds in page-aligned memory, as they are in the writer's ring slots
    (else every direct write would first copy them to an aligned buffer)."""
    import dataclasses
    import mmap

    import numpy as np

    def aligned(a: np.ndarray) -> np.ndarray:
        out = np.frombuffer(mmap.mmap(-1, max(a.nbytes, 1)), dtype=a.dtype, count=a.size).reshape(a.shape)
        out[...] = a
        return out

    # Without clusters: the sink sends them to its writer only when it records them (not the default mix).
    return [dataclasses.replace(ev, traces=aligned(ev.traces), artifacts={
        **{k: v for k, v in ev.artifacts.items() if k != "clusters"}, "cloud": aligned(ev.artifacts["cloud"])})
        for ev in pool]


def record(directory: Path, pool, n: int, warm: int, commit_every: int) -> tuple[float, float]:
    """(user s, system s) of recording events ``warm`` .. ``n`` (after ``warm`` events to warm up)."""
    from conduit_stages.hdf5_sink import layout
    from conduit_stages.hdf5_sink.partfile import PartitionedFile
    from conduit_stages.hdf5_sink.recorder import Recorder, Target, _message_of

    target = Target(PartitionedFile(directory / "run.h5"), (layout.EVENTS, layout.CLOUD, layout.ESTIMATES))
    target.file.stage(init_master)
    target.file.publish()
    recorder = Recorder([target], frib=False, options={}, warn=lambda text: None)
    messages = [_message_of(ev) for ev in pool]  # as the main process sends them (the writer gets bytes)
    t0 = os.times()
    for i, ev in enumerate(events(pool, n)):
        if i == warm:
            t0 = os.times()
        recorder.add(ev, messages[i % len(messages)])
        if (i + 1) % commit_every == 0:
            recorder.commit()
    recorder.commit()
    t1 = os.times()
    recorder.finish(complete=True)
    return t1.user - t0.user, t1.system - t0.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--warm", type=int, default=200, help="events not timed (the first groups, caches)")
    parser.add_argument("--commit-every", type=int, default=400, help="events per commit (2 s at 200/s)")
    parser.add_argument("--traces", type=int, default=700)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    pool = page_aligned(make_pool(args.traces))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="h5rec-") as tmp:
        user, system = record(Path(tmp), pool, args.events, args.warm, args.commit_every)
    n = max(args.events - args.warm, 1)
    print(f"{n} events after {args.warm}: user {1e3 * user / n:.3f} + system {1e3 * system / n:.3f} ms/event; "
          f"load average {os.getloadavg()[0]:.1f}; {time.strftime('%H:%M:%S')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
