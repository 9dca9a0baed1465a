"""End-to-end figures of the whole conduit, as a user runs it.

    .venv/bin/python benchmarks/end_to_end.py online   [--rates 200 400] [--seconds 60] [--workers 2] [--timeline]
    .venv/bin/python benchmarks/end_to_end.py memory   [--rate 200] [--minutes 10]
    .venv/bin/python benchmarks/end_to_end.py scaling  [--events 300]
    .venv/bin/python benchmarks/end_to_end.py startup

online   eleven simulated DataExporters (`conduit simulate serve`, a separate,
         niced process serving a pool of distinct events at each --rates value)
         -> `conduit run` with the exporter source, pointcloud, cluster.hdbscan,
         estimate, histogram, a lossless hdf5 recording and a .rrd recording.
         Reports per rate: served, received, analysed, skipped, dropped
         (queue_full_events), recorded and lost (served - recorded), every
         loss reason of the run summary, the user and system CPU time per
         served event of the conduit's main process, of its receive process
         (when it has one), of its analysis workers (every descendant process,
         however started) and of the simulated DAQ, and the load average of
         the machine (other work shares the CPUs). --summary also prints each
         run's summary (per-stage times). For the first 5 s of serving: CPU
         ms and minor page faults per second of each process, and the events
         skipped in each second (event id // rate, from the recording);
         --timeline adds the engine's timeline of the first events
         (`[engine] timeline`: dispatch to answer, the main process's CPU and
         faults per event, the workers' first jobs against later ones, the
         garbage collections per generation). --trace-seconds also traces every
         second of the run (benchmarks/trace_seconds.py) and prints it.
memory   the same online run for --minutes: the resident size (RSS) of the
         conduit's main process and of its workers, sampled every 10 s.
scaling  the same analysis replaying a merged HDF5 file with 0, 1 and 2 worker
         processes (policy wait: every event analysed): events/s and speed-up.
startup  `conduit --help`, and `conduit run` to the first analysed event
         (numba cache filled), in fresh processes.

Every figure comes from wall clocks on this machine; nothing here is a test.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import ANALYSIS_STAGES, children, cpu_times, machine, rss_kib

BIN = Path(sys.executable).parent
CONDUIT = str(BIN / "conduit")

ANALYSIS = ANALYSIS_STAGES


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else -1


def free_base_port(count: int = 11) -> int:
    """A base port with ``count`` consecutive free TCP ports on 127.0.0.1 (other jobs share the machine)."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise SystemExit("no free range of ports found")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class _Sampler:
    """CPU seconds (user, system) and RSS of the conduit (main process, every descendant: the analysis workers,
    a receiver process if any, multiprocessing's resource tracker) and of the simulated DAQ.

    A process that ends keeps its last sample, so workers replaced during the run still count.
    """

    def __init__(self, run_pid: int, server_pid: int):
        self.run_pid, self.server_pid = run_pid, server_pid
        self.main = self.server = (0.0, 0.0)
        #: descendant pid -> (kind, (user s, system s)); kind from its command line.
        self.descendants: dict[int, tuple[str, tuple[float, float]]] = {}
        self.rss: list[tuple[float, float, float]] = []  # (seconds, main MiB, workers MiB)
        self.t0 = time.monotonic()
        self._base: tuple = ((0.0, 0.0), (0.0, 0.0), {})
        self.started_at = self.t0
        #: (seconds since start, main CPU s, {kind: CPU s}, DAQ CPU s, {process kind: minor faults}), sampled in
        #: the first seconds of serving.
        self.timeline: list[tuple[float, float, dict[str, float], float, dict[str, int]]] = []

    def sample(self) -> None:
        server = cpu_times(self.server_pid)
        if server is not None:
            self.server = server
        main = cpu_times(self.run_pid)
        if main is None:
            return
        self.main = main
        workers_rss = 0.0
        for pid in children(self.run_pid):
            cpu = cpu_times(pid)
            if cpu is None:
                continue
            known = self.descendants.get(pid)
            kind = known[0] if known else _kind(_cmdline(pid))
            self.descendants[pid] = (kind, cpu)
            workers_rss += rss_kib(pid) / 1024
        self.rss.append((time.monotonic() - self.t0, rss_kib(self.run_pid) / 1024, workers_rss))

    def start(self) -> None:
        """From now on: CPU times are counted from the last sample (start-up left out)."""
        self._base = (self.main, self.server, {pid: cpu for pid, (_, cpu) in self.descendants.items()})
        self.started_at = time.monotonic()

    def cpu(self, kind: str) -> tuple[float, float]:
        """(user, system) CPU seconds of every descendant of one kind since :meth:`start`."""
        base = self._base[2]
        times = [_minus(cpu, base.get(pid, (0.0, 0.0))) for pid, (k, cpu) in self.descendants.items() if k == kind]
        return sum(t[0] for t in times), sum(t[1] for t in times)

    def cpu_main(self) -> tuple[float, float]:
        return _minus(self.main, self._base[0])

    def cpu_server(self) -> tuple[float, float]:
        return _minus(self.server, self._base[1])

    def timeline_point(self) -> None:
        """Note the CPU seconds used so far (user + system) by each kind of process, with the time since
        :meth:`start` (the first seconds of serving: :func:`first_seconds`)."""
        kinds = {kind: sum(self.cpu(kind)) for kind in ("hdf5 writer", "worker")}
        faults = {"main": _minor_faults(self.run_pid), "DAQ": _minor_faults(self.server_pid)}
        for kind in ("hdf5 writer", "worker"):
            faults[kind] = sum(_minor_faults(pid) for pid, (k, _) in self.descendants.items() if k == kind)
        self.timeline.append((time.monotonic() - self.started_at, sum(self.cpu_main()), kinds,
                              sum(self.cpu_server()), faults))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.descendants.values() if k == kind)


