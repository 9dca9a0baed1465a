"""Gates as SpecTcl users know them: named conditions on quantities, reusable on any histogram.

The ``histogram`` stage declares gates (``[[stage.gates]]``) and fills gated
histograms; the ``kinematics`` stage picks each track's ejectile with them.
Other stages find the gates a pipeline declares with :func:`pipeline_gates`.

A gate is evaluated once per event on the quantities it is drawn on and gives
a pass mask at its own level: one value per track when any of its quantities
is a track quantity, else one value for the event. Used on a histogram of the
other level, a track mask counts the event when *any* track passes, and an
event mask applies to every track of the event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from .quantities import QUANTITIES

__all__ = ["Gate", "Mask", "inside_polygon", "evaluate_gate", "as_level", "gate_quantities", "pipeline_gates"]


@dataclasses.dataclass(frozen=True)
class Mask:
    """A pass mask: per track (``track`` True, length = tracks) or per event (length 1)."""

    track: bool
    values: np.ndarray  # bool


@dataclasses.dataclass(frozen=True)
class Gate:
    """A resolved gate: polygon / interval on named quantities, or a combination of other gates."""

    name: str
    kind: str  # "polygon" | "interval" | "all_of" | "any_of" | "negate"
    quantities: tuple[str, ...] = ()  # axes the shape is drawn on
    histogram: str | None = None
    polygon: np.ndarray | None = None  # (K, 2)
    interval: tuple[float, float] | None = None
    members: tuple[str, ...] = ()

    def is_shape(self) -> bool:
        return self.kind in ("polygon", "interval")


def inside_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """True where (x, y) lies inside ``polygon`` (K, 2), by the even-odd crossing rule (vectorised).

    Points exactly on an edge may fall either side; NaN is outside.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    inside = np.zeros(x.shape, dtype=bool)
    px, py = polygon[:, 0], polygon[:, 1]
    j = len(polygon) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(len(polygon)):  # loop over the few edges, vectorised over points
            straddles = (py[i] > y) != (py[j] > y)
            x_cross = (px[j] - px[i]) * (y - py[i]) / (py[j] - py[i]) + px[i]
            inside ^= straddles & (x < x_cross)
            j = i
    return inside


def as_level(mask: Mask, track: bool, n_tracks: int) -> np.ndarray:
    """``mask`` expressed at a histogram's level: per track (length n_tracks) or per event (length 1)."""
    if track:
        if mask.track:
            return mask.values
        return np.broadcast_to(mask.values, (n_tracks,))
    if mask.track:
        return np.array([bool(mask.values.any())])
    return mask.values


def evaluate_gate(
    name: str, gates: dict[str, Gate], values: dict[str, np.ndarray], n_tracks: int, memo: dict[str, Mask]
) -> Mask:
    """Pass mask of gate ``name`` for one event (memoised in ``memo`` for that event).

    ``values`` holds every needed quantity: track quantities as arrays of
    length ``n_tracks``, event quantities as length-1 arrays (absent when the
    event lacks the artifact; the gate then fails).
    """
    if name in memo:
        return memo[name]
    gate = gates[name]
    if gate.is_shape():
        track = any(QUANTITIES[q].is_track for q in gate.quantities)
        size = n_tracks if track else 1
        if any(q not in values for q in gate.quantities):
            mask = Mask(track, np.zeros(size, dtype=bool))
        else:
            cols = [np.broadcast_to(values[q], (size,)) for q in gate.quantities]
            if gate.kind == "polygon":
                assert gate.polygon is not None
                passed = inside_polygon(cols[0], cols[1], gate.polygon)
            else:
                assert gate.interval is not None
                lo, hi = gate.interval
                passed = (cols[0] >= lo) & (cols[0] < hi)
            mask = Mask(track, np.asarray(passed, dtype=bool))
    else:
        parts = [evaluate_gate(m, gates, values, n_tracks, memo) for m in gate.members]
        track = any(p.track for p in parts)
        arrays = [as_level(p, track, n_tracks) for p in parts]
        if gate.kind == "all_of":
            passed = np.logical_and.reduce(arrays) if len(arrays) > 1 else arrays[0].copy()
        elif gate.kind == "any_of":
            passed = np.logical_or.reduce(arrays) if len(arrays) > 1 else arrays[0].copy()
        else:  # negate
            passed = ~arrays[0]
        mask = Mask(track, np.asarray(passed, dtype=bool))
    memo[name] = mask
    return mask


def gate_quantities(name: str, gates: dict[str, Gate]) -> set[str]:
    """Every quantity gate ``name`` needs, through its members."""
    gate = gates[name]
    out = set(gate.quantities)
    for member in gate.members:
        out |= gate_quantities(member, gates)
    return out


def pipeline_gates(pipeline: Iterable[tuple[str, Any]]) -> dict[str, Gate]:
    """Every gate the pipeline's stages declare, by name.

    ``pipeline`` is ``(use, params)`` per stage (``RunContext.pipeline``, or
    what ``Stage.check_pipeline`` receives); a stage declares gates when its
    parameters have ``declared_gates() -> dict[str, Gate]`` (the ``histogram``
    stage does).
    """
    gates: dict[str, Gate] = {}
    for _, params in pipeline:
        declared = getattr(params, "declared_gates", None)
        if callable(declared):
            gates.update(declared())
    return gates
