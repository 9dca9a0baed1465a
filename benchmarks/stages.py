"""Per-stage and whole-chain cost of the analysis on the two event mixes.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/stages.py [--events 200] [--mix default dense]
        [--compare] [--no-first-call] [--profile N] [--profile-slowest N] [--seed S] [--hash]

Events come from the simulator's ``default`` preset (the reference mix:
about 700 traces and 200 points per event) and its ``dense`` preset (the
default channels plus protons curling up near 90 deg: median about 200
points, 90 % below about 850, up to about 2,900). Every stage runs in this
one process, pinned to one CPU, with BLAS/OpenMP threads at 1, after its
warm-up; the figures are per event (mean, median, 90th and 99th percentile
and maximum over the events, wall clock and thread CPU time). The chain is
pointcloud + cluster.hdbscan + estimate, as the workers run it.

``--compare`` also runs ``cluster.hdbscan`` with the hdbscan package
(``algorithm = "prims_kdtree"``) on the same clouds, in the same process,
both with ``reclean_joined = "always"`` and ``lof_k_max = 0`` (every LOF
cleaning, LOF's k uncapped: the exact path), and counts the events whose
clusters differ (expected: none) and the ratio of the times; and the events
where the stage's defaults (``reclean_joined``, ``lof_k_max``) give other
clusters than that path. First-call costs are measured in fresh subprocesses: once with
an empty numba cache (compile and write the cache) and once more with the
cache filled (what a new worker pays).

``--hash`` prints only a sha256 of the chain's outputs (clouds, cluster labels and ids, directions,
estimates) over ``--events`` events of each mix: run it with another checkout's ``core`` and ``plugins``
first on PYTHONPATH and compare the digests to show a change leaves the results byte-identical.

``--profile N`` times the phases of ``pointcloud`` over all events (trace
selection, signal mask, FFT low-pass, corrected samples, peak search, points,
and the Python after the kernel) and those of ``cluster.hdbscan`` on the N
largest clouds of each mix (thread CPU, best of 5 runs): HDBSCAN's KD-tree, core
distances and minimum spanning tree, each LOF cleaning's neighbour search
and scores, the directions and the join, and the rest.
``--profile-slowest N`` does the same on the N events ``cluster.hdbscan``
was slowest on in the run (with 300 events the p99 is about the 4th
slowest).
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
CHAIN = ("pointcloud", "cluster.hdbscan", "estimate")
#: Targets per event on one core (ms): DESIGN.md section 8 and issue 17 (the dense mix).
TARGETS = {
    "default": {"pointcloud": "<= 1", "cluster.hdbscan": "<= 5", "cluster.dbscan": "<= 5", "estimate": "<= 1",
                "chain": "mean <= 2"},
    "dense": {"cluster.hdbscan": "mean <= 3, p99 <= 15", "chain": "mean <= 5"},
}


def make_events(n: int, seed: int, preset: str = "default"):
    from conduit.detector import DetectorParams
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams

    sim = Simulator(SimulationParams(seed=seed, events=n, preset=preset), DetectorParams())
    return [sim.event(i).event for i in range(n)]


def build_stages() -> dict:
    import importlib

    from conduit.stage import StageContext

    context = StageContext()
    stages = {}
    for name, module, cls in STAGES:
        klass = getattr(importlib.import_module(module), cls)
        stage = klass(klass.Params(), context)
        stage.warm_up()
        stages[name] = stage
    return stages


def steady_state(events, stages) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Wall and thread-CPU seconds per event of every stage (the events keep their artifacts)."""
    times = {name: np.zeros(len(events)) for name, _, _ in STAGES}
    cpu = {name: np.zeros(len(events)) for name, _, _ in STAGES}
    for i, event in enumerate(events):
        for name in ("pointcloud", "cluster.dbscan", "cluster.hdbscan", "estimate"):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            stages[name].process(event)
            times[name][i] = time.perf_counter() - t0
            cpu[name][i] = time.thread_time() - c0
    times["chain"] = sum(times[name] for name in CHAIN)
    cpu["chain"] = sum(cpu[name] for name in CHAIN)
    return times, cpu