def _minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[7])
    except (OSError, IndexError, ValueError):
        return 0


def _minus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] - b[0], a[1] - b[1]


def _established(base_port: int, count: int) -> int:
    """TCP connections in state ESTABLISHED whose local port is one of ``base_port .. base_port + count - 1``
    (the simulated DataExporters' side), from /proc/net/tcp and tcp6."""
    ports = {f"{p:04X}" for p in range(base_port, base_port + count)}
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "01" and fields[1].rsplit(":", 1)[1] in ports:
                        n += 1
        except OSError:
            continue
    return n


def _kind(cmdline: str) -> str:
    """What a descendant of `conduit run` is: "tracker" (multiprocessing's resource tracker), "hdf5 writer"
    (the hdf5 sink's writer process), "receiver" (a receive process) or "worker" (an analysis worker)."""
    if "resource_tracker" in cmdline:
        return "tracker"
    if "hdf5_sink.writer" in cmdline:
        return "hdf5 writer"
    if "conduit.get.receiver" in cmdline or "receive-child" in cmdline:
        return "receiver"
    return "worker"


def _losses(text: str) -> dict[str, int]:
    """The summary's "lost, by reason" rows (``queue_full_events`` ...); empty when nothing was lost."""
    out: dict[str, int] = {}
    block = re.search(r"lost, by reason[^\n]*\n((?:  \S+\s+\d+\n?)+)", text)
    if block:
        for name, value in re.findall(r"^  (\S+)\s+(\d+)$", block.group(1), re.M):
            out[name] = int(value)
    return out


