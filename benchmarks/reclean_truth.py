"""Settings of ``cluster.hdbscan``'s LOF cleaning against each other on the simulator's truth (issue 17's dense tail).

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/reclean_truth.py [--events 300] [--mix default dense]
        [--seed 2024] [--settings reclean_joined=always,lof_k_max=0 lof_k_max=100 ...]

Each mix's events are simulated once (seed 2024, as benchmarks/physics.py),
turned into clouds once, then clustered and estimated with each setting
(``name=value`` overrides of ``cluster.hdbscan``'s parameters, joined by
commas; the first is the reference the others are compared with; by default
``reclean_joined`` "always", "changed", "never" uncapped, then the stage's
default with ``lof_k_max`` 0, 150, 100 and 50). Printed per mix: every event
whose labels differ from the reference's, with its points checked against the
truth; the events and points that differ per setting; the thread CPU of the
clustering (mean / p90 / p99 / max); and the truth scores of
benchmarks/physics.py for each setting (particles well reconstructed, mean
efficiency and purity, robust spread of the polar angle, B-rho and vertex z
errors, the reasons particles were lost), with the clusters found (tracks)
and the points kept in clusters over all events.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
from _common import machine  # noqa: E402
from physics import Reco, analyse, errors, point_particles, robust, simulate, well_reconstructed  # noqa: E402
from stages import pin_to_one_cpu  # noqa: E402

SETTINGS = ("reclean_joined=always,lof_k_max=0", "reclean_joined=changed,lof_k_max=0",
            "reclean_joined=never,lof_k_max=0", "lof_k_max=0", "lof_k_max=150", "lof_k_max=100", "lof_k_max=50")


def overrides(setting: str) -> dict[str, object]:
    """``"name=value,name=value"`` as keyword arguments of HdbscanParams (integers where the value is one)."""
    pairs = [item.split("=", 1) for item in setting.split(",") if item]
    return {name: int(value) if value.lstrip("-").isdigit() else value for name, value in pairs}


def _majority(owner: np.ndarray, labels: np.ndarray, label: int) -> int:
    """The simulated particle that made most points of cluster ``label`` (-1: noise)."""
    values, counts = np.unique(owner[labels == label], return_counts=True)
    return int(values[np.argmax(counts)])


def _difference(a: Reco, b: Reco, changed: np.ndarray, setting: str) -> str:
    """The points of one event labelled differently by the reference (a) and ``setting`` (b), checked against truth."""
    owner = point_particles(a.cloud, a.sim.truth)
    rows = np.flatnonzero(changed)

    def own(reco: Reco) -> int:  # points clustered with the particle that made most of their cluster
        labels = reco.clusters.labels
        return sum(labels[r] >= 0 and _majority(owner, labels, labels[r]) == owner[r] for r in rows)

    return (f"{len(rows)} of {len(a.cloud)} points labelled differently ({int((owner[rows] >= 0).sum())} made by a "
            f"simulated particle, {int((owner[rows] < 0).sum())} noise); in a cluster: reference "
            f"{int((a.clusters.labels[rows] >= 0).sum())}, {setting!r} {int((b.clusters.labels[rows] >= 0).sum())}; "
            f"in the cluster of their own particle: reference {own(a)}, {setting!r} {own(b)}; largest cluster "
            f"{max(np.bincount(a.clusters.labels[a.clusters.labels >= 0]), default=0)} points")


def run_mix(preset: str, n: int, seed: int, settings: list[str]) -> None:
    from conduit.stage import StageContext
    from conduit_stages.cluster.hdbscan_stage import HdbscanParams, HdbscanStage
    from conduit_stages.estimate.stage import EstimateParams, estimate_tracks
    from conduit_stages.pointcloud.stage import PointcloudParams, PointcloudStage

    _, detector, sims = simulate(preset, n, seed)
    context = StageContext(detector=detector)
    pointcloud = PointcloudStage(PointcloudParams(), context)
    clouds = [pointcloud.kernel(sim.event.traces, sim.event.id) for sim in sims]
    reco: dict[str, list[Reco]] = {}
    cpu: dict[str, np.ndarray] = {}
    for setting in settings:
        stage = HdbscanStage(HdbscanParams().replace(**overrides(setting)), context)
        stage.warm_up()
        reco[setting], cpu[setting] = [], np.zeros(len(sims))
        for i, (sim, cloud) in enumerate(zip(sims, clouds)):
            c0 = time.thread_time()
            clusters = stage.cluster(cloud)
            cpu[setting][i] = time.thread_time() - c0
            estimates, status = estimate_tracks(cloud, clusters, EstimateParams(), detector, sim.event.id)
            reco[setting].append(Reco(sim, cloud, clusters, estimates, status, {}))
    reference = reco[settings[0]]
    differ = {}
    for setting in settings[1:]:
        events = points_differ = 0
        for a, b in zip(reference, reco[setting]):
            changed = a.clusters.labels != b.clusters.labels
            if changed.any():
                events += 1
                points_differ += int(changed.sum())
                print(f"{preset} event {a.sim.event.id}, {setting!r}: " + _difference(a, b, changed, setting))
        differ[setting] = f"{events} events, {points_differ} points"
    points = np.array([len(c) for c in clouds])
    print(f"\n### {preset}: {n} events (seed {seed}), points median {np.median(points):.0f}, max {points.max()}; "
          f"labels different from {settings[0]!r}: {differ}; load average {os.getloadavg()[0]:.2f}\n")
    print("| setting | cluster CPU mean / p90 / p99 / max ms | clusters | points in clusters | particles | "
          "well reconstructed | efficiency | purity | polar err deg (median, spread) | B-rho err % | vertex z err mm | "
          "lost (reason: count) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for setting in settings:
        results = [r for rec in reco[setting] for r in analyse(preset, rec)]
        good = well_reconstructed(results)
        err = errors(good)
        lost = collections.Counter(r.outcome for r in results if r.outcome != "ok")
        c = 1e3 * cpu[setting]
        spread = " | ".join("{:.3f}, {:.3f}".format(*robust(err[name])[:2]) for name in ("polar", "brho", "vertex_z"))
        found = sum(rec.clusters.count for rec in reco[setting])
        kept = sum(int((rec.clusters.labels >= 0).sum()) for rec in reco[setting])
        print(f"| {setting} | {c.mean():.2f} / {np.percentile(c, 90):.2f} / {np.percentile(c, 99):.2f} / {c.max():.2f} "
              f"| {found} | {kept} | {len(results)} | {len(good)} | {np.mean([r.efficiency for r in results]):.6f} | "
              f"{np.mean([r.purity for r in results]):.6f} | {spread} | "
              f"{', '.join(f'{k}: {v}' for k, v in sorted(lost.items()))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--mix", nargs="+", choices=("default", "dense", "protons", "alphas"), default=["default", "dense"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS),
                        help="name=value[,name=value] overrides of cluster.hdbscan's parameters; the first is the reference")
    args = parser.parse_args()
    pin_to_one_cpu()
    print(f"machine: {machine()}")
    for preset in args.mix:
        run_mix(preset, args.events, args.seed, args.settings)


if __name__ == "__main__":
    main()
