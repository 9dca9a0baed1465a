"""LOF's k-nearest-neighbour kernel alone, on the large clusters of the dense mix, optionally against another checkout.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/lof_kernel.py [--seeds 1 2024 7 99] [--events 300]
        [--min-points 900] [--repeats 3] [--base /tmp/clone/plugins/conduit_physics/clustering]

The simulator's dense events go through ``pointcloud`` and ``cluster.hdbscan``; every point set that LOF
cleaning searches (``LofNeighbours.search``) with at least ``--min-points`` points is kept with its k. Then
``lof_neighbours`` runs on each set's KD-tree: thread CPU, best of ``--repeats``, summed over the sets, in
this process pinned to one CPU. With ``--base`` the kernel of another checkout (its
``conduit_physics/clustering`` directory, loaded under another name) runs on the same trees, alternating with
this one, and the sets whose neighbour lists, distances or k-distances are not bit-identical are counted
(expected: none). This is how a change to ``lof_kernels.py`` is measured before the whole-stage runs of
``benchmarks/stages.py``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
from _common import machine  # noqa: E402
from stages import build_stages, make_events, pin_to_one_cpu  # noqa: E402


def lof_sets(seed: int, events: int, min_points: int) -> list[tuple[np.ndarray, int]]:
    """The (points, k) of every LOF search of at least ``min_points`` points in ``events`` dense events."""
    from conduit_physics.clustering.lof import LofNeighbours

    stages = build_stages()
    search = LofNeighbours.search.__func__
    found: list[tuple[np.ndarray, int]] = []

    def recording(cls, points, n_neighbors):
        if len(points) >= min_points:
            found.append((np.array(points, dtype=np.float64), int(n_neighbors)))
        return search(cls, points, n_neighbors)

    LofNeighbours.search = classmethod(recording)
    try:
        for event in make_events(events, seed, "dense"):
            stages["pointcloud"].process(event)
            stages["cluster.hdbscan"].process(event)
    finally:
        LofNeighbours.search = classmethod(search)
    return found


def load_kernels(directory: str):
    """``lof_kernels`` of the clustering package in ``directory``, imported under another package name."""
    name = "base_clustering"
    spec = importlib.util.spec_from_file_location(name, os.path.join(directory, "__init__.py"),
                                                  submodule_search_locations=[directory])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(name + ".lof_kernels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2024, 7, 99])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--min-points", type=int, default=900)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", help="another checkout's plugins/conduit_physics/clustering directory")
    args = parser.parse_args()
    pin_to_one_cpu()
    from conduit_physics.clustering import lof_kernels
    from conduit_physics.clustering.kdtree import build_tree

    kernels = {"this": lof_kernels}
    if args.base:
        kernels["base"] = load_kernels(args.base)
    sets = [s for seed in args.seeds for s in lof_sets(seed, args.events, args.min_points)]
    print(machine())
    print(f"{len(sets)} LOF sets of >= {args.min_points} points (dense seeds {args.seeds}, {args.events} events each)")
    total = dict.fromkeys(kernels, 0.0)
    differ = 0
    for points, k in sets:
        tree = build_tree(points)
        call = (tree.points, tree.perm, tree.start, tree.end, tree.left, tree.right, tree.dim, tree.lo, tree.hi, k)
        results = {name: module.lof_neighbours(*call) for name, module in kernels.items()}  # (compiles once)
        if "base" in results:
            differ += not all(np.array_equal(a, b) for a, b in zip(results["this"], results["base"]))
        best = dict.fromkeys(kernels, np.inf)
        for _ in range(args.repeats):
            for name, module in kernels.items():
                c0 = time.thread_time()
                module.lof_neighbours(*call)
                best[name] = min(best[name], time.thread_time() - c0)
        for name in kernels:
            total[name] += best[name]
    for name, seconds in total.items():
        print(f"{name}: {1e3 * seconds:.1f} ms (sum of the best of {args.repeats} per set)")
    if "base" in kernels:
        print(f"ratio this / base {total['this'] / total['base']:.3f}; sets with other lists: {differ}")


if __name__ == "__main__":
    main()
