"""Throughput of the hdf5 sink, its CPU cost per process, and what its crash safety costs.

    .venv/bin/python benchmarks/sinks_hdf5_throughput.py [--events 1000] [--traces 700] [--dir /tmp]
        [--rate 200] [--disk-mb 2000] [--drop-caches] [--only-sink] [--write-thread] [--sched]

1. Recording: the same events written by plain file writes of the same bytes
   (the disk), by a plain in-place h5py writer (one file, ``flush()`` every
   2 s: not crash-safe) and by the ``hdf5`` sink (part files + master, flush
   every 2 s; its writer process makes the HDF5 objects), with and without
   the final consolidation and the cluster copies. Events: ``--traces`` rows
   of 517 int16, a 2000-point cloud, 3 clusters and 3 estimate rows (a pool
   of 16 distinct events, fresh ids). CPU per event is given per process:
   the main process (``time.process_time``) and the sink's writer process
   (``/proc/PID/stat`` utime + stime, read before it exits).
   ``--rate`` paces the events as a live run does (events/s; 0: as fast as
   the writer takes them); the writer's CPU is split into user and system
   time (the kernel's part: page cache, block allocation). ``--disk-mb``
   first measures the disk with ``dd bs=1M conv=fdatasync`` (MB/s, "disk
   speed"), so the recording's MB/s can be read against it.
   ``--drop-caches`` (root) empties the page cache before each row, the
   state after which a buffered writer's system time was worst. ``--sched``
   prints, per busy thread of the main and the writer process, its time per
   event on a CPU, waiting for one (runnable) and asleep (the disk, the
   socket, ring slots): on a shared machine the writer, in a session and so
   an autogroup of its own, is often limited by the CPU it is given.
2. Commit cost against the size of the master: one flush of 100 small events
   into a master that already links K events (the master is copied on every
   flush, so this grows with K).

Prints two tables; the numbers go into docs/performance.md ("HDF5 recording cost").
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_pool(n_traces: int, size: int = 16):
    from conduit.artifacts import ESTIMATE_DTYPE, Clusters
    from conduit.event import Event

    pool = []
    for k in range(size):
        rng = np.random.default_rng(k)
        traces = rng.integers(0, 4000, size=(n_traces, 517)).astype(np.int16)
        cloud = rng.normal(size=(2000, 8)) * 100
        cloud = cloud[np.argsort(cloud[:, 2])]
        labels = (np.arange(2000) % 4 - 1).astype(np.int32)
        est = np.zeros(3, ESTIMATE_DTYPE)
        est["brho"] = [0.3, 0.6, 0.9]
        pool.append(Event(id=k, traces=traces, timestamp=k, run=1, analysed=True, artifacts={
            "cloud": cloud, "estimates": est,
            "clusters": Clusters(labels, np.arange(3, dtype=np.int32), np.zeros(3, np.int8))}))
    return pool


def events(pool, n):
    import dataclasses

    for i in range(n):
        yield dataclasses.replace(pool[i % len(pool)], id=i, timestamp=10 * i)


def plain_writer(path: Path, pool, n: int, flush_interval: float) -> tuple[float, float]:
    import h5py

    from conduit_stages.hdf5_sink import layout

    t0 = time.perf_counter()
    last = t0
    with h5py.File(path, "w") as f:
        ev_g, cl_g, cu_g = f.create_group("events"), f.create_group("cloud"), f.create_group("cluster")
        for ev in events(pool, n):
            layout.write_traces(ev_g, ev, layout.event_name(ev.id))
            layout.write_cloud(cl_g, ev, layout.cloud_name(ev.id))
            layout.write_clusters(cu_g, ev, layout.event_name(ev.id))
            if time.perf_counter() - last >= flush_interval:
                f.flush()
                last = time.perf_counter()
        t1 = time.perf_counter()
    return t1 - t0, time.perf_counter() - t1


def raw_writer(path: Path, pool, n: int, rate: float = 0.0) -> tuple[float, float]:
    """The disk's own speed for the same bytes: plain file writes of each event's arrays, then fsync."""
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for i, ev in enumerate(events(pool, n)):
            if rate and (ahead := t0 + i / rate - time.perf_counter()) > 0:
                time.sleep(ahead)
            f.write(ev.traces.tobytes())
            f.write(ev.artifacts["cloud"].tobytes())
            f.write(ev.artifacts["cloud"][:, :5].tobytes())
        t1 = time.perf_counter()
        f.flush()
        os.fsync(f.fileno())
    return t1 - t0, time.perf_counter() - t1


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (``/proc/PID/stat``)."""
    return sum(process_user_sys(pid))