def compare_reference(events, stages) -> str:
    """Clusters of the compiled HDBSCAN against the hdbscan package's, and the time of each, on the same clouds."""
    from conduit_stages.cluster.hdbscan_stage import HdbscanParams, HdbscanStage

    default = stages["cluster.hdbscan"]
    # the exact path (every cleaning, LOF's k uncapped) on both sides; the default is compared with it below
    native = HdbscanStage(HdbscanParams(reclean_joined="always", lof_k_max=0), default.context)
    package = HdbscanStage(HdbscanParams(algorithm="prims_kdtree", reclean_joined="always", lof_k_max=0),
                           default.context)
    native.warm_up()
    package.warm_up()
    differ = variant = 0
    t_native = np.zeros(len(events))
    t_package = np.zeros(len(events))
    for i, event in enumerate(events):
        cloud = event.artifacts["cloud"]
        c0 = time.thread_time()
        a = native.cluster(cloud)
        t_native[i] = time.thread_time() - c0
        c0 = time.thread_time()
        b = package.cluster(cloud)
        t_package[i] = time.thread_time() - c0
        same = (np.array_equal(a.labels, b.labels) and np.array_equal(a.cluster_labels, b.cluster_labels)
                and np.array_equal(a.directions, b.directions))
        differ += not same
        variant += not np.array_equal(default.cluster(cloud).labels, a.labels)
    return (f"cluster.hdbscan (reclean_joined = 'always', lof_k_max = 0), compiled vs the hdbscan package on the same "
            f"{len(events)} clouds: {differ} events with different clusters; the default "
            f"(reclean_joined = {default.params.reclean_joined!r}, lof_k_max = {default.params.lof_k_max}) differs "
            f"from that in {variant} events; CPU ms/event mean {1e3 * t_native.mean():.2f} vs "
            f"{1e3 * t_package.mean():.2f} (x{t_package.mean() / t_native.mean():.1f}), p99 "
            f"{1e3 * np.percentile(t_native, 99):.2f} vs {1e3 * np.percentile(t_package, 99):.2f}, max "
            f"{1e3 * t_native.max():.2f} vs {1e3 * t_package.max():.2f}")


PHASES = ("KD-tree", "core distances", "MST", "HDBSCAN rest", "LOF 1 kNN", "LOF 1 scores", "direction + join",
          "LOF 2 kNN", "LOF 2 scores", "other")


