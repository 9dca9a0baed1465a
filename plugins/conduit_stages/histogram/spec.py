"""The ``[[stage]] use = "histogram"`` parameters: histograms, gates and where to save them.

::

    [[stage]]
    use = "histogram"

    [[stage.histograms]]
    name = "pid"
    x = "brho"
    x_bins = 200
    x_range = [0.0, 1.5]
    y = "sqrt_dEdx"
    y_bins = 200
    y_range = [0.0, 40.0]

    [[stage.gates]]
    name = "protons"
    histogram = "pid"
    polygon = [[0.1, 5.0], [1.0, 5.0], [1.0, 12.0], [0.1, 12.0]]

    [[stage.histograms]]
    name = "kinematics_protons"
    x = "polar"
    y = "brho"
    gate = "protons"

Every name is checked when the pipeline is loaded (unknown quantities get a
did-you-mean, gates must name an existing histogram of the right dimension,
combinations must not loop), and each problem points at its TOML line.
"""

from __future__ import annotations

import numpy as np
from conduit.params import Params, Problem, did_you_mean, param
from conduit_physics.gates import Gate
from conduit_physics.quantities import QUANTITIES, unknown_quantity_message

__all__ = ["HistogramSpec", "GateSpec", "HistogramParams", "DEFAULT_HISTOGRAMS"]


class HistogramSpec(Params):
    """One 1-D (``x``) or 2-D (``x`` and ``y``) histogram."""

    name: str = param(doc="name shown in the viewer and used in the saved file")
    x: str = param(doc="quantity on the x axis (an estimate field or an event quantity)")
    x_bins: int | None = param(None, "number of x bins; default: the quantity's default", ge=1)
    x_range: tuple[float, float] | None = param(
        None, "[low, high) of the x axis in the quantity's unit (angles in degrees); default: the quantity's"
    )
    y: str | None = param(None, "quantity on the y axis; omit for a 1-D histogram")
    y_bins: int | None = param(None, "number of y bins; default: the quantity's default", ge=1)
    y_range: tuple[float, float] | None = param(None, "[low, high) of the y axis; default: the quantity's")
    gate: str | None = param(None, "only fill entries that pass this gate")

    def check(self) -> list[Problem]:
        problems = []
        if self.x not in QUANTITIES:
            problems.append(Problem(("x",), unknown_quantity_message(self.x)))
        if self.y is not None and self.y not in QUANTITIES:
            problems.append(Problem(("y",), unknown_quantity_message(self.y)))
        for axis in ("x", "y"):
            rng = getattr(self, f"{axis}_range")
            if rng is not None and not rng[0] < rng[1]:
                problems.append(Problem((f"{axis}_range",), f"low must be below high, got {list(rng)}"))
        if self.y is None:
            for key in ("y_bins", "y_range"):
                if getattr(self, key) is not None:
                    problems.append(Problem((key,), f"'{key}' given but no 'y' quantity (1-D histogram)"))
        if not self.name or "/" in self.name:
            problems.append(Problem(("name",), f"histogram name must be non-empty without '/', got {self.name!r}"))
        return problems

    @property
    def dimensions(self) -> int:
        return 1 if self.y is None else 2


class GateSpec(Params):
    """A named condition: a polygon on a 2-D histogram, an interval on a 1-D one, or a combination."""

    name: str = param(doc="gate name, used by histograms' 'gate' and by other gates")
    histogram: str | None = param(None, "histogram whose axes the polygon or interval is drawn on")
    polygon: list[tuple[float, float]] | None = param(
        None, "vertices [[x, y], ...] in the histogram's axis units; a track passes when (x, y) is inside"
    )
    interval: tuple[float, float] | None = param(None, "[low, high) on a 1-D histogram's axis")
    all_of: list[str] | None = param(None, "passes when every named gate passes (and)")
    any_of: list[str] | None = param(None, "passes when at least one named gate passes (or)")
    negate: str | None = param(None, "passes when the named gate fails (not)")

    def kind(self) -> str | None:
        kinds = [k for k in ("polygon", "interval", "all_of", "any_of", "negate") if getattr(self, k) is not None]
        return kinds[0] if len(kinds) == 1 else None

    def resolve(self, axes: dict[str, tuple[str, ...]]) -> Gate:
        """The :class:`~conduit_physics.gates.Gate` this spec describes; ``axes`` are the quantities of each
        histogram by name (a polygon or interval is drawn on its histogram's)."""
        if self.polygon is not None or self.interval is not None:
            return Gate(
                name=self.name,
                kind="polygon" if self.polygon is not None else "interval",
                quantities=axes[self.histogram],  # type: ignore[index]
                histogram=self.histogram,
                polygon=None if self.polygon is None else np.asarray(self.polygon, dtype=np.float64).reshape(-1, 2),
                interval=None if self.interval is None else (float(self.interval[0]), float(self.interval[1])),
            )
        return Gate(name=self.name, kind=self.kind() or "negate", members=tuple(self.members()))

    def members(self) -> list[str]:
        if self.all_of is not None:
            return list(self.all_of)
        if self.any_of is not None:
            return list(self.any_of)
        if self.negate is not None:
            return [self.negate]
        return []

    def check(self) -> list[Problem]:
        problems = []
        kinds = [k for k in ("polygon", "interval", "all_of", "any_of", "negate") if getattr(self, k) is not None]
        if len(kinds) != 1:
            what = "none" if not kinds else ", ".join(kinds)
            problems.append(Problem(("name",), f"gate '{self.name}' needs exactly one of polygon, interval, "
                                               f"all_of, any_of, negate (got {what})"))
            return problems
        kind = kinds[0]
        if kind in ("polygon", "interval") and self.histogram is None:
            problems.append(Problem((kind,), f"a {kind} gate needs 'histogram' (whose axes it is drawn on)"))
        if kind not in ("polygon", "interval") and self.histogram is not None:
            problems.append(Problem(("histogram",), "'histogram' only applies to polygon and interval gates"))
        if kind == "polygon" and self.polygon is not None and len(self.polygon) < 3:
            problems.append(Problem(("polygon",), f"a polygon needs at least 3 vertices, got {len(self.polygon)}"))
        if kind == "interval" and self.interval is not None and not self.interval[0] < self.interval[1]:
            problems.append(Problem(("interval",), f"low must be below high, got {list(self.interval)}"))
        if kind in ("all_of", "any_of") and not self.members():
            problems.append(Problem((kind,), "name at least one gate"))
        return problems


