"""``kinematics``: the reaction read from every estimated track, online.

Per row of ``estimates`` (one ``kinematics`` row each, same order):

1. the ejectile hypothesis: the first ``[[stage.hypotheses]]`` whose PID gate
   (a gate the histogram stage declares, on estimate fields: found with
   :func:`conduit_physics.gates.pipeline_gates`) accepts the track, else
   the fixed ``ejectile``, else none (status ``no_hypothesis``);
2. the ejectile's energy at the vertex from B-rho (:mod:`.reaction`), or, with
   ``fit = true``, from the fit of a helix with energy loss to the cluster's
   points (:mod:`.helixfit`), which also refines the vertex and the angles;
3. the beam's energy at the vertex from its energy loss over the vertex z;
4. the residual's excitation energy by missing mass, and the CM angle.

Nothing is dropped: a track without a result keeps its row with a
``status`` (:data:`conduit.artifacts.KINEMATICS_STATUS`) and NaN values; the
tracks without a result, and the failed or unconverged fits, are counted by
reason (``no_hypothesis``, ``fit_failed`` ...; ``TransformStage.count``: the
run summary, status line, control panel and HDF5 run file show them).
"""

from __future__ import annotations

import math

import numpy as np
from conduit.artifacts import FIT_STATUS, KINEMATICS_STATUS, empty_kinematics
from conduit.params import Problem
from conduit.stage import TransformStage
from conduit_physics.gates import gate_quantities, pipeline_gates

from .params import KinematicsParams

__all__ = ["KinematicsStage", "TrackKinematics"]

OK, NO_HYPOTHESIS, NO_BRHO, BEAM_STOPPED, UNPHYSICAL = range(len(KINEMATICS_STATUS))


class TrackKinematics:
    """The per-track computation, without the stage around it (benchmarks and tests use it directly)."""

    def __init__(self, params: KinematicsParams, detector, gates: dict | None = None):
        from .helixfit import fit_tables
        from .reaction import Reaction

        self.params = params
        self.field = float(detector.magnetic_field)
        self.reaction = Reaction(params)
        self.gates = gates or {}
        self.fit_tables = {ej.index: fit_tables(ej.table, ej.species.mass, ej.species.Z)
                           for ej in self.reaction.ejectiles}
        self.max_nodes = int(math.ceil(params.max_path / params.fit_step)) + 2
        self._needed = ()
        if self.gates:
            self._needed = tuple(sorted({q for ej in self.reaction.ejectiles if ej.gate
                                         for q in gate_quantities(ej.gate, self.gates)}))

    def choose(self, event) -> np.ndarray:
        """Index of the hypothesis each estimate row takes (-1: none accepts it)."""
        from conduit_physics.gates import as_level, evaluate_gate
        from conduit_physics.quantities import extract

        estimates = event.get("estimates")
        n = len(estimates)
        choice = np.full(n, -1, dtype=np.int64)
        values, memo = None, {}
        for ej in self.reaction.ejectiles:
            if ej.gate is None:
                mask = np.ones(n, dtype=bool)
            else:
                if values is None:
                    values = extract(event, self._needed)
                mask = as_level(evaluate_gate(ej.gate, self.gates, values, n, memo), True, n)
            choice[(choice < 0) & mask] = ej.index
        return choice

    def compute(self, event) -> np.ndarray:
        """The ``kinematics`` rows of one event (needs ``estimates``, ``cloud`` and ``clusters``)."""
        estimates = event.get("estimates")
        out = empty_kinematics(len(estimates))
        if not len(estimates):
            return out
        choice = self.choose(event)
        cloud = event.get("cloud")
        labels = event.get("clusters").labels
        cluster_labels = event.get("clusters").cluster_labels
        for i, est in enumerate(estimates):
            points = cloud[labels == cluster_labels[int(est["cluster_index"])], :3]
            self.track(est, points, int(choice[i]), out[i : i + 1])
        out["event"] = estimates["event"]
        out["cluster_index"] = estimates["cluster_index"]
        return out

    def track(self, est, points: np.ndarray, hypothesis: int, row: np.ndarray) -> None:
        """Fill ``row`` (a length-1 view of KINEMATICS_DTYPE) for one estimate and its cluster's x, y, z (mm)."""
        from .helixfit import FIT_CONVERGED, FIT_NOT_CONVERGED, fit_track

        r = row[0]
        for name in ("excitation", "theta_cm", "ejectile_energy", "ejectile_brho", "beam_energy"):
            r[name] = np.nan
        r["hypothesis"] = hypothesis
        r["fit_residual"] = np.nan
        vx, vy, vz = float(est["vertex_x"]), float(est["vertex_y"]), float(est["vertex_z"])
        polar, azimuthal = float(est["polar"]), float(est["azimuthal"])
        r["reaction_x"], r["reaction_y"], r["reaction_z"] = vx, vy, vz
        r["ejectile_polar"], r["ejectile_azimuthal"] = polar, azimuthal
        if hypothesis < 0:
            r["status"] = NO_HYPOTHESIS
            return
        ej = self.reaction.ejectiles[hypothesis]
        r["ejectile_Z"], r["ejectile_A"] = ej.species.Z, ej.species.A
        brho = float(est["brho"])
        if not (brho > 0.0 and math.isfinite(brho)):
            r["status"] = NO_BRHO
            return
        chord = 0.0
        if len(points):
            chord = float(np.max(np.hypot(points[:, 0] - vx, points[:, 1] - vy)))
        energy = self.reaction.ejectile_energy(ej, brho, float(est["radius"]), polar, chord)
        p = self.params
        if p.fit:
            q0 = np.array([vx, vy, vz, polar, azimuthal, energy])
            q = np.empty(6)
            if len(points) > p.fit_max_points:
                points = points[np.linspace(0, len(points) - 1, p.fit_max_points).astype(np.int64)]
            pts = np.ascontiguousarray(points, dtype=np.float64)
            tab = self.fit_tables[hypothesis]
            status, iterations, residual = fit_track(
                q0, pts[:, 0].copy(), pts[:, 1].copy(), pts[:, 2].copy(), p.point_sigma, p.beam_spot, tab.mass,
                tab.charge, self.field, tab.energy, tab.range_mm, tab.g, p.fit_step, self.max_nodes,
                p.fit_max_iterations, q)
            r["fit_status"], r["fit_iterations"], r["fit_residual"] = status, iterations, residual
            if status in (FIT_CONVERGED, FIT_NOT_CONVERGED) and np.all(np.isfinite(q)):
                vx, vy, vz, polar, azimuthal, energy = (float(v) for v in q)
                azimuthal %= 2.0 * math.pi
                r["reaction_x"], r["reaction_y"], r["reaction_z"] = vx, vy, vz
                r["ejectile_polar"], r["ejectile_azimuthal"] = polar, azimuthal
        r["ejectile_energy"] = energy
        r["ejectile_brho"] = ej.species.brho(energy)
        beam_energy = self.reaction.beam_energy_at(vz)
        if not beam_energy > 0.0:
            r["status"] = BEAM_STOPPED
            return
        r["beam_energy"] = beam_energy
        ex, theta_cm = self.reaction.missing_mass(ej, beam_energy, energy, polar)
        r["theta_cm"] = theta_cm
        if not math.isfinite(ex):
            r["status"] = UNPHYSICAL
            return
        r["excitation"] = ex
        r["status"] = OK