def _online_once(tmp: Path, pipeline: Path, events: int, rate: float, pool: int, port: int,
                 sample_every: float = 2.0, settings: tuple[str, ...] = (), max_seconds: float | None = None,
                 count_from: str = "serving", trace_seconds: bool = False) -> dict:
    """Serve ``events`` at ``rate`` (niced server: the DAQ is another machine in reality), receive, measure.

    ``max_seconds``: stop the DAQ (SIGINT) after that long serving, if it has not finished (the memory run
    lasts its minutes even when the shared machine lets the DAQ serve slower than ``rate``); ``served`` is
    then -1 (not known).
    """
    import os

    load_before = os.getloadavg()[0]
    server = subprocess.Popen(
        [CONDUIT, "simulate", "serve", "--events", str(events), "--pool", str(pool), "--rate", str(rate),
         "--base-port", str(port), "--truth", str(tmp / "truth.h5"), "--connect-timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(10))
    time.sleep(1.0)
    sets = [arg for setting in settings for arg in ("--set", setting)]
    run = subprocess.Popen([CONDUIT, "run", str(pipeline), "-q", *sets], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=tmp)
    sampler = _Sampler(run.pid, server.pid)
    # Start-up (imports, numba cache, workers warming, the DAQ making its pool of events) is not per-event
    # work: CPU and seconds count from the moment the DAQ starts serving (its pool made, every DataExporter
    # with its client); count_from="connected": from the clients' connection (a DAQ that does not say when).
    daq_out = bytearray()
    while server.poll() is None and run.poll() is None and not (
            _read_available(server.stdout, daq_out) if count_from == "serving" else _established(port, 11) >= 11):
        time.sleep(0.1)
    sampler.sample()
    sampler.start()
    tracer = _start_trace(tmp, run.pid, server.pid, port, rate) if trace_seconds else None
    started = time.monotonic()
    sampler.timeline_point()
    cut = False
    while server.poll() is None:
        first = time.monotonic() - started < FIRST_SECONDS
        time.sleep(FIRST_SAMPLE if first else sample_every)
        sampler.sample()
        if first:
            sampler.timeline_point()
        if max_seconds is not None and time.monotonic() - started > max_seconds and server.poll() is None:
            server.send_signal(signal.SIGINT)
            cut = True
            break
    served_seconds = time.monotonic() - started
    try:
        daq_out += server.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        server.kill()
        daq_out += server.communicate()[0]
    time.sleep(3.0)  # the last frames reach the builder; a live source then waits for more: stop it as on shift
    sampler.sample()
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=600)
    if run.returncode != 0:
        raise SystemExit(f"conduit run failed: {err[-2000:]}")
    if tracer is not None:
        _show_trace(tracer, tmp, rate)
    import h5py

    recorded = -1  # no recording
    if (tmp / "run_0001.h5").exists():
        with h5py.File(tmp / "run_0001.h5", "r") as f:
            if "events" in f:  # absent with --set hdf5.traces=false (the memory run: traces would fill the disk)
                recorded = len(f["events"])
    losses = _losses(out)
    received = _number(r"events received\s+(\d+)", out)
    per = 1e3 / (received if cut else events)
    return {
        "rate": rate,
        "served": -1 if cut else events,
        "seconds": served_seconds,
        "received": received,
        "analysed": _number(r"events analysed\s+(\d+)", out),
        "skipped": _number(r"events skipped \(analysis behind\)\s+(\d+)", out),
        "dropped": losses.get("queue_full_events", 0),
        "losses": losses,
        "incomplete": _number(r"\n  incomplete\s+(\d+)", out),
        "recorded": recorded,
        "cpu_ms": {"main": tuple(per * t for t in sampler.cpu_main()),
                   "hdf5 writer": tuple(per * t for t in sampler.cpu("hdf5 writer")),
                   "receiver": tuple(per * t for t in sampler.cpu("receiver")),
                   "workers": tuple(per * t for t in sampler.cpu("worker")),
                   "DAQ": tuple(per * t for t in sampler.cpu_server())},
        "workers_seen": sampler.count("worker"),
        "load": (load_before, os.getloadavg()[0]),
        "rss": sampler.rss,
        "summary": out,
        "first_seconds": first_seconds(sampler.timeline),
        "skipped_per_second": skipped_per_second(tmp / "run_0001.h5", rate),
        "timeline": timeline_summary(tmp / "timeline.json", rate) if (tmp / "timeline.json").exists() else [],
        "daq": [line for line in daq_out.decode(errors="replace").splitlines() if line.startswith(("served", "pacing"))],
    }


#: Seconds of serving sampled finely (CPU per process kind per second: what the first second costs).
FIRST_SECONDS = 5
#: Their sampling interval (s).
FIRST_SAMPLE = 0.25


def first_seconds(timeline: list) -> list[dict[str, float]]:
    """CPU ms and minor page faults in each whole second of serving, per kind of process, from the samples of
    :meth:`_Sampler.timeline_point` (the sample nearest each second's end)."""
    out = []
    for second in range(FIRST_SECONDS):
        if not timeline or timeline[-1][0] < second + 1 - FIRST_SAMPLE:
            break
        a = min(timeline, key=lambda p: abs(p[0] - second))  # the samples nearest the second's ends
        b = min(timeline, key=lambda p: abs(p[0] - second - 1))
        if b[0] <= a[0]:
            break
        row = {"main": b[1] - a[1], "DAQ": b[3] - a[3], **{k: b[2][k] - a[2][k] for k in b[2]}}
        span = b[0] - a[0]
        out.append({**{f"{k} CPU ms/s": 1e3 * v / span for k, v in row.items()},
                    **{f"{k} faults/s": (b[4][k] - a[4][k]) / span for k in b[4]}})
    return out


def timeline_summary(path: Path, rate: float) -> list[str]:
    """Lines summing up a run's ``[engine] timeline`` file: per second of serving (event id // rate) the events
    skipped, the median and largest time from dispatch to answer, the main process's CPU ms and page faults per
    event; the workers' first jobs against their later ones; the garbage collections per generation."""
    import json
    import statistics

    data = json.loads(path.read_text())
    steps: dict[str, dict[int, list]] = {}
    for event, step, when, cpu, faults, extra in data["steps"]:
        steps.setdefault(step, {})[event] = [when, cpu, faults, extra]
    received, sent, answered = steps.get("received", {}), steps.get("sent", {}), steps.get("answered", {})
    lines = ["| second | skipped | dispatch to answer, median / max ms | main CPU ms per event | main faults per event |",
             "|---|---|---|---|---|"]
    per = max(int(rate), 1)
    for second in range(FIRST_SECONDS):
        ids = sorted(i for i in received if i // per == second)
        if len(ids) < 2:
            break
        waits = sorted(1e3 * (answered[i][0] - sent[i][0]) for i in ids if i in answered and i in sent)
        first, last = received[ids[0]], received[ids[-1]]
        lines.append(f"| {second} | {sum(i in steps.get('skipped', {}) for i in ids)} | "
                     f"{statistics.median(waits) if waits else 0:.1f} / {max(waits, default=0):.1f} | "
                     f"{1e3 * (last[1] - first[1]) / (len(ids) - 1):.2f} | {(last[2] - first[2]) / (len(ids) - 1):.0f} |")
    jobs = [answered[i][3] for i in sorted(answered, key=lambda i: answered[i][0]) if answered[i][3]]
    if jobs:
        def cost(part):
            return (f"CPU {1e3 * statistics.median(j[1] for j in part):.2f} ms, wall "
                    f"{1e3 * statistics.median(j[0] for j in part):.2f} ms, faults {statistics.median(j[2] for j in part):.0f}")
        lines.append(f"worker jobs, medians: first 20 {cost(jobs[:20])}; after the first 200 {cost(jobs[200:] or jobs)}")
    by_generation: dict[int, list[float]] = {}
    for _, generation, seconds, _ in data["gc"]:
        by_generation.setdefault(generation, []).append(seconds)
    lines.append("garbage collections (main process, whole run): " + (", ".join(
        f"generation {g}: {len(v)}, {1e3 * sum(v):.1f} ms of CPU in all, longest {1e3 * max(v):.1f} ms"
        for g, v in sorted(by_generation.items())) or "none"))
    lines.append(f"trace slots at the end: {data.get('trace_slots')}")
    return lines


def skipped_per_second(recording: Path, rate: float, seconds: int = FIRST_SECONDS) -> list[int] | None:
    """Events recorded without a point cloud (skipped by analysis) in each of the first ``seconds`` of serving
    (event id // rate: the DAQ serves them in id order on its grid), or None without a recording."""
    if rate <= 0 or not recording.exists():
        return None
    import h5py

    with h5py.File(recording, "r") as f:
        if "events" not in f:
            return None
        clouds = set(f["cloud"]) if "cloud" in f else set()
        counts = [0] * seconds
        for name in f["events"]:
            second = int(name.removeprefix("event_")) // int(rate)
            if second < seconds and name.replace("event_", "cloud_") not in clouds:
                counts[second] += 1
    return counts


def _start_trace(tmp: Path, run_pid: int, server_pid: int, port: int, rate: float) -> subprocess.Popen:
    """benchmarks/trace_seconds.py sampling /proc once a second into ``tmp``/trace_seconds.jsonl until the run ends."""
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "trace_seconds.py"), "--run", str(run_pid),
                             "--daq", str(server_pid), "--port", str(port), "--rate", str(rate),
                             "--out", str(tmp / "trace_seconds.jsonl")])


