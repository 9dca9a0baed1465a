"""End-to-end figures of the whole conduit, as a user runs it.

    .venv/bin/python benchmarks/end_to_end.py online   [--rates 200 400] [--seconds 60] [--workers 2]
    .venv/bin/python benchmarks/end_to_end.py memory   [--rate 200] [--minutes 10]
    .venv/bin/python benchmarks/end_to_end.py scaling  [--events 300]
    .venv/bin/python benchmarks/end_to_end.py startup

online   eleven simulated DataExporters (`conduit simulate serve`, a separate,
         niced process serving a pool of distinct events at each --rates value)
         -> `conduit run` with the exporter source, pointcloud, cluster.hdbscan,
         estimate, histogram, a lossless hdf5 recording and a .rrd recording.
         Reports per rate: served, received, analysed, skipped, dropped,
         recorded and lost (served - recorded), the CPU time of the conduit's
         main process, of its workers and of the simulated DAQ per event, and
         the load average of the machine (other work shares the CPUs).
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
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import ANALYSIS_STAGES, children, cpu_seconds, machine, rss_kib

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


class _Sampler:
    """CPU seconds and RSS of the conduit (main process, worker processes) and of the simulated DAQ."""

    def __init__(self, run_pid: int, server_pid: int):
        self.run_pid, self.server_pid = run_pid, server_pid
        self.cpu_main = self.cpu_workers = self.cpu_server = 0.0
        self.workers: dict[int, float] = {}
        self.rss: list[tuple[float, float, float]] = []  # (seconds, main MiB, workers MiB)
        self.t0 = time.monotonic()

    def sample(self) -> None:
        server = cpu_seconds(self.server_pid)
        if server is not None:
            self.cpu_server = server
        main = cpu_seconds(self.run_pid)
        if main is None:
            return
        self.cpu_main = main
        workers_rss = 0.0
        for pid in children(self.run_pid):
            cpu = cpu_seconds(pid)
            if cpu is not None:
                self.workers[pid] = cpu
                workers_rss += rss_kib(pid) / 1024
        self.cpu_workers = sum(self.workers.values())
        self.rss.append((time.monotonic() - self.t0, rss_kib(self.run_pid) / 1024, workers_rss))


def _online_once(tmp: Path, pipeline: Path, events: int, rate: float, pool: int, port: int,
                 sample_every: float = 2.0) -> dict:
    """Serve ``events`` at ``rate`` (niced server: the DAQ is another machine in reality), receive, measure."""
    import os

    load_before = os.getloadavg()[0]
    server = subprocess.Popen(
        [CONDUIT, "simulate", "serve", "--events", str(events), "--pool", str(pool), "--rate", str(rate),
         "--base-port", str(port), "--truth", str(tmp / "truth.h5"), "--connect-timeout", "120", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=lambda: os.nice(10))
    time.sleep(1.0)
    run = subprocess.Popen([CONDUIT, "run", str(pipeline), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=tmp)
    sampler = _Sampler(run.pid, server.pid)
    started = time.monotonic()
    while server.poll() is None:
        time.sleep(sample_every)
        sampler.sample()
    served_seconds = time.monotonic() - started
    server.communicate(timeout=60)
    time.sleep(3.0)  # the last frames reach the builder; a live source then waits for more: stop it as on shift
    sampler.sample()
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=600)
    if run.returncode != 0:
        raise SystemExit(f"conduit run failed: {err[-2000:]}")
    import h5py

    with h5py.File(tmp / "run_0001.h5", "r") as f:
        recorded = len(f["events"])
    return {
        "rate": rate,
        "served": events,
        "seconds": served_seconds,
        "received": _number(r"events received\s+(\d+)", out),
        "analysed": _number(r"events analysed\s+(\d+)", out),
        "skipped": _number(r"events skipped \(analysis behind\)\s+(\d+)", out),
        "dropped": max(_number(r"events dropped \(engine queue full\)\s+(\d+)", out), 0),
        "incomplete": _number(r"\n  incomplete\s+(\d+)", out),
        "recorded": recorded,
        "cpu_main_ms": 1e3 * sampler.cpu_main / events,
        "cpu_workers_ms": 1e3 * sampler.cpu_workers / events,
        "cpu_daq_ms": 1e3 * sampler.cpu_server / events,
        "load": (load_before, os.getloadavg()[0]),
        "rss": sampler.rss,
    }


def _online_pipeline(tmp: Path, port: int, workers: int) -> Path:
    pipeline = tmp / "online.toml"
    pipeline.write_text(textwrap.dedent(f"""
        [source]
        kind = "exporter"
        hosts = "127.0.0.1:{port}-{port + 10}"
        run = 1

        [engine]
        workers = {workers}
        policy = "skip"
        """) + ANALYSIS + textwrap.dedent("""
        [[stage]]
        use = "hdf5"
        path = "run_{run:04d}.h5"
        clusters = false
        lossless = true

        [[stage]]
        use = "rerun"
        mode = "save"
        path = "run_{run:04d}.rrd"
        """))
    return pipeline


def online(args) -> None:
    rows = []
    for rate in args.rates:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            port = args.base_port or free_base_port()
            events = int(rate * args.seconds) if rate > 0 else args.events
            rows.append(_online_once(tmp, _online_pipeline(tmp, port, args.workers), events, rate, args.pool, port))
    print(f"machine: {machine()}")
    print("simulated DAQ (11 DataExporters, niced) and conduit on the same machine; event mix: simulator default "
          "(~700 signal + 640 FPN channels, ~2.8 MB of frames per event)")
    head = ("rate/s", "served", "received", "complete", "analysed", "skipped", "dropped", "recorded", "lost",
            "s", "main ms", "work ms", "DAQ ms", "load")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        lost = r["served"] - r["recorded"]
        values = (r["rate"] or "max", r["served"], r["received"], r["received"] - r["incomplete"], r["analysed"],
                  r["skipped"], r["dropped"], r["recorded"], lost, f"{r['seconds']:.0f}", f"{r['cpu_main_ms']:.2f}",
                  f"{r['cpu_workers_ms']:.2f}", f"{r['cpu_daq_ms']:.2f}", f"{r['load'][0]:.1f}-{r['load'][1]:.1f}")
        print("| " + " | ".join(str(v) for v in values) + " |")
    print("(s: seconds the DAQ took to serve; main/work/DAQ ms: CPU time per served event of the conduit's main "
          "process, of its worker processes and of the simulated DAQ; load: load average before-after)")


def memory(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = args.base_port or free_base_port()
        events = int(args.rate * args.minutes * 60)
        r = _online_once(tmp, _online_pipeline(tmp, port, args.workers), events, args.rate, args.pool, port,
                         sample_every=10.0)
    print(f"machine: {machine()}")
    print(f"online run at {args.rate:g} events/s for {args.minutes:g} min ({r['seconds']:.0f} s served): "
          f"{r['received']} received, {r['analysed']} analysed, {r['skipped']} skipped, {r['recorded']} recorded; "
          f"load average {r['load'][0]:.1f} -> {r['load'][1]:.1f}")
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
    p = sub.add_parser("memory")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--minutes", type=float, default=10.0)
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
