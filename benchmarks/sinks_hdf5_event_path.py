"""The hdf5 sink's whole per-event path in one process: the main process's hand-over and the writer's work.

    .venv/bin/python benchmarks/sinks_hdf5_event_path.py [--events 600] [--warm 200] [--side both|main]
        [--commit-every 400] [--dir /tmp]

What :mod:`sinks_hdf5_recorder_cost` leaves out: the main process's
``WriterProcess.send_event`` (the copy into a ring slot, the message) and
the writer's ``_Writer.add`` around the recorder (the message read back,
the ring's arrays, the event, the slot's release). Both run here in one
process on one ring (no writer process, no socket: the message's bytes are
handed over directly), on the default mix of ``sinks_hdf5_throughput.py``,
a commit every ``--commit-every`` events. ``--side main`` runs only the main
process's part. Prints CPU (user, system) per event after ``--warm`` events.

Instructions, which the load does not move: run it under ``valgrind
--tool=callgrind`` with ``--events 200`` and ``--events 600`` and divide the
difference of the totals by 400; the writer's part is ``both`` minus ``main``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sinks_hdf5_throughput import events, make_pool  # noqa: E402


def run(directory: Path, n: int, warm: int, commit_every: int, side: str) -> tuple[float, float]:
    import socket

    import numpy as np

    from conduit.event import Event
    from conduit_stages.hdf5_sink import layout, writer as W

    pool = make_pool(700)
    for ev in pool:  # the default mix: no cluster copies
        ev.artifacts.pop("clusters", None)
    keys = ("cloud", "estimates")

    class Main(W.WriterProcess):
        """The main process's side without a process: messages kept, not sent."""

        def __init__(self) -> None:
            self.sent, self.ring, self.message = 0, None, b""
            fd = self._make_ring()
            os.close(fd)
            self._header = np.ndarray((1,), np.uint64, buffer=self.ring)

        def _send(self, message: tuple) -> None:
            self.message = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)

    main = Main()
    writer = None
    if side == "both":
        here, there = socket.socketpair()
        spec = W.WriterSpec(targets=[(str(directory / "run.h5"), (layout.EVENTS, layout.CLOUD, layout.ESTIMATES))],
                            fsync=False, frib=False, options={}, flush_interval=1e9, max_batch_bytes=1e18)
        writer = W._Writer(W.Connection(there.detach()), main.ring, spec)
        writer.recorder.targets[0].file.stage(_init_master)
        writer.recorder.targets[0].file.publish()
    t0 = os.times()
    for i, ev in enumerate(events(pool, n)):
        if i == warm:
            t0 = os.times()
        main.send_event(ev, keys)
        if writer is not None:
            message = pickle.loads(main.message)
            writer.add(Event, message[1], message[2], main.message)
            if (i + 1) % commit_every == 0:
                writer.commit("committed")  # its report waits in the socket (a few hundred bytes)
        else:
            main._header[0] += 1  # the slot released, as the writer would
    if writer is not None:
        writer.commit("committed")
    t1 = os.times()
    if writer is not None:
        writer.finish_stores()
        writer.release_locks()
    return t1.user - t0.user, t1.system - t0.system


def _init_master(f) -> None:
    from sinks_hdf5_recorder_cost import init_master

    init_master(f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--commit-every", type=int, default=400, help="events per commit (2 s at 200/s)")
    parser.add_argument("--side", choices=("both", "main"), default="both")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="h5path-") as tmp:
        user, system = run(Path(tmp), args.events, args.warm, args.commit_every, args.side)
    n = max(args.events - args.warm, 1)
    print(f"{args.side}: {n} events after {args.warm}: user {1e3 * user / n:.3f} + system {1e3 * system / n:.3f} "
          f"ms/event; load average {os.getloadavg()[0]:.1f}; {time.strftime('%H:%M:%S')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