def _show_trace(tracer: subprocess.Popen, tmp: Path, rate: float) -> None:
    """Print the per-second trace, with the skips per second read from the recording when there is one."""
    tracer.wait(timeout=30)
    recording = tmp / "run_0001.h5"
    subprocess.run([sys.executable, str(Path(__file__).parent / "trace_seconds.py"), "--show",
                    str(tmp / "trace_seconds.jsonl"), "--rate", str(rate),
                    *(["--recording", str(recording)] if recording.exists() else [])], check=False)


#: What `conduit simulate serve` prints when it starts serving (its pool made, every client connected).
DAQ_SERVING = b"every port has its"


def _read_available(pipe, out: bytearray) -> bool:
    """Append what ``pipe`` holds now to ``out`` (never waits); True once the DAQ said it is serving."""
    import os
    import select

    while select.select([pipe], [], [], 0)[0]:
        chunk = os.read(pipe.fileno(), 65536)
        if not chunk:
            break
        out += chunk
    return DAQ_SERVING in out


def _online_pipeline(tmp: Path, port: int, workers: int, record: bool = True) -> Path:
    """The online pipeline: analysis, then (``record``) the hdf5 and rerun recordings."""
    pipeline = tmp / "online.toml"
    pipeline.write_text(textwrap.dedent(f"""
        [source]
        kind = "exporter"
        hosts = "127.0.0.1:{port}-{port + 10}"
        run = 1

        [engine]
        workers = {workers}
        policy = "skip"
        """) + ANALYSIS + (textwrap.dedent("""
        [[stage]]
        use = "hdf5"
        path = "run_{run:04d}.h5"
        clusters = false
        lossless = true

        [[stage]]
        use = "rerun"
        mode = "save"
        path = "run_{run:04d}.rrd"
        """) if record else ""))
    return pipeline


