"""The pointcloud stage's tie jitter against truth: without it, and with four seeds.

    NUMBA_CACHE_DIR=.numba-cache .venv/bin/python benchmarks/tie_jitter.py [--events 300] [--guns 400]

Simulates the reference mix and the proton and alpha guns once, reconstructs
them with `tie_jitter = 0` and with the default jitter under `jitter_seed`
0..3 (everything else at its defaults), and prints a markdown table: well
reconstructed / particles with >= 30 points (light ejectiles only for the
mix), then the robust bias and resolution of the polar angle (deg), vertex z
(mm) and B-rho (%). The table in docs/analysis.md ("z ties and the tie
jitter") comes from this script.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import physics  # noqa: E402
from _common import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300, help="events of the reference mix")
    parser.add_argument("--guns", type=int, default=400, help="events of each particle gun")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    print(f"`benchmarks/tie_jitter.py --events {args.events} --guns {args.guns} --seed {args.seed}` "
          f"({time.strftime('%Y-%m-%d')}, {machine()})\n")  # fmt: skip
    print("| preset (events) | tie jitter | well reconstructed | polar bias / res. | vertex z bias / res. "
          "| B-rho bias / res. |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    settings = [("0 (whole buckets)", {"tie_jitter": 0.0})]
    settings += [(f"0.001, jitter_seed {s}", {"jitter_seed": s}) for s in range(4)]
    for preset, n, label in (("default", args.events, "default ({n}), d and p ejectiles"),
                             ("protons", args.guns, "protons ({n})"), ("alphas", args.guns, "alphas ({n})")):  # fmt: skip
        _, detector, sims = physics.simulate(preset, n, args.seed)
        for name, pointcloud in settings:
            reco = physics.reconstruct(sims, detector, "cluster.hdbscan", pointcloud)
            results = [r for rec in reco for r in physics.analyse(preset, rec)]
            if preset == "default":
                results = [r for r in results if r.role == "ejectile"]
            good = physics.well_reconstructed(results)
            visible = sum(1 for r in results if r.n_points >= 30)
            e = physics.errors(good)
            p, vz, b = (physics.robust(e[k]) for k in ("polar", "vertex_z", "brho"))
            print(f"| {label.format(n=n)} | {name} | {len(good)} / {visible} | {p[0]:+.3f} / {p[1]:.3f} | "
                  f"{vz[0]:+.2f} / {vz[1]:.2f} | {b[0]:+.2f} / {b[1]:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