class KinematicsStage(TransformStage):
    """Reaction kinematics per track: ejectile and beam energy at the vertex, excitation energy, CM angle; track fit."""

    name = "kinematics"
    requires = ("cloud", "clusters", "estimates")
    provides = ("kinematics",)
    Params = KinematicsParams

    @classmethod
    def check_pipeline(cls, params, pipeline):
        """Every hypothesis' gate is a gate of the histogram stage, drawn on estimate fields or event counts."""
        from conduit_physics.quantities import QUANTITIES

        gates = pipeline_gates(pipeline)
        problems = []
        for i, h in enumerate(params.hypotheses):
            if not gates:
                problems.append(Problem(("hypotheses", i, "gate"), f"gate '{h.gate}' needs a histogram stage that "
                                                                   "declares it ([[stage.gates]])"))
                continue
            if h.gate not in gates:
                known = ", ".join(gates)
                problems.append(Problem(("hypotheses", i, "gate"), f"unknown gate '{h.gate}'; the histogram "
                                                                   f"stage declares: {known}"))
                continue
            for q in sorted(gate_quantities(h.gate, gates)):
                if q in QUANTITIES and QUANTITIES[q].artifact != "estimates":
                    problems.append(Problem(("hypotheses", i, "gate"), f"gate '{h.gate}' is drawn on '{q}', which "
                                                                       "this stage computes; use estimate fields"))
        return problems

    @classmethod
    def publish_shared(cls, params, context) -> None:
        """Offer the viewers this reaction's kinematic curves (drawn over polar angle vs B-rho)."""
        from conduit_physics.kinematics import KinematicCurves

        from .curves import ReactionCurves

        context.shared.publish(KinematicCurves, ReactionCurves(params, float(context.detector.detector_length)),
                                 by=cls.name)

    def __init__(self, params, context):
        super().__init__(params, context)
        gates = {}
        if params.hypotheses:
            gates = pipeline_gates(context.pipeline)
            missing = [h.gate for h in params.hypotheses if h.gate not in gates]
            if missing:
                raise ValueError(f"kinematics: no histogram stage in the pipeline declares the gate(s) "
                                 f"{', '.join(missing)} its hypotheses name")
        self.kin = TrackKinematics(params, context.detector, gates)

    def warm_up(self) -> None:
        from .warm import warm_fit

        warm_fit(self.kin)

    def process(self, event) -> None:
        rows = self.kin.compute(event)
        event.artifacts["kinematics"] = rows
        if not len(rows):
            return
        for code, n in enumerate(np.bincount(rows["status"], minlength=len(KINEMATICS_STATUS))):
            if code != OK:
                self.count(event, KINEMATICS_STATUS[code], int(n))
        for code, n in enumerate(np.bincount(rows["fit_status"], minlength=len(FIT_STATUS))):
            if code > 1:  # not_converged, failed (off and converged are no loss)
                self.count(event, f"fit_{FIT_STATUS[code]}", int(n))
