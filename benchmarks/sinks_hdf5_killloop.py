"""Kill-loop experiment: SIGKILL an HDF5 writer at random moments and try to open what it left.

    .venv/bin/python benchmarks/sinks_hdf5_killloop.py [--kills 60] [--variants inplace,latest,conduit]

Each trial starts a writer subprocess that records synthetic events (300
traces x 517 int16 and a 1000-point cloud each), prints "0" once its file
exists and then, after every flush, how many events it has flushed. A random
0.05-2 s after the file exists the trial sends SIGKILL, then opens the file
in a fresh process with a plain ``h5py.File(path, "r")`` and reads back every
event flushed before the kill.

Variants:

* ``inplace``  one file written in place with the default format, flushed
  (``File.flush``) after every batch of 10 events: the straightforward design.
* ``inplace_many``  the same with batches of 200 small events (20 traces,
  100 points): many objects per flush, so more metadata is rewritten.
* ``latest``   like ``inplace`` with ``libver="latest"`` (superblock v3).
* ``conduit``  the ``hdf5`` sink itself (store + journal + atomically
  replaced master), flushing every 50 ms so that most kills land inside a
  commit; the process making the events (the sink's main process) is
  killed, and the check waits for the sink's writer process to finish the
  recording (``wait_for_writer``; how long it took is printed).
* ``conduit_writer``  the same, but the sink's writer process is killed: the
  main process stops on the error, makes the committed events into part
  files and closes.

Prints one table row per variant; the numbers go into docs/outputs.md.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_TRACES, N_POINTS = 300, 1000
ONLINE = (700, 2000)  # an online event's traces and cloud points (--finish-time)
WAITS: list[float] = []  # seconds the check waited for the killed run's writer (variant conduit)
SMALL = {"inplace_many": (20, 100)}


def synthetic_event(i: int, n_traces: int = N_TRACES, n_points: int = N_POINTS):
    from conduit.artifacts import ESTIMATE_DTYPE, Clusters
    from conduit.event import Event

    rng = np.random.default_rng(i)
    traces = rng.integers(0, 4000, size=(n_traces, 517)).astype(np.int16)
    cloud = rng.normal(size=(n_points, 8))
    cloud = cloud[np.argsort(cloud[:, 2])]
    labels = (np.arange(n_points) % 3).astype(np.int32)
    est = np.zeros(2, ESTIMATE_DTYPE)
    est["brho"] = [0.5, 1.0]
    return Event(id=i, traces=traces, timestamp=10 * i, run=1, analysed=True,
                 artifacts={"cloud": cloud, "estimates": est,
                            "clusters": Clusters(labels, np.arange(3, dtype=np.int32), np.zeros(3, np.int8))})


# -- writers (run in the killed subprocess) ------------------------------------------


def writer_inplace(path: str, libver: str | None, batch: int = 10, sizes=(N_TRACES, N_POINTS)) -> None:
    import h5py

    f = h5py.File(path, "w", libver=libver) if libver else h5py.File(path, "w")
    events, clouds = f.create_group("events"), f.create_group("cloud")
    table = f.create_dataset("estimates", shape=(0, 2), maxshape=(None, 2), chunks=(256, 2))
    print(0, flush=True)
    i = 0
    while True:
        for _ in range(batch):
            ev = synthetic_event(i, *sizes)
            d = events.create_dataset(f"event_{i}/get_traces", data=ev.traces)
            d.attrs["id"] = i
            c = clouds.create_dataset(f"cloud_{i}", data=ev.artifacts["cloud"])
            c.attrs["orig_event"] = float(i)
            n = table.shape[0]
            table.resize((n + 2, 2))
            table[n:] = i
            i += 1
        events.attrs["max_event"] = i - 1
        f.flush()
        print(i, flush=True)


def writer_conduit(path: str, sizes: tuple[int, int] = (N_TRACES, N_POINTS)) -> None:
    import logging

    from conduit.stage import StageContext
    from conduit_stages.hdf5_sink.params import Hdf5Params
    from conduit_stages.hdf5_sink.sink import Hdf5Sink

    class Report(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("flushed"):
                print(sink.flushed_events, flush=True)

    log = logging.getLogger("conduit.stage.hdf5")
    log.setLevel(logging.DEBUG)
    log.addHandler(Report())
    ctx = StageContext(run=1, base_dir=Path(path).parent)
    from conduit.stage import StopRun

    sink = Hdf5Sink(Hdf5Params(path=Path(path).name, flush_interval=0.05, histograms=False), ctx)
    sink.open()
    sink.begin()
    print(f"0 {sink.writer.pid}", flush=True)
    i = 0
    try:
        while True:
            sink.consume(synthetic_event(i, *sizes))
            i += 1
    except StopRun:  # its writer was killed (variant conduit_writer)
        sink.close()


# -- the loop ---------------------------------------------------------------------------


CHECK = """
import sys, h5py
path, flushed, traces = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with h5py.File(path, "r") as f:
    for i in range(flushed):
        t = f["events"][f"event_{i}"]["get_traces"][...]
        assert t.shape == (traces, 517), t.shape
        c = f["cloud"][f"cloud_{i}"][...]
    assert f["estimates"].shape[0] >= 2 * flushed
    print(len(f["events"]))
