"""End-to-end figures of the whole conduit, as a user runs it.

    .venv/bin/python benchmarks/end_to_end.py online   [--events 3000] [--rate 0] [--workers 2]
    .venv/bin/python benchmarks/end_to_end.py scaling  [--events 300]
    .venv/bin/python benchmarks/end_to_end.py startup

online   eleven simulated DataExporters (`conduit simulate serve`, a separate,
         niced process serving a pool of distinct events at each --rates value)
         -> `conduit run` with the exporter source, pointcloud, cluster.hdbscan,
         estimate, histogram, a lossless hdf5 recording and a .rrd recording.
         Reports per rate: served, received, analysed, skipped, dropped,
         recorded and lost (served - recorded).
scaling  the same analysis replaying a merged HDF5 file with 1 and 2 worker
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

from _common import ANALYSIS_STAGES, machine

BIN = Path(sys.executable).parent
CONDUIT = str(BIN / "conduit")

ANALYSIS = ANALYSIS_STAGES


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else -1


def _online_once(tmp: Path, pipeline: Path, events: int, rate: float, pool: int, port: int) -> dict:
    """Serve ``events`` at ``rate`` (niced server: the DAQ is another machine in reality), receive, measure."""
    import os

    server = subprocess.Popen(
        [CONDUIT, "simulate", "serve", "--events", str(events), "--pool", str(pool), "--rate", str(rate),
         "--base-port", str(port), "--truth", str(tmp / "truth.h5"), "--connect-timeout", "120", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=lambda: os.nice(10))
    time.sleep(1.0)
    run = subprocess.Popen([CONDUIT, "run", str(pipeline), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=tmp)
    server.communicate(timeout=3600)
    time.sleep(3.0)  # the last frames reach the builder; a live source then waits for more: stop it as on shift
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
        "received": _number(r"events received\s+(\d+)", out),
        "analysed": _number(r"events analysed\s+(\d+)", out),
        "skipped": _number(r"events skipped \(analysis behind\)\s+(\d+)", out),
        "dropped": max(_number(r"events dropped \(engine queue full\)\s+(\d+)", out), 0),
        "incomplete": _number(r"\n  incomplete\s+(\d+)", out),
        "recorded": recorded,
    }


def online(args) -> None:
    rows = []
    for rate in args.rates:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            port = args.base_port
            pipeline = tmp / "online.toml"
            pipeline.write_text(textwrap.dedent(f"""
                [source]
                kind = "exporter"
                hosts = "127.0.0.1:{port}-{port + 10}"
                run = 1

                [engine]
                workers = {args.workers}
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
            events = int(rate * args.seconds) if rate > 0 else args.events
            rows.append(_online_once(tmp, pipeline, events, rate, args.pool, port))
    print(f"machine: {machine()}")
    print("simulated DAQ (11 DataExporters, niced) and conduit on the same machine; event mix: simulator default "
          "(~700 signal + 640 FPN channels, ~2.8 MB of frames per event)")
    head = ("rate/s", "served", "received", "complete", "analysed", "skipped", "dropped", "recorded", "lost")
    print("".join(f"{h:>10}" for h in head))
    for r in rows:
        lost = r["served"] - r["recorded"]
        values = (r["rate"] or "max", r["served"], r["received"], r["received"] - r["incomplete"], r["analysed"],
                  r["skipped"], r["dropped"], r["recorded"], lost)
        print("".join(f"{v:>10}" for v in values))


def scaling(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "run_0001.h5"
        subprocess.run([CONDUIT, "simulate", "hdf5", "--out", str(data), "--events", str(args.events),
                        "--pool", "50", "-q"], check=True)
        rates = {}
        for workers in (0, 1, 2):
            pipeline = tmp / f"scaling_{workers}.toml"
            pipeline.write_text(textwrap.dedent(f"""
                [source]
                kind = "hdf5"
                path = "{data}"

                [engine]
                workers = {workers}
                """) + ANALYSIS)
            run = subprocess.run([CONDUIT, "run", str(pipeline), "-q"], capture_output=True, text=True, check=True)
            seconds = float(re.search(r"wall time \(s\)\s+([\d.]+)", run.stdout).group(1))
            analysed = _number(r"events analysed\s+(\d+)", run.stdout)
            rates[workers] = analysed / seconds
        print(f"machine: {machine()}")
        print("replay of a merged file, every event analysed (pointcloud, cluster.hdbscan, estimate, histogram); "
              "events/s after start-up")
        print(f"{'workers':>8}{'events/s':>12}{'vs 1 process':>14}")
        for workers, rate in rates.items():
            label = "0 (thread)" if workers == 0 else str(workers)
            print(f"{label:>10}{rate:>10.1f}{rate / rates[1]:>14.2f}")


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
    p.add_argument("--rates", type=float, nargs="+", default=[50, 100, 150, 200],
                   help="served events/s to try (0: as fast as they are read)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds served at each rate")
    p.add_argument("--events", type=int, default=3000, help="events served at rate 0")
    p.add_argument("--pool", type=int, default=50)
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--base-port", type=int, default=47491)
    p = sub.add_parser("scaling")
    p.add_argument("--events", type=int, default=1000)
    sub.add_parser("startup")
    args = parser.parse_args()
    {"online": online, "scaling": scaling, "startup": startup}[args.what](args)


if __name__ == "__main__":
    main()
