"""``cluster.hdbscan``'s per-event CPU on the dense mix, seed by seed, with LOF's k capped or not (issue 17's p99).

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/cluster_tail.py [--seeds 1 2024 7 99 3 11 42 123 555]
        [--events 300] [--caps 0 100] [--repeats 2] [--mix dense]
    ... benchmarks/cluster_tail.py --base /tmp/base-checkout [--base-numba-cache DIR] [--seeds ...] [--mix ...]

With ``--base DIR`` (a checkout of another commit) the default
``cluster.hdbscan`` of this checkout and of DIR run in two worker processes
(DIR's ``core`` and ``plugins`` first on PYTHONPATH, its own numba cache),
one pinned CPU, passes over each seed's clouds alternating A B B A ... so
that both share the same minutes; the clouds are made once, here. Printed
per seed: thread CPU and wall mean / p90 / p99 / max ms of each (each
event's least over the passes), the load, and the events whose labels differ.

For each seed the mix's events are simulated and turned into clouds once;
then ``cluster.hdbscan`` (its default parameters, ``lof_k_max`` set to each
value of ``--caps``; 0 = no cap, the reference) clusters every cloud, the
settings alternating event by event and their order swapped on every
repeat, so that both sides share the same minutes of the machine. Each
event's figure is its least thread CPU over the repeats. Printed per seed
and setting: mean / p90 / p99 / max ms, and the events and points whose
labels differ from the first setting's; the load average at the start and
end of each seed. One process, pinned to one CPU.
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
from _common import machine  # noqa: E402
from stages import pin_to_one_cpu  # noqa: E402

NINE_SEEDS = (1, 2024, 7, 99, 3, 11, 42, 123, 555)


def clouds_of(mix: str, n: int, seed: int) -> list[np.ndarray]:
    """The ``cloud`` artifacts of ``n`` simulated events (default pointcloud parameters)."""
    from conduit.detector import DetectorParams
    from conduit.stage import StageContext
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams
    from conduit_stages.pointcloud.stage import PointcloudParams, PointcloudStage

    sim = Simulator(SimulationParams(seed=seed, events=n, preset=mix), DetectorParams())
    pointcloud = PointcloudStage(PointcloudParams(), StageContext())
    return [pointcloud.kernel(e.traces, e.id) for e in (sim.event(i).event for i in range(n))]


def stages_for(caps: list[int]) -> list:
    from conduit.stage import StageContext
    from conduit_stages.cluster.hdbscan_stage import HdbscanParams, HdbscanStage

    stages = [HdbscanStage(HdbscanParams().replace(lof_k_max=cap), StageContext()) for cap in caps]
    for stage in stages:
        stage.warm_up()
    return stages


def run_seed(clouds: list[np.ndarray], stages: list, repeats: int) -> tuple[np.ndarray, list[list]]:
    """(settings, events) least thread-CPU seconds over ``repeats``, and each setting's clusters per event."""
    best = np.full((len(stages), len(clouds)), np.inf)
    results: list[list] = [[None] * len(clouds) for _ in stages]
    for r in range(repeats):
        order = list(range(len(stages)))
        if r % 2:
            order.reverse()
        for i, cloud in enumerate(clouds):
            for s in order:
                c0 = time.thread_time()
                clusters = stages[s].cluster(cloud)
                best[s, i] = min(best[s, i], time.thread_time() - c0)
                results[s][i] = clusters
    return best, results


def differences(reference: list, other: list) -> tuple[int, int]:
    """(events, points) whose labels differ between two settings' clusters."""
    changed = [int((a.labels != b.labels).sum()) for a, b in zip(reference, other)]
    return sum(c > 0 for c in changed), sum(changed)


def stats(ms: np.ndarray) -> str:
    """mean / p90 / p99 / max of per-event milliseconds."""
    return f"{ms.mean():.2f} / {np.percentile(ms, 90):.2f} / {np.percentile(ms, 99):.2f} / {ms.max():.2f}"


def worker() -> None:
    """``--worker``: read cloud-file paths on stdin; per line one pass of ``cluster.hdbscan`` over them; print per event
    thread-CPU and wall seconds and a digest of the labels (one JSON line)."""
    import hashlib
    import json
    import sys

    from conduit.stage import StageContext
    from conduit_stages.cluster.hdbscan_stage import HdbscanParams, HdbscanStage

    pin_to_one_cpu()
    stage = HdbscanStage(HdbscanParams(), StageContext())
    stage.warm_up()
    print("ready", flush=True)
    for line in sys.stdin:
        with np.load(line.strip()) as saved:
            clouds = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        cpu, wall, digest = [], [], []
        for cloud in clouds:
            w0 = time.perf_counter()
            c0 = time.thread_time()
            labels = stage.cluster(cloud).labels
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
            digest.append(hashlib.sha1(labels.tobytes()).hexdigest())
        print(json.dumps({"cpu": cpu, "wall": wall, "labels": digest}), flush=True)


