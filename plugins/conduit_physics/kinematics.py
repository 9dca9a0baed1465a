"""Relativistic two-body kinematics a(b, c)d with the target b at rest.

Energies in MeV, masses in MeV/c², angles in radians. The beam travels along
+z; ``c`` is emitted at centre-of-mass polar angle θ* and ``d`` opposite to it.

* :func:`two_body`: forward, the products' lab energies and angles from θ*
  (what a simulator samples, and the kinematic curves of a state);
* :func:`excitation_energy` and :func:`cm_angle`: inverse, the residual's
  excitation energy (missing mass) and θ* from the measured ejectile (what an
  analysis computes per track);
* :class:`Curve` and :class:`KinematicCurves`: a state's curve of polar angle
  against B-rho, and the interface of the shared object (:mod:`conduit.shared`) through which
  the ``kinematics`` stage offers its curves to viewers (the ``rerun`` sink
  draws them over the polar angle vs B-rho histograms).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

__all__ = ["TwoBody", "two_body", "KinematicsError", "excitation_energy", "cm_angle", "Curve", "KinematicCurves"]


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


def excitation_energy(
    beam_mass: float,
    target_mass: float,
    ejectile_mass: float,
    residual_mass: float,
    beam_energy: float,
    ejectile_energy: float,
    ejectile_theta: float,
) -> float:
    """Excitation energy (MeV) of the residual d of a(b, c)d by missing mass; NaN when unphysical.

    ``beam_energy`` and ``ejectile_energy`` are kinetic energies (MeV) at the
    vertex, ``ejectile_theta`` the ejectile's lab polar angle (rad) from the
    beam axis (+z), ``residual_mass`` the residual's ground-state mass (MeV).
    The target b is at rest.
    """
    e_beam = beam_energy + beam_mass
    p_beam2 = beam_energy * (beam_energy + 2.0 * beam_mass)
    e_c = ejectile_energy + ejectile_mass
    p_c2 = ejectile_energy * (ejectile_energy + 2.0 * ejectile_mass)
    e_d = e_beam + target_mass - e_c
    p_d2 = p_beam2 + p_c2 - 2.0 * math.sqrt(p_beam2 * p_c2) * math.cos(ejectile_theta)
    m2 = e_d * e_d - p_d2
    if not m2 > 0.0:
        return math.nan
    return math.sqrt(m2) - residual_mass


def cm_angle(
    beam_mass: float, target_mass: float, ejectile_mass: float, beam_energy: float, ejectile_energy: float,
    ejectile_theta: float,
) -> float:
    """The ejectile's centre-of-mass polar angle θ* (rad) from its lab kinetic energy (MeV) and angle (rad).

    The frame is that of a + b with the target b at rest and the beam along +z.
    """
    e_total = beam_energy + beam_mass + target_mass
    p_beam = math.sqrt(beam_energy * (beam_energy + 2.0 * beam_mass))
    beta = p_beam / e_total
    gamma = 1.0 / math.sqrt(1.0 - beta * beta)
    e_c = ejectile_energy + ejectile_mass
    p_c = math.sqrt(ejectile_energy * (ejectile_energy + 2.0 * ejectile_mass))
    pz_star = gamma * (p_c * math.cos(ejectile_theta) - beta * e_c)
    return math.atan2(p_c * math.sin(ejectile_theta), pz_star)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One state's curve: the ejectile's lab ``polar`` angle (deg) and ``brho`` (T·m) as θ* runs from 0 to 180 deg."""

    label: str  #: e.g. "11Be(0.32 MeV) p"
    ejectile: str
    excitation: float  #: of the residual (MeV)
    polar: Any  #: numpy float64 array (deg)
    brho: Any  #: numpy float64 array (T·m), same length


class KinematicCurves(abc.ABC):
    """Shared with the run: kinematic curves to draw over polar angle vs B-rho histograms (published by ``kinematics``)."""

    @abc.abstractmethod
    def curves(self) -> list[Curve]:
        """The curves of every listed state, in the histogram's units (deg, T·m)."""
