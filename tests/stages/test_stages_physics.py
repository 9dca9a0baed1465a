"""The three stages against the simulator's truth (benchmarks/physics.py does the full study).

About 40 events of the reference mix (the ``default`` preset). Tolerances are
on medians of well-reconstructed tracks (see docs/physics.md for the
measured values, which are far inside them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import physics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def simulated():
    params, detector, sims = physics.simulate("default", 40, seed=77)
    return params, detector, sims


@pytest.fixture(scope="module")
def detector(simulated):
    """The simulator's [detector] table: its pulses peak at the bucket of their z, as calibrated data."""
    return simulated[1]


def particle_results(sims, detector, clusterer):
    reco = physics.reconstruct(sims, detector, clusterer)
    return [r for rec in reco for r in physics.analyse("default", rec)]


@pytest.mark.parametrize("clusterer", ["cluster.hdbscan", "cluster.dbscan"])
def test_ejectiles_are_measured_within_tolerance(simulated, detector, clusterer):
    _, _, sims = simulated
    results = particle_results(sims, detector, clusterer)
    ejectiles = [r for r in results if r.role == "ejectile"]
    visible = [r for r in ejectiles if r.n_points >= 30]
    good = physics.well_reconstructed(ejectiles)
    assert len(visible) >= 30
    assert len(good) >= 0.75 * len(visible)
    err = physics.errors(good)
    assert abs(np.median(err["polar"])) < 2.0  # degrees
    assert abs(np.median(err["brho"])) < 5.0  # percent
    assert abs(np.median(err["vertex_z"])) < 10.0  # mm
    assert physics.robust(err["polar"])[1] < 1.5
    # clustering of the ejectiles: efficiency and purity
    clustered = [r for r in visible if r.cluster >= 0]
    assert np.median([r.purity for r in clustered]) >= 0.95
    assert np.median([r.efficiency for r in clustered]) >= 0.9


def test_noise_points_are_rejected(simulated, detector):
    """Random noise hits and noise pads rarely end up inside a track's cluster, while track points do.

    (Measured with seed 77: 7684 of 7708 track points clustered, 107 of 412 noise points.) The sample must
    hold noise to reject and clusters to keep, or the ratio below would pass on nothing.
    """
    _, _, sims = simulated
    reco = physics.reconstruct(sims, detector, "cluster.hdbscan")
    in_cluster = noise = noise_points = track_points = 0
    for rec in reco:
        owner = physics.point_particles(rec.cloud, rec.sim.truth)
        clustered = rec.clusters.labels >= 0
        in_cluster += int(clustered.sum())
        noise += int(np.sum(clustered & (owner < 0)))
        noise_points += int(np.sum(owner < 0))
        track_points += int(np.sum(owner >= 0))
    assert noise_points >= 100 and track_points >= 1000
    assert in_cluster - noise >= 0.9 * track_points  # the tracks are clustered ...
    assert noise <= 0.5 * noise_points  # ... most noise is not ...
    assert noise <= 0.02 * in_cluster  # ... and what is, is a small part of the clusters