def against_base(args) -> None:
    """The default stage here against ``args.base``'s, alternating passes in two worker processes."""
    import json
    import subprocess
    import sys
    import tempfile

    here = os.path.dirname(os.path.abspath(__file__))
    base_env = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.join(args.base, d) for d in ("core", "plugins")),
                    NUMBA_CACHE_DIR=args.base_numba_cache or os.path.join(args.base, ".numba-cache"))
    command = [sys.executable, os.path.join(here, "cluster_tail.py"), "--worker"]
    workers = {"base": subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=base_env),
               "this": subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)}
    for name, process in workers.items():
        if process.stdout.readline().strip() != "ready":
            raise SystemExit(f"cluster_tail.py: the {name} worker did not start")
    print(f"machine: {machine()}")
    print(f"cluster.hdbscan (default parameters) on the {args.mix} mix, {args.events} events per seed: {args.base} "
          f"(base) against this checkout, passes alternating, each event's least of {args.repeats} (ms)\n")
    print("| seed | load start-end | base CPU mean / p90 / p99 / max | this CPU | base wall | this wall | "
          "events with other labels |")
    print("|---|---|---|---|---|---|---|")
    everything: dict[str, list] = {f"{n} {t}": [] for n in workers for t in ("cpu", "wall")}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            path = os.path.join(tmp, f"clouds_{seed}.npz")
            np.savez(path, *clouds_of(args.mix, args.events, seed))
            load0 = os.getloadavg()[0]
            best = {f"{n} {t}": np.full(args.events, np.inf) for n in workers for t in ("cpu", "wall")}
            labels = {}
            for r in range(args.repeats):
                for name in (("base", "this") if r % 2 == 0 else ("this", "base")):
                    workers[name].stdin.write(path + "\n")
                    workers[name].stdin.flush()
                    result = json.loads(workers[name].stdout.readline())
                    for t in ("cpu", "wall"):
                        best[f"{name} {t}"] = np.minimum(best[f"{name} {t}"], 1e3 * np.array(result[t]))
                    labels[name] = result["labels"]
            load1 = os.getloadavg()[0]
            differ = sum(a != b for a, b in zip(labels["base"], labels["this"]))
            for key, value in best.items():
                everything[key].extend(value)
            cells = " | ".join(stats(best[k]) for k in ("base cpu", "this cpu", "base wall", "this wall"))
            print(f"| {seed} | {load0:.1f}-{load1:.1f} | {cells} | {differ} |", flush=True)
    cells = " | ".join(stats(np.array(everything[k])) for k in ("base cpu", "this cpu", "base wall", "this wall"))
    print(f"| all {len(everything['base cpu'])} | | {cells} | |")
    for process in workers.values():
        process.stdin.close()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(NINE_SEEDS))
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--caps", type=int, nargs="+", default=[0, 100], help="lof_k_max values (0: no cap)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mix", default="dense", choices=("default", "dense"))
    parser.add_argument("--base", help="a checkout of another commit: A/B of the default stage against it")
    parser.add_argument("--base-numba-cache", help="NUMBA_CACHE_DIR of the base worker (default: BASE/.numba-cache)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    if args.base:
        return against_base(args)
    pin_to_one_cpu()
    print(f"machine: {machine()}")
    stages = stages_for(args.caps)
    print(f"cluster.hdbscan on the {args.mix} mix, {args.events} events per seed, least thread CPU of "
          f"{args.repeats} alternated runs per event (ms); lof_k_max = {args.caps} (0: no cap)\n")
    head = " | ".join(f"lof_k_max = {cap}: mean / p90 / p99 / max" for cap in args.caps)
    print(f"| seed | load start-end | {head} | events (points) differing from lof_k_max = {args.caps[0]} |")
    print("|---" * (len(args.caps) + 3) + "|")
    everything = [[] for _ in args.caps]
    for seed in args.seeds:
        clouds = clouds_of(args.mix, args.events, seed)
        load0 = os.getloadavg()[0]
        best, results = run_seed(clouds, stages, args.repeats)
        load1 = os.getloadavg()[0]
        cells = []
        for s, row in enumerate(1e3 * best):
            everything[s].extend(row)
            cells.append(f"{row.mean():.2f} / {np.percentile(row, 90):.2f} / {np.percentile(row, 99):.2f} / "
                         f"{row.max():.2f}")
        diffs = ", ".join("{} ({})".format(*differences(results[0], results[s])) for s in range(1, len(args.caps)))
        print(f"| {seed} | {load0:.1f}-{load1:.1f} | " + " | ".join(cells) + f" | {diffs} |", flush=True)
    cells = [f"{np.mean(v):.3f} / {np.percentile(v, 90):.2f} / {np.percentile(v, 99):.2f} / {np.max(v):.2f}"
             for v in everything]
    print(f"| all {len(everything[0])} | | " + " | ".join(cells) + " | |")


if __name__ == "__main__":
    main()
