"""``cluster.hdbscan``'s per-event CPU on the dense mix, seed by seed, with LOF's k capped or not (issue 17's p99).

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/cluster_tail.py [--seeds 1 2024 7 99 3 11 42 123 555]
        [--events 300] [--caps 0 100] [--repeats 2] [--mix dense]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(NINE_SEEDS))
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--caps", type=int, nargs="+", default=[0, 100], help="lof_k_max values (0: no cap)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mix", default="dense", choices=("default", "dense"))
    args = parser.parse_args()
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
