"""Kinematic curves: where each listed state of the residual puts its ejectile on polar angle vs B-rho.

Public API for viewers (the rerun sink draws these over the ``kinematics``
histogram): :func:`kinematic_curves` takes the ``kinematics`` stage's
parameters and returns one :class:`Curve` per (hypothesis, state), in the
histogram's units: polar angle in degrees, B-rho in T·m. The B-rho is the
ejectile's at the vertex; the beam energy is the one at ``curve_z``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .params import KinematicsParams

__all__ = ["Curve", "kinematic_curves"]


@dataclasses.dataclass(frozen=True)
class Curve:
    """One state's curve: ``polar`` (deg) and ``brho`` (T·m) as the CM angle runs from 0 to 180 deg."""

    label: str
    ejectile: str
    excitation: float  # MeV
    polar: np.ndarray
    brho: np.ndarray


def kinematic_curves(params: KinematicsParams, detector_length: float = 1000.0, points: int = 181) -> list[Curve]:
    """Curves of every hypothesis' listed states; states out of reach at that beam energy are left out."""
    from .reaction import Reaction

    reaction = Reaction(params)
    z = params.curve_z if params.curve_z is not None else 0.5 * detector_length
    beam_energy = reaction.beam_energy_at(z)
    out = []
    if not beam_energy > 0.0:
        return out
    for ej in reaction.ejectiles:
        for excitation in ej.states:
            polar, brho = reaction.curve(ej, excitation, beam_energy, points)
            if len(polar):
                label = f"{ej.residual.name}({excitation:g} MeV) {ej.species.name}"
                out.append(Curve(label, ej.species.name, float(excitation), polar, brho))
    return out
