"""Per-stage cost of the analysis stages on the reference event mix.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/stages.py [--events 200] [--seed 1]

Events come from the simulator's default preset (about 700 traces and 200
points per event). Every stage runs in this one process, pinned to one CPU,
with BLAS/OpenMP threads at 1, after its warm-up; the figures are per event
(median, mean and 90th percentile over the events, wall clock and thread CPU time). First-call costs are
measured in fresh subprocesses: once with an empty numba cache (compile and
write the cache) and once more with the cache filled (what a new worker pays).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
from _common import machine  # noqa: E402

STAGES = (
    ("pointcloud", "conduit_stages.pointcloud.stage", "PointcloudStage"),
    ("cluster.hdbscan", "conduit_stages.cluster.hdbscan_stage", "HdbscanStage"),
    ("cluster.dbscan", "conduit_stages.cluster.dbscan_stage", "DbscanStage"),
    ("estimate", "conduit_stages.estimate.stage", "EstimateStage"),
)
TARGETS = {"pointcloud": 1.0, "cluster.hdbscan": 5.0, "cluster.dbscan": 5.0, "estimate": 1.0}




def make_events(n: int, seed: int):
    from conduit.detector import DetectorParams
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams

    sim = Simulator(SimulationParams(seed=seed, events=n), DetectorParams())
    return [sim.event(i).event for i in range(n)]


def steady_state(events) -> dict[str, np.ndarray]:
    import importlib

    from conduit.stage import StageContext

    context = StageContext()
    stages = {}
    for name, module, cls in STAGES:
        klass = getattr(importlib.import_module(module), cls)
        stage = klass(klass.Params(), context)
        stage.warm_up()
        stages[name] = stage
    times = {name: np.zeros(len(events)) for name, _, _ in STAGES}
    cpu = {name: np.zeros(len(events)) for name, _, _ in STAGES}
    for i, event in enumerate(events):
        for name in ("pointcloud", "cluster.dbscan", "cluster.hdbscan", "estimate"):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            stages[name].process(event)
            times[name][i] = time.perf_counter() - t0
            cpu[name][i] = time.thread_time() - c0
    return times, cpu


FIRST_CALL = textwrap.dedent(
    """
    import time, importlib
    t0 = time.perf_counter()
    from conduit.stage import StageContext
    klass = getattr(importlib.import_module({module!r}), {cls!r})
    stage = klass(klass.Params(), StageContext())
    t1 = time.perf_counter()
    stage.warm_up()
    t2 = time.perf_counter()
    print(t1 - t0, t2 - t1)
    """
)


def first_call(module: str, cls: str, cache_dir: str) -> tuple[float, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL.format(module=module, cls=cls)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    setup, warm = (float(v) for v in out.stdout.split())
    return setup, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-first-call", action="store_true", help="skip the subprocess compile/cache timings")
    args = parser.parse_args()
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass

    print(f"machine: {machine()}")
    t0 = time.perf_counter()
    events = make_events(args.events, args.seed)
    traces = np.mean([e.n_traces for e in events])
    print(f"{len(events)} simulated events (default preset, seed {args.seed}) in {time.perf_counter() - t0:.1f} s")
    times, cpu = steady_state(events)
    points = np.mean([len(e.artifacts["cloud"]) for e in events])
    clusters = np.mean([e.artifacts["clusters"].count for e in events])
    tracks = np.mean([len(e.artifacts["estimates"]) for e in events])
    print(f"per event: {traces:.0f} traces, {points:.0f} points, {clusters:.2f} clusters, {tracks:.2f} estimates")
    print()
    print("Wall time per event, and the CPU time of the thread (less sensitive to other load on the machine).")
    print()
    print("| stage | median ms/event | mean | p90 | CPU median | CPU mean | target |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in STAGES:
        t = times[name] * 1e3
        c = cpu[name] * 1e3
        print(
            f"| {name} | {np.median(t):.2f} | {t.mean():.2f} | {np.percentile(t, 90):.2f} | "
            f"{np.median(c):.2f} | {c.mean():.2f} | <= {TARGETS[name]:g} |"
        )
    if args.no_first_call:
        return
    print()
    print("| stage | import + construct (s) | warm-up, empty cache: compile (s) | warm-up, cache filled (s) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for name, module, cls in STAGES:
            setup, cold = first_call(module, cls, cache)
            _, warm = first_call(module, cls, cache)
            print(f"| {name} | {setup:.2f} | {cold:.2f} | {warm:.2f} |")


if __name__ == "__main__":
    main()