#: The histograms made when ``defaults = true`` (ranges: see quantities; vertex_z spans the detector).
DEFAULT_HISTOGRAMS: tuple[HistogramSpec, ...] = (
    HistogramSpec(name="pid", x="brho", y="sqrt_dEdx"),
    HistogramSpec(name="kinematics", x="polar", y="brho"),
    HistogramSpec(name="polar", x="polar"),
    HistogramSpec(name="vertex_z", x="vertex_z"),
    HistogramSpec(name="beam_spot", x="vertex_x", x_range=(-30.0, 30.0), x_bins=120, y="vertex_y",
                  y_range=(-30.0, 30.0), y_bins=120),
    HistogramSpec(name="cluster_multiplicity", x="cluster_multiplicity"),
)


class HistogramParams(Params):
    """Parameters of the ``histogram`` sink."""

    histograms: list[HistogramSpec] = param([], "histograms to fill ([[stage.histograms]] tables)")
    gates: list[GateSpec] = param([], "gates ([[stage.gates]] tables)")
    defaults: bool = param(
        True, "also make pid (sqrt_dEdx vs brho), kinematics (brho vs polar), polar, vertex_z, beam_spot "
              "(vertex_y vs vertex_x, ±30 mm) and cluster_multiplicity, unless a declared histogram has the same name"
    )
    path: str = param(
        "out/histograms_run_{run:04d}.h5",
        "file the histograms are saved to at the end of the run when no hdf5 stage records them",
    )
    save: bool = param(True, "save the histograms at the end of the run")

    def declared_gates(self) -> dict[str, Gate]:
        """The gates of this stage, resolved on its histograms' axes, by name.

        What :func:`conduit_physics.gates.pipeline_gates` reads: the ``kinematics``
        stage's PID hypotheses name these gates.
        """
        axes = {h.name: (h.x,) if h.y is None else (h.x, h.y) for h in self.all_histograms()}
        return {g.name: g.resolve(axes) for g in self.gates}

    def all_histograms(self) -> list[HistogramSpec]:
        """Declared histograms plus the defaults whose names are free."""
        declared = list(self.histograms)
        if not self.defaults:
            return declared
        names = {h.name for h in declared}
        return declared + [h for h in DEFAULT_HISTOGRAMS if h.name not in names]

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        hists = {h.name: h for h in self.all_histograms()}
        seen: set[str] = set()
        for i, h in enumerate(self.histograms):
            if h.name in seen:
                problems.append(Problem(("histograms", i, "name"), f"histogram '{h.name}' declared twice"))
            seen.add(h.name)
        gates = {g.name: g for g in self.gates}
        seen = set()
        for i, g in enumerate(self.gates):
            if g.name in seen:
                problems.append(Problem(("gates", i, "name"), f"gate '{g.name}' declared twice"))
            seen.add(g.name)
            if g.histogram is not None:
                target = hists.get(g.histogram)
                if target is None:
                    problems.append(Problem(("gates", i, "histogram"), _unknown("histogram", g.histogram, hists)))
                elif g.polygon is not None and target.dimensions != 2:
                    problems.append(Problem(("gates", i, "polygon"),
                                            f"polygon gate on 1-D histogram '{g.histogram}'; use interval"))
                elif g.interval is not None and target.dimensions != 1:
                    problems.append(Problem(("gates", i, "interval"),
                                            f"interval gate on 2-D histogram '{g.histogram}'; use polygon"))
            kind = g.kind()
            for member in g.members():
                if member not in gates:
                    problems.append(Problem(("gates", i, kind or "name"), _unknown("gate", member, gates)))
        for i, g in enumerate(self.gates):
            if _loops(g.name, gates):
                problems.append(Problem(("gates", i, "name"), f"gate '{g.name}' depends on itself"))
        for i, h in enumerate(self.histograms):
            if h.gate is not None and h.gate not in gates:
                problems.append(Problem(("histograms", i, "gate"), _unknown("gate", h.gate, gates)))
        return problems


def _unknown(what: str, name: str, known) -> str:
    hint = did_you_mean(name, known)
    listing = ", ".join(known) if known else "none declared"
    return f"unknown {what} '{name}'{hint}; known: {listing}"


def _loops(start: str, gates: dict[str, GateSpec]) -> bool:
    stack, seen = [m for m in gates[start].members()], set()
    while stack:
        name = stack.pop()
        if name == start:
            return True
        if name in seen or name not in gates:
            continue
        seen.add(name)
        stack.extend(gates[name].members())
    return False
