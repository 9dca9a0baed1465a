"""conduit_physics: masses, two-body kinematics forward and inverse, stopping powers and range tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conduit_physics.kinematics import KinematicsError, cm_angle, excitation_energy, two_body
from conduit_physics.species import BRHO_CONSTANT, SPECIES, residual_of, species
from conduit_physics.stopping import GASES, WATER, Gas, stopping_power, stopping_table


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



# ---------------------------------------------------------------- inverse kinematics


@pytest.mark.parametrize(
    "beam,target,ejectile,energy", [("10Be", "d", "p", 93.0), ("10Be", "d", "d", 85.0), ("alpha", "alpha", "alpha", 20.0),
                                    ("16O", "d", "p", 160.0)],
)
def test_missing_mass_and_cm_angle_invert_the_two_body_products(beam, target, ejectile, energy):
    b, t, e = species(beam), species(target), species(ejectile)
    r = residual_of(b, t, e)
    checked = 0
    for excitation in (0.0, 0.32, 3.368, 7.5):
        for theta_cm_deg in (2.0, 30.0, 60.0, 90.0, 120.0, 150.0, 178.0):
            theta_cm = math.radians(theta_cm_deg)
            try:
                k = two_body(b.mass, t.mass, e.mass, r.mass + excitation, energy, theta_cm)
            except KinematicsError:
                continue
            ex = excitation_energy(b.mass, t.mass, e.mass, r.mass, energy, k.energy_c, k.theta_c)
            assert ex == pytest.approx(excitation, abs=2e-6)  # keV-level masses of 10^4 MeV: double precision
            assert cm_angle(b.mass, t.mass, e.mass, energy, k.energy_c, k.theta_c) == pytest.approx(theta_cm, abs=1e-9)
            checked += 1
    assert checked >= 20


def test_missing_mass_of_an_impossible_ejectile_is_nan():
    b, t, e = species("10Be"), species("d"), species("p")
    r = residual_of(b, t, e)
    # a backward proton carrying far more momentum than the whole system: no real residual mass
    assert math.isnan(excitation_energy(b.mass, t.mass, e.mass, r.mass, 93.0, 2.0e5, math.pi))
    # more kinetic energy than is available leaves the residual below its ground state
    assert excitation_energy(b.mass, t.mass, e.mass, r.mass, 93.0, 60.0, 0.5) < -10.0


def test_residual_keeps_charge_and_mass_number():
    assert residual_of(species("10Be"), species("d"), species("p")).name == "11Be"
    assert residual_of(species("10Be"), species("d"), species("d")).name == "10Be"
    assert residual_of(species("alpha"), species("alpha"), species("alpha")).name == "alpha"
    with pytest.raises(ValueError, match=r"no mass for the residual \(Z=8, A=19\) of d\(18O,p\)"):
        residual_of(species("18O"), species("d"), species("p"))


def test_brho_and_energy_invert_each_other():
    for name in ("p", "d", "alpha", "10Be"):
        sp = species(name)
        for t in (0.05, 1.0, 20.0, 300.0):
            assert sp.energy_from_brho(sp.brho(t)) == pytest.approx(t, rel=1e-10)
    assert set(SPECIES) >= {"p", "d", "t", "3He", "alpha", "10Be", "11Be"}


def test_energy_before_inverts_energy_after():
    tab = stopping_table(species("p"), GASES["D2"], 600.0, 293.15)
    for t, path in ((1.5, 100.0), (5.0, 1000.0), (20.0, 300.0)):
        after = tab.energy_after(t, path)
        assert 0.0 < after < t
        assert tab.energy_before(after, path) == pytest.approx(t, rel=1e-4)
