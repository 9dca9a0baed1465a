"""The reaction read from one track: ejectile at the vertex, beam at the vertex, missing mass.

Everything here is per track and closed form (tens of microseconds); the
fit lives in :mod:`.helixfit`.

* **Ejectile energy.** The estimate's B-rho comes from a circle fitted to
  the track's first arc (from the vertex to the cluster point farthest from
  it in x-y, at most half a turn). The particle slows down along that arc,
  so its B-rho holds at about the arc's middle, path length
  ``s = R ψ / (2 sin θ)`` from the vertex (ψ = the arc's turning angle,
  R the circle's radius). With ``brho_at = "arc_middle"`` the energy there is
  converted back to the vertex with the range-energy table:
  ``T_vertex = E(R(T_middle) + s)``.
* **Beam energy at the vertex.** The beam enters at z = 0 along the axis:
  ``T_beam = E(R(T_window) − z_vertex)``.
* **Missing mass and CM angle**: :func:`conduit_physics.kinematics.excitation_energy`
  and :func:`~conduit_physics.kinematics.cm_angle`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from conduit_physics.kinematics import cm_angle, excitation_energy
from conduit_physics.species import Species, residual_of, species
from conduit_physics.stopping import StoppingTable, gas_by_name, stopping_table

from .params import KinematicsParams

__all__ = ["Ejectile", "Reaction", "arc_middle_path"]


@dataclasses.dataclass(frozen=True)
class Ejectile:
    """One hypothesis: the ejectile, the residual it leaves, the ejectile's stopping table, its gate."""

    index: int
    species: Species
    residual: Species
    table: StoppingTable
    gate: str | None
    states: tuple[float, ...]

    @property
    def label(self) -> str:
        return f"{self.species.name} ({self.residual.name})"


def arc_middle_path(radius: float, polar: float, chord: float) -> float:
    """Path length (mm) from the vertex to the middle of the estimator's first arc.

    ``radius`` (mm) and ``polar`` (rad) are the estimate's circle and angle,
    ``chord`` (mm) the x-y distance from the vertex to the farthest point of
    the arc (capped at the diameter: the arc ends after half a turn).
    """
    sin_t = abs(math.sin(polar))
    if not (radius > 0.0 and sin_t > 1e-6 and chord > 0.0):
        return 0.0
    turn = 2.0 * math.asin(min(1.0, chord / (2.0 * radius)))
    return 0.5 * radius * turn / sin_t


class Reaction:
    """The stage's reaction: beam, target, ejectile hypotheses and the tables they need."""

    def __init__(self, params: KinematicsParams):
        self.params = params
        self.beam = species(params.beam)
        self.target = species(params.target)
        self.gas = gas_by_name(params.gas)
        self.beam_table = self._table(self.beam)
        self.ejectiles: list[Ejectile] = []
        tables: dict[str, StoppingTable] = {}
        for index, (name, gate, states) in enumerate(params.ejectiles()):
            sp = species(name)
            table = tables.get(sp.name) or tables.setdefault(sp.name, self._table(sp))
            self.ejectiles.append(Ejectile(index, sp, residual_of(self.beam, self.target, sp), table, gate, states))

    def _table(self, sp: Species) -> StoppingTable:
        return stopping_table(sp, self.gas, self.params.pressure, self.params.temperature)

    def beam_energy_at(self, z: float) -> float:
        """Beam kinetic energy (MeV) at vertex depth ``z`` (mm from the window); 0 when it stopped before."""
        if not z > 0.0:
            return float(self.params.beam_energy)
        return self.beam_table.energy_after(float(self.params.beam_energy), float(z))

    def ejectile_energy(self, ejectile: Ejectile, brho: float, radius: float, polar: float, chord: float) -> float:
        """Ejectile kinetic energy (MeV) at the vertex from the estimate's B-rho (T·m), with the arc correction."""
        t = ejectile.species.energy_from_brho(brho)
        if self.params.brho_at == "arc_middle":
            s = arc_middle_path(radius, polar, chord)
            if s > 0.0:
                t = ejectile.table.energy_before(t, s)
        return t

    def missing_mass(self, ejectile: Ejectile, beam_energy: float, energy: float, polar: float) -> tuple[float, float]:
        """(excitation energy MeV, CM angle rad) of the residual for an ejectile of ``energy`` MeV at ``polar`` rad."""
        ex = excitation_energy(self.beam.mass, self.target.mass, ejectile.species.mass, ejectile.residual.mass,
                               beam_energy, energy, polar)
        theta = cm_angle(self.beam.mass, self.target.mass, ejectile.species.mass, beam_energy, energy, polar)
        return ex, theta

    def curve(self, ejectile: Ejectile, excitation: float, beam_energy: float, points: int = 181):
        """(lab polar angle deg, B-rho T·m at the vertex) of ``ejectile`` leaving the residual at ``excitation`` MeV.

        θ* runs from 0 to 180 deg; empty arrays when the state is out of reach.
        """
        from conduit_physics.kinematics import KinematicsError, two_body

        polar, brho = [], []
        for theta_cm in np.linspace(0.0, math.pi, points):
            try:
                k = two_body(self.beam.mass, self.target.mass, ejectile.species.mass,
                             ejectile.residual.mass + excitation, beam_energy, float(theta_cm))
            except KinematicsError:
                return np.zeros(0), np.zeros(0)
            polar.append(math.degrees(k.theta_c))
            brho.append(ejectile.species.brho(k.energy_c))
        return np.asarray(polar), np.asarray(brho)
