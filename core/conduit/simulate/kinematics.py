"""Relativistic two-body kinematics a(b, c)d with the target b at rest.

Energies in MeV, masses in MeV/c², angles in radians. The beam travels along
+z; ``c`` is emitted at centre-of-mass polar angle θ* and ``d`` opposite to it.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["TwoBody", "two_body", "KinematicsError"]


class KinematicsError(ValueError):
    """The reaction is below threshold at this beam energy."""


@dataclasses.dataclass(frozen=True)
class TwoBody:
    """Lab kinetic energies and polar angles of the two products."""

    energy_c: float
    theta_c: float
    energy_d: float
    theta_d: float


def two_body(
    beam_mass: float, target_mass: float, mass_c: float, mass_d: float, beam_energy: float, theta_cm: float
) -> TwoBody:
    """Products of a(b, c)d for beam kinetic energy ``beam_energy`` and c's CM polar angle ``theta_cm``.

    ``mass_d`` includes any excitation energy of the residual. Raises
    :class:`KinematicsError` below threshold.
    """
    e_beam = beam_energy + beam_mass
    p_beam = math.sqrt(beam_energy * (beam_energy + 2.0 * beam_mass))
    s = beam_mass**2 + target_mass**2 + 2.0 * target_mass * e_beam
    sqrt_s = math.sqrt(s)
    if sqrt_s <= mass_c + mass_d:
        raise KinematicsError(f"below threshold: √s = {sqrt_s:.3f} MeV < {mass_c + mass_d:.3f} MeV")
    p_star = math.sqrt((s - (mass_c + mass_d) ** 2) * (s - (mass_c - mass_d) ** 2)) / (2.0 * sqrt_s)
    beta = p_beam / (e_beam + target_mass)
    gamma = 1.0 / math.sqrt(1.0 - beta * beta)

    def boost(mass: float, theta: float) -> tuple[float, float]:
        e_star = math.sqrt(p_star**2 + mass**2)
        pz_star = p_star * math.cos(theta)
        p_perp = p_star * math.sin(theta)
        pz = gamma * (pz_star + beta * e_star)
        energy = gamma * (e_star + beta * pz_star)
        return energy - mass, math.atan2(p_perp, pz)

    t_c, th_c = boost(mass_c, theta_cm)
    t_d, th_d = boost(mass_d, math.pi - theta_cm)
    return TwoBody(energy_c=t_c, theta_c=th_c, energy_d=t_d, theta_d=th_d)
