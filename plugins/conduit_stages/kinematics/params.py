"""Parameters of the ``kinematics`` stage: the reaction, how each track's ejectile is chosen, the fit.

::

    [[stage]]
    use = "kinematics"
    beam = "10Be"
    beam_energy = 93.0        # MeV at the entrance window (z = 0)
    target = "d"
    gas = "D2"
    pressure = 600.0          # Torr
    ejectile = "p"            # every track is a proton ...
    states = [0.0, 0.32]      # ... and these 11Be states are drawn over polar angle vs B-rho

    [[stage.hypotheses]]      # ... unless a PID gate of the histogram stage says otherwise
    ejectile = "d"
    gate = "deuterons"
    states = [0.0, 3.368]
"""

from __future__ import annotations

from typing import Literal

from conduit.params import Params, Problem, param

__all__ = ["Hypothesis", "KinematicsParams"]


class Hypothesis(Params):
    """One gated ejectile hypothesis: the tracks a PID gate accepts are this nuclide."""

    ejectile: str = param(doc="ejectile nuclide of the tracks the gate accepts (p, d, t, 3He, alpha, ...)")
    gate: str = param(doc="name of a gate of the histogram stage on estimate fields (e.g. a polygon on pid)")
    states: list[float] = param([0.0], "residual excitation energies (MeV) whose kinematic curves are drawn")


class KinematicsParams(Params):
    """The reaction and how it is read from each track."""

    beam: str = param(doc="beam nuclide (10Be, 16C, alpha, ...; the names of conduit_physics.species)")
    beam_energy: float = param(doc="beam kinetic energy at the entrance window, z = 0 (MeV)", gt=0)
    target: str = param(doc="target nuclide: the gas nucleus the beam reacts with (d, p, alpha, ...)")
    gas: str = param(doc="the gas, for energy losses: D2, H2, He, He-CO2, isobutane, P10, air")
    pressure: float = param(doc="gas pressure (Torr)", gt=0)
    temperature: float = param(293.15, "gas temperature (K)", gt=0)
    ejectile: str | None = param(
        None,
        "ejectile nuclide of every track no gated hypothesis accepts (a fixed charge and mass); "
        "unset: such tracks get status no_hypothesis",
    )
    states: list[float] = param([0.0], "residual excitation energies (MeV) of `ejectile` whose curves are drawn")
    hypotheses: list[Hypothesis] = param(
        [], "gated ejectile hypotheses ([[stage.hypotheses]] tables), tried in order before `ejectile`"
    )
    brho_at: Literal["arc_middle", "vertex"] = param(
        "arc_middle",
        "where along the track the estimate's B-rho holds: 'arc_middle' (the middle of the first arc the "
        "estimator fitted its circle on; the energy lost from the vertex to there is added back) or 'vertex'",
    )
    fit: bool = param(True, "fit each track (helix with energy loss) to its cluster's points, seeded by the estimate")
    fit_step: float = param(4.0, "path-length step of the fitted trajectory (mm)", gt=0)
    fit_max_points: int = param(150, "largest number of cluster points the fit uses (evenly subsampled)", ge=6)
    fit_max_iterations: int = param(30, "Levenberg-Marquardt iteration limit", ge=1)
    point_sigma: float = param(3.0, "position uncertainty of a cloud point (mm): the fit's point weight", gt=0)
    beam_spot: float = param(2.0, "σ of the beam around the z axis at the vertex (mm): the fit's vertex prior", gt=0)
    max_path: float = param(10000.0, "longest path length the fit follows a track (mm; slow spirals run for metres)", gt=0)
    curve_z: float | None = param(
        None, "vertex z (mm) whose beam energy the kinematic curves are drawn at; default: mid drift length"
    )

    def ejectiles(self) -> list[tuple[str, str | None, tuple[float, ...]]]:
        """(ejectile, gate or None, states) in the order they are tried."""
        out: list[tuple[str, str | None, tuple[float, ...]]] = [
            (h.ejectile, h.gate, tuple(h.states)) for h in self.hypotheses
        ]
        if self.ejectile is not None:
            out.append((self.ejectile, None, tuple(self.states)))
        return out

    def check(self) -> list[Problem]:
        from conduit_physics.species import residual_of, species
        from conduit_physics.stopping import gas_by_name

        problems = []
        found = {}
        for key in ("beam", "target"):
            try:
                found[key] = species(getattr(self, key))
            except ValueError as err:
                problems.append(Problem((key,), str(err)))
        try:
            gas_by_name(self.gas)
        except ValueError as err:
            problems.append(Problem(("gas",), str(err)))
        if self.ejectile is None and not self.hypotheses:
            problems.append(Problem(("ejectile",), "name the ejectile, or give [[stage.hypotheses]] with PID gates"))
        paths = [(("hypotheses", i, "ejectile"), h.ejectile) for i, h in enumerate(self.hypotheses)]
        if self.ejectile is not None:
            paths.append((("ejectile",), self.ejectile))
        for path, name in paths:
            try:
                ejectile = species(name)
            except ValueError as err:
                problems.append(Problem(path, str(err)))
                continue
            if len(found) == 2:
                try:
                    residual_of(found["beam"], found["target"], ejectile)
                except ValueError as err:
                    problems.append(Problem(path, str(err)))
        return problems
