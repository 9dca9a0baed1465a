"""Physics of the simulator: masses, kinematics, stopping powers, helix tracking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conduit_physics.kinematics import KinematicsError, two_body
from conduit_physics.species import BRHO_CONSTANT, species
from conduit_physics.stopping import GASES, WATER, Gas, stopping_power, stopping_table
from conduit.simulate.tracking import track_particle


def test_species_masses_and_brho():
    alpha = species("alpha")
    assert species("4He") is alpha
    # 12C: 12 u exactly, minus 6 electrons.
    assert species("12C").mass == pytest.approx(12 * 931.49410242 - 6 * 0.51099895, abs=1e-6)
    # 10Be from its AME2020 mass excess 12607.49 keV.
    assert species("10Be").mass == pytest.approx(10 * 931.49410242 + 12.6074898 - 4 * 0.51099895, abs=1e-6)
    p = species("p")
    # A 5 MeV proton: p = sqrt(T (T + 2m)) = 96.98 MeV/c, Bρ = 0.3235 T·m.
    assert p.momentum(5.0) == pytest.approx(math.sqrt(5.0 * (5.0 + 2 * p.mass)))
    assert p.brho(5.0) == pytest.approx(p.momentum(5.0) / BRHO_CONSTANT, rel=1e-12)
    assert alpha.brho(10.0) == pytest.approx(alpha.momentum(10.0) / (BRHO_CONSTANT * 2), rel=1e-12)
    with pytest.raises(ValueError, match="unknown species 'Xx'"):
        species("Xx")


def test_two_body_conserves_energy_and_momentum():
    beam, target, light, heavy = species("10Be"), species("d"), species("p"), species("11Be")
    t_beam = 93.0
    for theta_cm in (0.1, 1.0, 2.0, 3.0):
        k = two_body(beam.mass, target.mass, light.mass, heavy.mass, t_beam, theta_cm)
        e_in = t_beam + beam.mass + target.mass
        e_out = k.energy_c + light.mass + k.energy_d + heavy.mass
        assert e_out == pytest.approx(e_in, abs=1e-9)
        pc, pd = light.momentum(k.energy_c), heavy.momentum(k.energy_d)
        assert pc * math.cos(k.theta_c) + pd * math.cos(k.theta_d) == pytest.approx(beam.momentum(t_beam), abs=1e-9)
        assert pc * math.sin(k.theta_c) == pytest.approx(pd * math.sin(k.theta_d), abs=1e-9)


def test_two_body_elastic_recoil_matches_nonrelativistic_formula():
    # Elastic recoil of the target: T = 4 m M / (m + M)² · T_beam · cos²θ_lab (non-relativistic, ~1 % here).
    beam, d = species("10Be"), species("d")
    k = two_body(beam.mass, d.mass, d.mass, beam.mass, 93.0, math.radians(120.0))
    expected = 4 * d.mass * beam.mass / (d.mass + beam.mass) ** 2 * 93.0 * math.cos(k.theta_c) ** 2
    assert k.energy_c == pytest.approx(expected, rel=0.01)
    # The recoil leaves at half its CM angle (non-relativistic elastic scattering).
    assert k.theta_c == pytest.approx(math.radians(120.0) / 2, rel=0.01)


def test_two_body_below_threshold_raises():
    beam, d = species("10Be"), species("d")
    with pytest.raises(KinematicsError, match="below threshold"):
        two_body(beam.mass, d.mass, species("p").mass, species("11Be").mass + 50.0, 10.0, 1.0)


def test_bethe_matches_pstar_for_protons_in_water():
    water = Gas("water", ((WATER, 1.0),))
    # NIST PSTAR: electronic stopping of 10 MeV protons in liquid water 45.67 MeV cm²/g; 100 MeV: 7.289.
    s = stopping_power(species("p"), water, np.array([10.0, 100.0]), 1.0) * 10.0  # MeV/mm at 1 g/cm³ -> MeV cm²/g
    assert s[0] == pytest.approx(45.67, rel=0.02)
    assert s[1] == pytest.approx(7.289, rel=0.02)


def test_ranges_in_air_match_nist_within_the_documented_accuracy():
    air = GASES["air"]
    assert air.density(760.0, 288.15) == pytest.approx(1.225e-3, rel=0.01)
    # 5.3 MeV alphas (Po-210) stop in about 4.0 cm of air (ASTAR CSDA 4.0 cm); protons of 1 MeV in 2.3 cm (PSTAR).
    alpha = stopping_table(species("alpha"), air, 760.0, 288.15)
    proton = stopping_table(species("p"), air, 760.0, 288.15)
    assert float(alpha.residual_range(5.3)) == pytest.approx(40.0, rel=0.15)
    assert float(proton.residual_range(1.0)) == pytest.approx(23.0, rel=0.15)


def test_stopping_is_positive_continuous_and_peaked():
    tab = stopping_table(species("p"), GASES["D2"], 600.0, 293.15)
    s = tab.stopping
    assert np.all(s > 0)
    assert np.all(np.abs(np.diff(np.log(s))) < 0.02)  # no jumps on the 2000-point grid
    peak = tab.energy[np.argmax(s)]
    assert 0.01 < peak < 0.2  # the Bragg peak of protons in hydrogen lies at tens of keV
    assert np.all(np.diff(tab.range_mm) > 0)
    # energy_after inverts the range table.
    assert tab.energy_after(5.0, 0.0) == pytest.approx(5.0, rel=1e-6)
    assert tab.energy_after(5.0, float(tab.residual_range(5.0)) + 1.0) == 0.0


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