def process_user_sys(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by process ``pid`` (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def disk_speed(directory: Path, mb: int) -> float:
    """MB/s of ``dd if=/dev/zero bs=1M count=MB conv=fdatasync`` into ``directory`` (the file is removed)."""
    import subprocess

    target = directory / "dd.bin"
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mb}", "conv=fdatasync"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    target.unlink()
    return mb * (1 << 20) / 1e6 / seconds


def drop_caches(settle: float = 5.0) -> None:
    """Write back and drop the page cache (root only), then wait ``settle`` s.

    On a virtual machine with free page reporting the freed memory goes back
    to the host within seconds; a page the writer then allocates costs up to
    ~50 µs of system time to touch (docs/performance.md).
    """
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(settle)


def thread_times(pid: int) -> dict[tuple[int, str], tuple[float, float]]:
    """Per thread of ``pid``: (s on a CPU, s runnable but waiting for one) so far (``/proc/PID/task/*/schedstat``)."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
            run, wait, _ = map(int, Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split())
        except (OSError, ValueError):
            continue
        out[(int(task), name)] = (run / 1e9, wait / 1e9)
    return out


def print_sched(label: str, before: dict, after: dict, wall: float, n: int) -> None:
    """Where each busy thread's wall time per event went: on a CPU, waiting for one, the rest (asleep: disk, socket)."""
    for key, (run1, wait1) in after.items():
        run0, wait0 = before.get(key, (0.0, 0.0))
        run, wait = run1 - run0, wait1 - wait0
        if run + wait < 0.01 * wall:
            continue
        print(f"  {label} thread {key[0]} ({key[1]}): on a CPU {1e3 * run / n:.3f}, waiting for a CPU "
              f"{1e3 * wait / n:.3f}, asleep {1e3 * max(wall - run - wait, 0.0) / n:.3f} ms/event")


def conduit_sink(directory: Path, pool, n: int, flush_interval: float, consolidate: bool,
                 clusters: bool = True, rate: float = 0.0, split: dict | None = None,
                 write_thread: bool = False, sched: bool = False) -> tuple[float, float, float, float]:
    """(run s, close s, writer process CPU s, main process CPU s) of the hdf5 sink recording ``n`` events.

    The CPU times cover the events only (consume + the final flush), not opening and closing the sink.
    ``rate``: events per second (0: as fast as the sink takes them). ``split`` receives the writer's
    user and system seconds.
    """
    from conduit.stage import StageContext
    from conduit_stages.hdf5_sink.params import Hdf5Params
    from conduit_stages.hdf5_sink.sink import Hdf5Sink

    sink = Hdf5Sink(Hdf5Params(path="run.h5", flush_interval=flush_interval, consolidate=consolidate,
                               histograms=False, clusters=clusters, write_thread=write_thread),
                    StageContext(run=1, base_dir=directory))
    sink.open()
    sink.begin()
    writer = getattr(sink, "writer", None)
    user0, sys0 = process_user_sys(writer.pid)
    if sched:
        main_before, writer_before = thread_times(os.getpid()), thread_times(writer.pid)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i, ev in enumerate(events(pool, n)):
        if rate and (ahead := t0 + i / rate - time.perf_counter()) > 0:
            time.sleep(ahead)
        sink.consume(ev)
    sink.flush()
    t1 = time.perf_counter()
    main_cpu = time.process_time() - c0
    user1, sys1 = process_user_sys(writer.pid)
    if sched:
        print_sched("main process", main_before, thread_times(os.getpid()), t1 - t0, n)
        print_sched("writer process", writer_before, thread_times(writer.pid), t1 - t0, n)
    writer_cpu = user1 - user0 + sys1 - sys0
    if split is not None:
        split.update(user=user1 - user0, system=sys1 - sys0)
    sink.close()
    return t1 - t0, time.perf_counter() - t1, writer_cpu, main_cpu


def commit_cost(directory: Path, linked: int, batch: int = 100) -> float:
    """Seconds for one flush of ``batch`` tiny events into a master already linking ``linked`` events."""
    import h5py

    from conduit.event import Event
    from conduit_stages.hdf5_sink.partfile import PartitionedFile

    master = PartitionedFile(directory / f"m{linked}.h5")
    master.create(lambda f: [f.create_group(g) for g in ("events", "cloud", "cluster")])
    # Grow the master with links in one go (as `linked` earlier flushes would have).
    with h5py.File(master.path, "r+") as f:
        for g in ("events", "cloud", "cluster"):
            grp = f[g]
            for i in range(linked):
                grp[f"{g}_{i}"] = h5py.ExternalLink("x.h5.parts/part_000001.h5", f"/{g}/{g}_{i}")
    tiny = [Event(id=linked + i, traces=np.zeros((4, 517), np.int16)) for i in range(batch)]

    def write_part(f):
        names = {}
        for g in ("events", "cloud", "cluster"):
            grp = f.create_group(g)
            names[g] = []
            for ev in tiny:
                grp.create_dataset(f"{g}_{ev.id}", data=ev.traces)
                names[g].append(f"{g}_{ev.id}")
        return names

    t0 = time.perf_counter()
    master.commit(write_part, lambda m: None)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--traces", type=int, default=700)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s offered (0: as fast as taken)")
    parser.add_argument("--disk-mb", type=int, default=0, help="measure the disk first with dd of this many MB")
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before each row (root)")
    parser.add_argument("--write-thread", action="store_true", help="the sink's write_thread = true")
    parser.add_argument("--sched", action="store_true",
                        help="per thread of both processes: time on a CPU, waiting for one, asleep (schedstat)")
    parser.add_argument("--only-sink", action="store_true",
                        help="only the hdf5 sink as configured by default (no cluster copies, consolidated)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pool = make_pool(args.traces)
    mb_per_event = (pool[0].traces.nbytes + 2 * pool[0].artifacts["cloud"].nbytes) / 1e6
    total_mb = mb_per_event * args.events
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="h5bench-") as tmp:
        tmp = Path(tmp)
        rows = []
        disk = disk_speed(tmp, args.disk_mb) if args.disk_mb else None

        def timed(label, fn, *fn_args, sink: bool = False, **fn_kwargs):
            if args.drop_caches:
                drop_caches()
            c0 = time.process_time()
            t0 = os.times()
            split: dict = {}
            t_run, t_close, *cpu = fn(*fn_args, **fn_kwargs, **({"split": split} if sink else {}))
            t1 = os.times()
            total = time.process_time() - c0
            if cpu:  # the sink: its writer process; the main process for the events only
                user, system, main = split["user"], split["system"], cpu[1]
            else:  # written in this process
                user, system, main = t1.user - t0.user, t1.system - t0.system, total
            n = args.events
            rows.append((label, t_run, t_close, main / n, user / n, system / n, total / n))

        if not args.only_sink:
            timed("plain file writes + fsync (the disk)", raw_writer, tmp / "raw.bin", pool, args.events,
                  rate=args.rate)
            (tmp / "raw.bin").unlink()
            timed("in-place h5py, flush 2 s (not crash-safe)", plain_writer, tmp / "plain.h5", pool, args.events,
                  2.0)
            (tmp / "plain.h5").unlink()
        variants = ((True, False),) if args.only_sink else ((False, False), (True, False), (False, True),
                                                             (True, True))
        for consolidate, clusters in variants:
            d = tmp / f"sink{int(consolidate)}{int(clusters)}"
            d.mkdir()
            label = "hdf5 sink, flush 2 s, " + ("consolidated at close" if consolidate else "file + parts")
            label += ", cluster copies" if clusters else ", no cluster copies (default mix)"
            timed(label, conduit_sink, d, pool, args.events, 2.0, consolidate, clusters, rate=args.rate,
                  sink=True, write_thread=args.write_thread, sched=args.sched)
            shutil.rmtree(d)
        rate = f"offered at {args.rate:g} events/s" if args.rate else "as fast as taken"
        print(f"{args.events} events x {mb_per_event:.2f} MB ({args.traces} traces + cloud + clusters) "
              f"= {total_mb:.0f} MB, {rate}; load average {os.getloadavg()[0]:.1f}"
              + (f"; disk (dd bs=1M conv=fdatasync) {disk:.0f} MB/s" if disk else ""))
        print("| writer | run s | events/s | MB/s | close s | main CPU ms/event | writer CPU user ms/event | "
              "writer CPU system ms/event | main CPU with open + close ms/event |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, t_run, t_close, cpu, user, system, with_close in rows:
            print(f"| {label} | {t_run:.2f} | {args.events / t_run:.1f} | {total_mb / t_run:.1f} | {t_close:.2f} | "
                  f"{1e3 * cpu:.3f} | {1e3 * user:.3f} | {1e3 * system:.3f} | {1e3 * with_close:.3f} |")
        if args.only_sink:
            return 0
        print()
        print(f"{'events already in the master':>30} {'one flush of 100 events (ms)':>30}")
        for linked in (0, 10_000, 50_000, 100_000):
            d = tmp / f"c{linked}"
            d.mkdir()
            print(f"{linked:>30} {commit_cost(d, linked) * 1e3:>30.1f}")
            shutil.rmtree(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
