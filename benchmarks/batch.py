"""Runs per minute of `conduit batch` against the number of Dask workers.

    .venv/bin/python benchmarks/batch.py [--runs 8] [--events 100] [--workers 1 2]

Simulates --runs merged files of --events events each, then replays them all
with `conduit batch` (pointcloud, cluster.hdbscan, estimate, histogram, hdf5
with clouds and estimates) on a LocalCluster of 1, 2, ... single-threaded
worker processes, with --force so that every run is processed each time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import ANALYSIS_STAGES, machine

CONDUIT = str(Path(sys.executable).parent / "conduit")

PIPELINE = """
[source]
kind = "hdf5"
path = "data/run_{run:04d}.h5"
""" + ANALYSIS_STAGES + """
[[stage]]
use = "hdf5"
path = "out/run_{run:04d}.h5"
traces = false
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        for run in range(1, args.runs + 1):
            subprocess.run([CONDUIT, "simulate", "hdf5", "--out", str(root / "data" / f"run_{run:04d}.h5"),
                            "--events", str(args.events), "--seed", str(run), "--pool", "25", "-q"], check=True)
        (root / "batch.toml").write_text(textwrap.dedent(PIPELINE))
        rows = []
        for workers in args.workers:
            t0 = time.perf_counter()
            subprocess.run([CONDUIT, "batch", str(root / "batch.toml"), "--runs", f"1-{args.runs}",
                            "--local-workers", str(workers), "--force"], check=True, capture_output=True)
            rows.append((workers, time.perf_counter() - t0))
    print(f"machine: {machine()}")
    print(f"{args.runs} runs x {args.events} events (simulator default mix), wall time includes cluster start-up")
    print(f"{'workers':>8}{'seconds':>10}{'runs/min':>10}{'events/s':>10}")
    for workers, seconds in rows:
        print(f"{workers:>8}{seconds:>10.1f}{args.runs / seconds * 60:>10.1f}{args.runs * args.events / seconds:>10.1f}")


if __name__ == "__main__":
    main()