"""


def trial(variant: str, workdir: Path, k: int, rng: random.Random) -> tuple[bool, bool, int, str]:
    path = workdir / f"{variant}_{k}.h5"
    proc = subprocess.Popen([sys.executable, __file__, "--writer", variant, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline().split()  # "0 [writer pid]": the file exists
    assert first and first[0] == "0", (first, proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(rng.uniform(0.05, 2.0))
    if variant == "conduit_writer":
        os.kill(int(first[1]), signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    numbers = [int(x) for x in out.split()]
    flushed = numbers[-1] if numbers else 0
    if variant == "conduit":
        from conduit_stages.hdf5_sink.journal import wait_for_writer

        t0 = time.perf_counter()
        wait_for_writer(path, timeout=300)
        WAITS.append(time.perf_counter() - t0)
    traces = SMALL.get(variant, (N_TRACES, N_POINTS))[0]
    check = subprocess.run([sys.executable, "-c", CHECK, str(path), str(flushed), str(traces)],
                           capture_output=True, text=True)
    opened = "Unable to synchronously open file" not in check.stderr and "No such file" not in check.stderr
    reason = check.stderr.strip().splitlines()[-1] if check.returncode else ""
    return opened, check.returncode == 0, flushed, reason


def finish_time(events: int) -> int:
    """Kill the sink's main process after ``events`` flushed online-sized events; time its writer finishing."""
    import h5py

    from conduit_stages.hdf5_sink.journal import wait_for_writer

    with tempfile.TemporaryDirectory(prefix="killloop-", dir="/tmp") as tmp:
        path = Path(tmp) / "online.h5"
        proc = subprocess.Popen([sys.executable, __file__, "--writer", "conduit_online", str(path)],
                                stdout=subprocess.PIPE, text=True)
        flushed = 0
        for line in proc.stdout:
            flushed = int(line.split()[0])
            if flushed >= events:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t0 = time.perf_counter()
        wait_for_writer(path, timeout=600)
        waited = time.perf_counter() - t0
        with h5py.File(path, "r") as f:
            held = len(f["events"])
            for name in f["events"]:
                f["events"][name]["get_traces"].shape
        print(f"killed after {flushed} flushed events ({ONLINE[0]} traces + {ONLINE[1]}-point cloud each); "
              f"its writer finished the recording {waited:.2f} s later: {held} events, self-contained: "
              f"{not Path(str(path) + '.parts').exists()}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--variants", default="inplace,inplace_many,latest,conduit,conduit_writer")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--finish-time", type=int, default=0, metavar="EVENTS",
                        help="instead: kill the sink's main process once EVENTS online-sized events are flushed, "
                             "and time its writer finishing the recording")
    parser.add_argument("--writer", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        variant, path = args.writer
        if variant in ("conduit", "conduit_writer"):
            writer_conduit(path)
        elif variant == "conduit_online":
            writer_conduit(path, ONLINE)
        elif variant == "inplace_many":
            writer_inplace(path, None, batch=200, sizes=SMALL[variant])
        else:
            writer_inplace(path, "latest" if variant == "latest" else None)
        return 0
    if args.finish_time:
        return finish_time(args.finish_time)
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="killloop-") as tmp:
        for variant in args.variants.split(","):
            opened = complete = 0
            flushed_total = 0
            reasons: dict[str, int] = {}
            for k in range(args.kills):
                o, c, flushed, reason = trial(variant, Path(tmp), k, rng)
                opened += o
                complete += c
                flushed_total += flushed
                if reason:
                    reasons[reason[:90]] = reasons.get(reason[:90], 0) + 1
                for leftover in Path(tmp).glob(f"{variant}_{k}.h5*"):
                    if leftover.is_dir():
                        import shutil

                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink()
            rows.append((variant, args.kills, opened, complete, flushed_total / args.kills, reasons))
    print(f"{'variant':<10} {'kills':>6} {'opened':>7} {'all flushed events read':>24} {'mean flushed':>13}")
    for variant, kills, opened, complete, mean_flushed, reasons in rows:
        print(f"{variant:<10} {kills:>6} {opened:>7} {complete:>24} {mean_flushed:>13.1f}")
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            print(f"           {count:>3} x {reason}")
    if WAITS:
        waits = sorted(WAITS)
        print(f"conduit: waited for the killed run's writer to finish its recording: median "
              f"{waits[len(waits) // 2]:.2f} s, longest {waits[-1]:.2f} s ({len(waits)} kills)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