@contextlib.contextmanager
def _run_dir(keep: str | None, rate: float):
    """Where one online run writes: a temporary directory, or ``KEEP/rate_R`` kept for a look afterwards."""
    if keep is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)
    else:
        where = Path(keep) / f"rate_{rate:g}"
        where.mkdir(parents=True, exist_ok=False)
        yield where


def online(args) -> None:
    rows = []
    for rate in args.rates:
        with _run_dir(args.keep, rate) as tmp:
            port = args.base_port or free_base_port()
            events = int(rate * args.seconds) if rate > 0 else args.events
            pipeline = _online_pipeline(tmp, port, args.workers, record=not args.no_record)
            settings = (*args.set, f"engine.timeline={tmp / 'timeline.json'}") if args.timeline else tuple(args.set)
            rows.append(_online_once(tmp, pipeline, events, rate, args.pool, port, settings=settings,
                                     count_from=args.count_from, trace_seconds=args.trace_seconds))
    print(f"machine: {machine()}")
    print("simulated DAQ (11 DataExporters, niced) and conduit on the same machine; event mix: simulator default "
          "(~700 signal + 640 FPN channels, ~2.8 MB of frames per event)")
    head = ("rate/s", "served", "received", "complete", "analysed", "skipped", "dropped", "recorded", "lost",
            "s", "load")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        lost = r["served"] - r["recorded"] if r["recorded"] >= 0 else "-"
        values = (r["rate"] or "max", r["served"], r["received"], r["received"] - r["incomplete"], r["analysed"],
                  r["skipped"], r["dropped"], r["recorded"], lost, f"{r['seconds']:.0f}",
                  f"{r['load'][0]:.1f}-{r['load'][1]:.1f}")
        print("| " + " | ".join(str(v) for v in values) + " |")
    print(f"(dropped: queue_full_events; lost: served - recorded; s: seconds the DAQ took to serve, from "
          f"{'its first frame' if args.count_from == 'serving' else 'its clients connection'}; load: load average "
          f"before-after)")
    for r in rows:
        print(f"simulated DAQ at {r['rate']:g}/s: " + "; ".join(r["daq"]))
    print()
    print("| rate/s | losses by reason (summary) | " + " | ".join(
        f"{who} ms user+sys" for who in rows[0]["cpu_ms"]) + " | workers seen |")
    print("|---|---|" + "---|" * len(rows[0]["cpu_ms"]) + "---|")
    for r in rows:
        losses = ", ".join(f"{k} {v}" for k, v in r["losses"].items()) or "none"
        cpu = [f"{u:.2f}+{s:.2f}" for u, s in r["cpu_ms"].values()]
        print(f"| {r['rate'] or 'max'} | {losses} | " + " | ".join(cpu) + f" | {r['workers_seen']} |")
    print()
    for r in rows:
        print(f"at {r['rate']:g}/s, skipped per second of serving (first {FIRST_SECONDS} s): "
              f"{r['skipped_per_second'] if r['skipped_per_second'] is not None else 'no recording'}")
        print("| second | " + " | ".join(k for k in (r["first_seconds"] or [{}])[0]) + " |")
        print("|---|" + "---|" * len((r["first_seconds"] or [{}])[0]))
        for second, row in enumerate(r["first_seconds"]):
            print(f"| {second} | " + " | ".join(f"{v:.0f}" for v in row.values()) + " |")
        if r["timeline"]:
            print(f"\nat {r['rate']:g}/s, the engine's timeline of the first events:")
            print("\n".join(r["timeline"]))
    if args.summary:
        for r in rows:
            print(f"\nrun summary at {r['rate']:g} events/s:{r['summary']}")
    print("(CPU time per served event, user + system, from /proc/PID/stat, counted from the moment the DAQ "
          "starts serving (start-up and the DAQ's pool left out) to the last frame served + 3 s: the conduit's main "
          "process, the hdf5 sink's writer process, a receive process when there is one, the analysis worker "
          "processes, the simulated DAQ)")