class PhaseClock:
    """Thread CPU seconds per phase of one ``cluster.hdbscan`` call, from wrappers around its functions.

    The first LOF cleaning runs before any direction is computed; a cleaning after that is the second.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.second_pass = False
        self.depth = 0  # inside a timed phase: nested timed calls are not counted twice

    def timed(self, phase, function):
        def wrapper(*args, **kwargs):
            name = phase() if callable(phase) else phase
            if self.depth:
                return function(*args, **kwargs)
            self.depth += 1
            c0 = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.thread_time() - c0
                self.depth -= 1
        return wrapper

    def install(self, patch) -> None:
        """Wrap the phases' functions with ``patch(owner, name, wrapper)`` (e.g. unittest.mock's patch.object)."""
        from conduit_physics.clustering import postprocessing
        from conduit_physics.clustering.lof import LofNeighbours
        from conduit_stages.cluster import hdbscan_native

        def lof(part):
            return lambda: f"LOF {2 if self.second_pass else 1} {part}"

        def oriented(function):
            def wrapper(*args, **kwargs):
                self.second_pass = True
                return function(*args, **kwargs)
            return wrapper

        patch(hdbscan_native, "build_tree", self.timed("KD-tree", hdbscan_native.build_tree))
        patch(hdbscan_native, "core_distances", self.timed("core distances", hdbscan_native.core_distances))
        # small_mst (clouds of up to DENSE_PRIM_POINTS): KD-tree, core distances and MST in one call, all "MST"
        for name in ("mst_mutual_reachability", "prim_dense", "small_mst"):
            if hasattr(hdbscan_native, name):  # (the names of this checkout's code or an older one's)
                patch(hdbscan_native, name, self.timed("MST", getattr(hdbscan_native, name)))
        search = LofNeighbours.search.__func__
        patch(LofNeighbours, "search", classmethod(self.timed(lof("kNN"), search)))
        for name in ("search_scored", "search_rows"):  # the search and its scores in one call: all "kNN"
            if hasattr(LofNeighbours, name):
                patch(LofNeighbours, name, classmethod(self.timed(lof("kNN"), getattr(LofNeighbours, name).__func__)))
        patch(LofNeighbours, "without", self.timed(lof("kNN"), LofNeighbours.without))
        patch(LofNeighbours, "union", classmethod(self.timed(lof("kNN"), LofNeighbours.union.__func__)))
        patch(LofNeighbours, "scores", self.timed(lof("scores"), LofNeighbours.scores))
        for name in ("_direction", "_join"):
            patch(postprocessing, name, oriented(self.timed("direction + join", getattr(postprocessing, name))))

    def profile(self, stage, cloud, repeats: int = 5) -> dict[str, float]:
        """Milliseconds per phase of the fastest of ``repeats`` runs of ``stage.cluster(cloud)``."""
        from conduit_physics.clustering import base

        best: dict[str, float] = {}
        for _ in range(repeats):
            self.seconds = {}
            self.second_pass = False
            c0 = time.thread_time()
            labels = stage.labels(cloud)
            c1 = time.thread_time()
            base.postprocess(cloud, labels, stage.params, stage.context.detector.magnetic_field)
            total = time.thread_time() - c0
            ms = {name: 1e3 * self.seconds.get(name, 0.0) for name in PHASES}
            ms["HDBSCAN rest"] = 1e3 * (c1 - c0) - ms["KD-tree"] - ms["core distances"] - ms["MST"]
            ms["total"] = 1e3 * total
            ms["other"] = ms["total"] - sum(v for k, v in ms.items() if k not in ("other", "total"))
            if not best or ms["total"] < best["total"]:
                best = ms
        return best


POINTCLOUD_PHASES = ("select (sums, quiet bound)", "mask", "FFT low-pass", "corrected + chunk extremes",
                     "peak search", "points", "jitter, z, sort (Python)")


def pointcloud_prefixes():
    """Compiled prefixes of ``kernels.event_points``: each runs the phases up to one more than the last.

    The differences of their times are the phases' costs (the last two phases come from event_points
    itself and from the stage call). They use the kernels' private functions, in event_points' order.
    """
    from numba import njit

    from conduit_stages.pointcloud import kernels as k

    @njit(nogil=True)
    def run(traces, pad_ok, pos_sum, neg_sum, h_bitrev, tw_re, tw_im, threshold, depth):
        n = traces.shape[0]
        active = np.empty(n, dtype=np.int64)
        sums = np.empty((n, 2), dtype=np.int64)
        n_active = 0
        for r in range(n):
            pad = np.int64(traces[r, 4])
            if pad < 0 or pad >= pad_ok.shape[0] or not pad_ok[pad]:
                continue
            s1, s2, lo, hi = k._trace_sums(traces[r])
            if k._quiet_bound(s1, s2, lo, hi, pos_sum, neg_sum) <= threshold - 1e-6:
                continue
            active[n_active] = r
            sums[r, 0] = s1
            sums[r, 1] = s2
            n_active += 1
        found = 0
        if depth == 0:
            return found
        lanes = k.BATCH // 2
        re = np.empty((k.N_SAMPLES, lanes))
        im = np.empty((k.N_SAMPLES, lanes))
        c = np.empty(k.N_SAMPLES)
        work = k._peak_work(k.N_SAMPLES)
        chunk_max, chunk_min = work[7], work[8]
        for first in range(0, n_active, k.BATCH):
            count = min(k.BATCH, n_active - first)
            if depth == 1:
                for q in range(count):
                    r = active[first + q]
                    k._masked_column(traces[r], sums[r, 0], sums[r, 1], re if q % 2 == 0 else im, q // 2, False)
                continue
            re, im = k._filter_batch(traces, active, first, count, sums, h_bitrev, tw_re, tw_im, False)
            if depth == 2:
                continue
            for q in range(count):
                k._corrected(traces[active[first + q]], re if q % 2 == 0 else im, q // 2, False, c, chunk_max,
                             chunk_min)
                if depth == 4:
                    found += k._find_peaks(c, threshold, 50.0, 20.0, 1.0, 50.0, 0.95, work)
        return found

    return run


def profile_pointcloud(events, stage, repeats: int = 3) -> None:
    """Print the thread CPU ms per event of each phase of ``pointcloud`` (default parameters), best of ``repeats``."""
    params = stage.params
    if params.integer_samples or params.integer_fill or params.peak_separation != 50.0:
        raise ValueError("the phase profile assumes the default pointcloud parameters")
    kernel = stage.kernel
    tables = kernel.tables
    run = pointcloud_prefixes()
    args = (kernel.pad_ok, tables.positive_sum, tables.negative_sum, tables.h_bitrev, tables.tw_re, tables.tw_im,
            float(params.peak_threshold))
    steps = [lambda traces, _, depth=depth: run(traces, *args, depth) for depth in range(5)]
    steps += [lambda traces, _: kernel.unsorted(traces), lambda traces, event_id: kernel(traces, event_id)]
    run(events[0].traces, *args, 4)  # compile
    cumulative = []
    for step in steps:
        best = np.inf
        for _ in range(repeats):
            c0 = time.thread_time()
            for event in events:
                step(event.traces, event.id)
            best = min(best, time.thread_time() - c0)
        cumulative.append(1e3 * best / len(events))
    phases = np.diff([0.0] + cumulative)
    print("pointcloud phases (thread CPU ms per event, best of "
          f"{repeats} passes over the {len(events)} events; differences of compiled prefixes):")
    print()
    print("| " + " | ".join(POINTCLOUD_PHASES) + " | total |")
    print("|---" * (len(POINTCLOUD_PHASES) + 1) + "|")
    print("| " + " | ".join(f"{ms:.3f}" for ms in phases) + f" | {cumulative[-1]:.3f} |")


def profile_phases(events, stages, count: int, seconds: np.ndarray | None = None) -> None:
    """Print the phase table of ``cluster.hdbscan`` on the ``count`` largest clouds, or the ``count`` slowest
    events when ``seconds`` (each event's cluster.hdbscan CPU time) is given: the events that set the p99."""
    from contextlib import ExitStack
    from unittest import mock

    stage = stages["cluster.hdbscan"]
    if seconds is None:
        chosen = sorted(range(len(events)), key=lambda i: len(events[i].artifacts["cloud"]), reverse=True)[:count]
        what = "largest clouds"
    else:
        chosen = [int(i) for i in np.argsort(seconds)[::-1][:count]]
        what = "slowest events"
    clock = PhaseClock()
    with ExitStack() as patches:
        clock.install(lambda owner, name, value: patches.enter_context(mock.patch.object(owner, name, value)))
        print(f"cluster.hdbscan phases on the {count} {what} (thread CPU ms, best of 5 runs):")
        print()
        print("| event | points | " + " | ".join(PHASES) + " | total |")
        print("|---" * (len(PHASES) + 3) + "|")
        for i in chosen:
            cloud = events[i].artifacts["cloud"]
            ms = clock.profile(stage, cloud)
            print(f"| {i} | {len(cloud)} | " + " | ".join(f"{ms[name]:.2f}" for name in PHASES + ("total",)) + " |")


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


def report_mix(mix: str, n: int, seed: int, compare: bool, profile: int = 0, slowest: int = 0) -> None:
    t0 = time.perf_counter()
    events = make_events(n, seed, mix)
    print(f"\n### {mix} mix: {len(events)} simulated events (preset {mix!r}, seed {seed}), "
          f"made in {time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.2f}")
    stages = build_stages()
    times, cpu = steady_state(events, stages)
    traces = np.mean([e.n_traces for e in events])
    points = np.array([len(e.artifacts["cloud"]) for e in events])
    clusters = np.mean([e.artifacts["clusters"].count for e in events])
    tracks = np.mean([len(e.artifacts["estimates"]) for e in events])
    print(f"per event: {traces:.0f} traces; points median {np.median(points):.0f}, mean {points.mean():.0f}, "
          f"90 % {np.percentile(points, 90):.0f}, 99 % {np.percentile(points, 99):.0f}, max {points.max()}; "
          f"{clusters:.2f} clusters, {tracks:.2f} estimates")
    print()
    print("| stage | mean ms/event | median | p90 | p99 | max | CPU mean | CPU p90 | CPU p99 | CPU max | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in [s for s, _, _ in STAGES] + ["chain"]:
        t = times[name] * 1e3
        c = cpu[name] * 1e3
        label = "chain (pointcloud + cluster.hdbscan + estimate)" if name == "chain" else name
        print(f"| {label} | {t.mean():.2f} | {np.median(t):.2f} | {np.percentile(t, 90):.2f} | "
              f"{np.percentile(t, 99):.2f} | {t.max():.2f} | {c.mean():.2f} | {np.percentile(c, 90):.2f} | "
              f"{np.percentile(c, 99):.2f} | {c.max():.2f} | {TARGETS[mix].get(name, '')} |")
    if compare:
        print()
        print(compare_reference(events, stages))
    if profile:
        print()
        profile_pointcloud(events, stages["pointcloud"])
        print()
        profile_phases(events, stages, profile)
    if slowest:
        print()
        profile_phases(events, stages, slowest, cpu["cluster.hdbscan"])


def chain_hash(mixes, n: int, seed: int) -> None:
    """sha256 of everything the chain makes for ``n`` events of each mix (made one at a time): each event's
    cloud, cluster labels and ids, directions and estimates. The same digest from two checkouts (this script
    with the other's ``core`` and ``plugins`` first on PYTHONPATH) shows their results are byte-identical."""
    import hashlib

    from conduit.detector import DetectorParams
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams

    stages = build_stages()
    digest = hashlib.sha256()
    points = 0
    for mix in mixes:
        sim = Simulator(SimulationParams(seed=seed, events=n, preset=mix), DetectorParams())
        for i in range(n):
            event = sim.event(i).event
            for name in CHAIN:
                stages[name].process(event)
            cloud = event.artifacts["cloud"]
            clusters = event.artifacts["clusters"]
            points += len(cloud)
            for part in (cloud, *_arrays(clusters), *_arrays(event.artifacts["estimates"])):
                digest.update(np.ascontiguousarray(part).tobytes())
    print(f"{n} events of each of {', '.join(mixes)} (seed {seed}): {points:,} points; chain outputs sha256 "
          f"{digest.hexdigest()}")


def _arrays(value) -> list:
    """The arrays (and scalars, as text) an artifact is made of, in a fixed order."""
    if isinstance(value, np.ndarray):
        return [value]
    if hasattr(value, "__dataclass_fields__"):
        return [a for field in sorted(value.__dataclass_fields__) for a in _arrays(getattr(value, field))]
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in _arrays(item)]
    if isinstance(value, dict):
        return [a for key in sorted(value) for a in _arrays(value[key])]
    return [np.frombuffer(repr(value).encode(), dtype=np.uint8)]


def pin_to_one_cpu() -> None:
    """Run this process on the first CPU it may use (the figures are per event on one core)."""
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix", nargs="+", choices=("default", "dense"), default=["default", "dense"])
    parser.add_argument("--compare", action="store_true", help="also run cluster.hdbscan with the hdbscan package")
    parser.add_argument("--no-first-call", action="store_true", help="skip the subprocess compile/cache timings")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="time cluster.hdbscan's phases on the N largest clouds of each mix")
    parser.add_argument("--profile-slowest", type=int, default=0, metavar="N",
                        help="time cluster.hdbscan's phases on the N events it was slowest on (those of its p99)")
    parser.add_argument("--hash", action="store_true",
                        help="only print a sha256 of the chain's outputs over --events events of each mix")
    args = parser.parse_args()
    if args.hash:
        chain_hash(args.mix, args.events, args.seed)
        return
    pin_to_one_cpu()

    print(f"machine: {machine()}")
    print("Wall time per event, and the CPU time of the thread (less sensitive to other load on the machine).")
    for mix in args.mix:
        report_mix(mix, args.events, args.seed, args.compare, args.profile, args.profile_slowest)
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
