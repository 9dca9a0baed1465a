"""The simulator's helix tracking with continuous energy loss (the physics library: tests/physics/)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conduit_simulate.tracking import track_particle
from conduit_physics.species import species
from conduit_physics.stopping import GASES, stopping_table


def _track(name, energy, theta, phi=0.3, z0=500.0, bfield=2.85, step=1.0, length=1000.0, radius=292.0):
    sp = species(name)
    tab = stopping_table(sp, GASES["D2"], 600.0, 293.15)
    out = [np.zeros(200_000) for _ in range(4)]
    n = track_particle(
        0.0,
        0.0,
        z0,
        theta,
        phi,
        energy,
        sp.mass,
        float(sp.Z),
        bfield,
        tab.log_t0,
        tab.dlog,
        tab.stopping,
        length,
        radius,
        step,
        1e-4,
        *out,
        0,
    )
    return [o[:n] for o in out], tab


def _fit_circle(x, y):
    a = np.column_stack([x, y, np.ones_like(x)])
    c = np.linalg.lstsq(a, x**2 + y**2, rcond=None)[0]
    xc, yc = c[0] / 2, c[1] / 2
    return xc, yc, math.sqrt(c[2] + xc**2 + yc**2)


@pytest.mark.parametrize("name,energy,polar", [("p", 5.0, 60.0), ("d", 6.0, 100.0), ("alpha", 20.0, 45.0)])
def test_helix_radius_is_brho_sin_theta_over_b(name, energy, polar):
    (x, y, z, de), _ = _track(name, energy, math.radians(polar))
    near = slice(0, 40)  # the first 40 mm, where the energy loss has not yet shrunk the circle
    _, _, r = _fit_circle(x[near], y[near])
    sp = species(name)
    expected = sp.brho(energy) * math.sin(math.radians(polar)) / 2.85 * 1000.0
    assert r == pytest.approx(expected, rel=0.01)


def test_positive_field_turns_positive_ions_counter_clockwise():
    (x, y, z, de), _ = _track("p", 5.0, math.radians(60.0), phi=0.0)
    xc, yc, _ = _fit_circle(x[:50], y[:50])
    angle = np.unwrap(np.arctan2(y[:50] - yc, x[:50] - xc))
    assert np.all(np.diff(angle) > 0)  # azimuth around the centre increases: counter-clockwise
    assert np.all(np.diff(z[:50]) > 0)  # and it moves towards the pad plane at 60 deg
    (x, y, z, de), _ = _track("p", 5.0, math.radians(60.0), phi=0.0, bfield=-2.85)
    xc, yc, _ = _fit_circle(x[:50], y[:50])
    assert np.all(np.diff(np.unwrap(np.arctan2(y[:50] - yc, x[:50] - xc))) < 0)


def test_track_stops_at_its_range_and_deposits_its_energy():
    (x, y, z, de), tab = _track("alpha", 5.0, math.radians(60.0))
    assert de.sum() == pytest.approx(5.0, rel=1e-9)
    path = np.sum(np.hypot(np.hypot(np.diff(x), np.diff(y)), np.diff(z)))
    assert path == pytest.approx(float(tab.residual_range(5.0)), rel=0.02)
    # Bragg peak: energy per 2 mm of path peaks in the last 10 % of the path, at about 3 times its initial value.
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.hypot(np.diff(x), np.diff(y)), np.diff(z)))])
    per_bin = np.bincount((s // 2.0).astype(int), weights=de)[:-1]  # the last bin is partial
    assert np.argmax(per_bin) > 0.9 * len(per_bin)
    assert per_bin.max() > 2.5 * per_bin[1:4].mean()


def test_track_leaves_through_the_chamber_wall_and_the_pad_plane():
    (x, y, z, de), _ = _track("p", 30.0, math.radians(80.0))
    assert np.hypot(x, y).max() <= 292.0
    assert np.hypot(x[-1], y[-1]) > 285.0
    assert de.sum() < 30.0
    (x, y, z, de), _ = _track("p", 30.0, math.radians(10.0))
    assert z.max() <= 1000.0 and z[-1] > 998.0
