"""Kinematic curves: where each listed state of the residual puts its ejectile on polar angle vs B-rho.

The ``kinematics`` stage offers them to viewers as the shared object
:class:`conduit_physics.kinematics.KinematicCurves` (:class:`ReactionCurves`);
the rerun sink draws them over the ``kinematics`` histogram.
:func:`kinematic_curves` takes the stage's parameters and returns one
:class:`~conduit_physics.kinematics.Curve` per (hypothesis, state), in the
histogram's units: polar angle in degrees, B-rho in T·m. The B-rho is the
ejectile's at the vertex; the beam energy is the one at ``curve_z``.
"""

from __future__ import annotations

from conduit_physics.kinematics import Curve, KinematicCurves

from .params import KinematicsParams

__all__ = ["ReactionCurves", "kinematic_curves"]


class ReactionCurves(KinematicCurves):
    """The curves of one ``kinematics`` stage, computed on first use (a few ms per state)."""

    def __init__(self, params: KinematicsParams, detector_length: float):
        self.params = params
        self.detector_length = detector_length
        self._curves: list[Curve] | None = None

    def curves(self) -> list[Curve]:
        if self._curves is None:
            self._curves = kinematic_curves(self.params, self.detector_length)
        return self._curves


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