def memory(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = args.base_port or free_base_port()
        events = int(args.rate * args.minutes * 60)
        r = _online_once(tmp, _online_pipeline(tmp, port, args.workers), events, args.rate, args.pool, port,
                         sample_every=10.0, max_seconds=args.minutes * 60, settings=tuple(args.set))
    print(f"machine: {machine()}")
    served = "cut at the time limit" if r["served"] < 0 else f"{r['served']} served"
    print(f"online run at {args.rate:g} events/s for {args.minutes:g} min ({r['seconds']:.0f} s serving, {served}): "
          f"{r['received']} received, {r['analysed']} analysed, {r['skipped']} skipped, {r['recorded']} recorded, "
          f"lost by reason: {r['losses'] or 'none'}; CPU ms per received event (user+sys): "
          + ", ".join(f"{who} {u:.2f}+{s:.2f}" for who, (u, s) in r["cpu_ms"].items())
          + f"; load average {r['load'][0]:.1f} -> {r['load'][1]:.1f}")
    print("| minutes | main process RSS (MiB) | workers RSS (MiB) |")
    print("|---|---|---|")
    for t, main, workers in r["rss"]:
        print(f"| {t / 60:.1f} | {main:.0f} | {workers:.0f} |")
    if len(r["rss"]) >= 4:
        first = r["rss"][len(r["rss"]) // 10 or 1]
        last = r["rss"][-2]
        print(f"from {first[0] / 60:.1f} to {last[0] / 60:.1f} min: main {first[1]:.0f} -> {last[1]:.0f} MiB, "
              f"workers {first[2]:.0f} -> {last[2]:.0f} MiB")


def replay_rates(data: Path, tmp: Path, workers_list=(0, 1, 2)) -> dict[int, float]:
    """Events/s of `conduit run` replaying the merged file ``data`` (every event analysed), per worker count."""
    rates = {}
    for workers in workers_list:
        pipeline = tmp / f"replay_{workers}.toml"
        pipeline.write_text(textwrap.dedent(f"""
            [source]
            kind = "hdf5"
            path = "{data}"

            [engine]
            workers = {workers}
            """) + ANALYSIS)
        run = subprocess.run([CONDUIT, "run", str(pipeline), "-q"], capture_output=True, text=True, check=True,
                             cwd=tmp)
        seconds = float(re.search(r"wall time \(s\)\s+([\d.]+)", run.stdout).group(1))
        analysed = _number(r"events analysed\s+(\d+)", run.stdout)
        rates[workers] = analysed / seconds
    return rates


def scaling(args) -> None:
    import os

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"machine: {machine()}")
        print("replay of a merged file, every event analysed (pointcloud, cluster.hdbscan, estimate, histogram); "
              "events/s after start-up")
        print("| mix | `[engine] workers` | events/s | vs 1 process | load |")
        print("|---|---|---|---|---|")
        for mix in args.mix:
            data = tmp / f"{mix}.h5"
            subprocess.run([CONDUIT, "simulate", "hdf5", "--out", str(data), "--events", str(args.events),
                            "--preset", mix, "--pool", "50", "-q"], check=True)
            load = os.getloadavg()[0]
            rates = replay_rates(data, tmp)
            for workers, rate in rates.items():
                label = "0 (thread)" if workers == 0 else str(workers)
                print(f"| {mix} | {label} | {rate:.1f} | {rate / rates[1]:.2f} | {load:.1f} |")


def startup(args) -> None:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([CONDUIT, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    ready = []
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Path(tmp) / "online.toml"
        pipeline.write_text(textwrap.dedent("""
            [source]
            kind = "exporter"
            hosts = "127.0.0.1:47491-47501"

            [engine]
            workers = 2
            """) + ANALYSIS)
        for attempt in range(4):  # the first one fills the numba cache if needed
            t0 = time.perf_counter()
            proc = subprocess.Popen([CONDUIT, "run", str(pipeline), "--run", "1"], stderr=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, text=True, cwd=tmp)
            for line in proc.stderr:
                if "connecting to" in line:  # sinks open, workers warm, receivers starting
                    if attempt:
                        ready.append(time.perf_counter() - t0)
                    proc.send_signal(2)
            proc.wait()
    print(f"machine: {machine()}")
    print(f"conduit --help: median {sorted(times)[2]:.3f} s")
    print(f"conduit run, ready to receive (2 workers warm, numba cache filled): median {sorted(ready)[1]:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("online")
    p.add_argument("--rates", type=float, nargs="+", default=[200, 400],
                   help="served events/s to try (0: as fast as they are read)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds served at each rate")
    p.add_argument("--events", type=int, default=3000, help="events served at rate 0")
    p.add_argument("--pool", type=int, default=50)
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--base-port", type=int, default=0, help="first of 11 ports (0: a free range)")
    p.add_argument("--summary", action="store_true", help="print each run's summary too")
    p.add_argument("--keep", metavar="DIR", help="keep each run's pipeline and recordings in DIR/rate_R (a new "
                   "directory) instead of a temporary one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to conduit run (e.g. source.read_pause=0)")
    p.add_argument("--count-from", choices=("serving", "connected"), default="serving",
                   help="count CPU and seconds from the DAQ's first frame (it prints when) or from its clients' "
                        "connection (older DAQ code, which does not print it)")
    p.add_argument("--timeline", action="store_true", help="the engine's timeline of the first events "
                   "(`[engine] timeline`: dispatch and answer times, worker jobs, garbage collections), summed up")
    p.add_argument("--no-record", action="store_true", help="leave out the hdf5 and rerun recordings (what the "
                                                            "receive path and analysis cost alone)")
    p.add_argument("--trace-seconds", action="store_true", help="trace every second of the run (benchmarks/"
                   "trace_seconds.py: CPU, run-queue waits, switches of every process, the machine's steal/iowait, "
                   "dirty pages, socket queues, skips) and print it; kept as trace_seconds.jsonl with --keep")
    p = sub.add_parser("memory")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to conduit run; e.g. hdf5.traces=false: 10 min of lossless traces at 200/s "
                        "are ~85 GB")
    p.add_argument("--pool", type=int, default=50)
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--base-port", type=int, default=0, help="first of 11 ports (0: a free range)")
    p = sub.add_parser("scaling")
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--mix", nargs="+", choices=("default", "dense"), default=["default", "dense"])
    sub.add_parser("startup")
    args = parser.parse_args()
    {"online": online, "memory": memory, "scaling": scaling, "startup": startup}[args.what](args)


if __name__ == "__main__":
    main()
