"""What a histogram can be filled with: every estimate field and a few event-level counts.

Two levels of quantity exist:

* **track** quantities, one value per row of the ``estimates`` artifact
  (every numeric field of :data:`conduit.artifacts.ESTIMATE_DTYPE`);
* **event** quantities, one value per event: ``cluster_multiplicity``
  (clusters found), ``n_tracks`` (estimate rows), ``cloud_points`` (point-cloud
  rows; ``n_points`` is the estimate field, points of one track) and
  ``n_traces`` (rows of the trace matrix).

Angles (``polar``, ``azimuthal``) are stored in radians in the estimates but
histogrammed **in degrees**: axes, ranges and gate polygons on angles are in
degrees, because that is how they are read off a kinematics plot.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from conduit.artifacts import ESTIMATE_DTYPE

__all__ = [
    "Quantity",
    "QUANTITIES",
    "ANGLE_FIELDS",
    "quantity",
    "unknown_quantity_message",
    "extract",
]

#: Estimate fields converted from radians to degrees when histogrammed.
ANGLE_FIELDS = frozenset({"polar", "azimuthal"})


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One fillable quantity: its level, unit, default binning and whether it needs analysis."""

    name: str
    level: str  # "track" or "event"
    unit: str
    default_range: tuple[float, float]
    default_bins: int
    #: True when the value exists only after the analysis stages ran (not for ``n_traces``).
    needs_analysis: bool = True
    doc: str = ""

    @property
    def is_track(self) -> bool:
        return self.level == "track"

    @property
    def title(self) -> str:
        """How an axis names this quantity (``Bρ``, ``vertex z``); the name itself when it has no title."""
        return TITLES.get(self.name, self.name)


#: Axis titles of the quantities physicists read most (units are added from ``Quantity.unit``).
TITLES = {
    "brho": "Bρ", "sqrt_dEdx": "√(dE/dx)", "dEdx": "dE/dx", "dE": "dE", "polar": "polar angle θ",
    "azimuthal": "azimuth φ", "vertex_x": "vertex x", "vertex_y": "vertex y", "vertex_z": "vertex z",
    "center_x": "circle centre x", "center_y": "circle centre y", "center_z": "circle centre z",
    "radius": "circle radius", "arclength": "path length", "n_points": "points per track", "fit_rms": "fit RMS",
    "cluster_multiplicity": "clusters per event", "n_tracks": "tracks per event",
    "cloud_points": "points per event", "n_traces": "traces per event",
}


def _estimate_quantities() -> dict[str, Quantity]:
    units = {
        "vertex_x": "mm", "vertex_y": "mm", "vertex_z": "mm",
        "center_x": "mm", "center_y": "mm", "center_z": "mm",
        "radius": "mm", "polar": "deg", "azimuthal": "deg", "brho": "T·m",
        "dE": "ADC·TB", "arclength": "mm", "dEdx": "ADC·TB/mm", "sqrt_dEdx": "√(ADC·TB/mm)",
        "direction": "", "n_points": "", "fit_rms": "mm", "event": "", "cluster_index": "",
        "cluster_label": "",
    }
    ranges: dict[str, tuple[tuple[float, float], int]] = {
        "vertex_x": ((-300.0, 300.0), 300), "vertex_y": ((-300.0, 300.0), 300),
        "vertex_z": ((0.0, 1000.0), 250),
        "center_x": ((-300.0, 300.0), 300), "center_y": ((-300.0, 300.0), 300),
        "center_z": ((0.0, 1000.0), 250),
        "radius": ((0.0, 500.0), 250), "polar": ((0.0, 180.0), 180), "azimuthal": ((0.0, 360.0), 360),
        "brho": ((0.0, 3.0), 300), "dE": ((0.0, 5.0e6), 250), "arclength": ((0.0, 1000.0), 200),
        "dEdx": ((0.0, 2.5e4), 250), "sqrt_dEdx": ((0.0, 150.0), 300),
        "direction": ((-1.5, 1.5), 3), "n_points": ((0.0, 2000.0), 200), "fit_rms": ((0.0, 20.0), 200),
        "event": ((0.0, 1.0e6), 1000), "cluster_index": ((-0.5, 19.5), 20), "cluster_label": ((-1.5, 38.5), 40),
    }
    out = {}
    for name in ESTIMATE_DTYPE.names:
        (lo, hi), bins = ranges.get(name, ((0.0, 1.0), 100))
        doc = f"estimate field '{name}'" + (" (degrees; stored in radians)" if name in ANGLE_FIELDS else "")
        out[name] = Quantity(name, "track", units.get(name, ""), (lo, hi), bins, True, doc)
    return out


QUANTITIES: dict[str, Quantity] = {
    **_estimate_quantities(),
    "cluster_multiplicity": Quantity(
        "cluster_multiplicity", "event", "", (-0.5, 15.5), 16, True, "clusters found in the event"
    ),
    "n_tracks": Quantity("n_tracks", "event", "", (-0.5, 15.5), 16, True, "estimated tracks in the event"),
    # Not "n_points": that name is the estimate field (points of one track).
    "cloud_points": Quantity("cloud_points", "event", "", (0.0, 4000.0), 200, True,
                             "points in the event's point cloud"),
    "n_traces": Quantity("n_traces", "event", "", (0.0, 10240.0), 256, False, "rows of the trace matrix"),
}


def quantity(name: str) -> Quantity:
    """The quantity called ``name`` (KeyError when unknown)."""
    return QUANTITIES[name]


def unknown_quantity_message(name: str) -> str:
    """'unknown quantity ... (did you mean ...?); known: ...' for config errors."""
    close = difflib.get_close_matches(name, list(QUANTITIES), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown quantity '{name}'{hint}; known: {', '.join(QUANTITIES)}"


def extract(event: Any, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Values of ``names`` for one event: float64 arrays, one per track or a single value.

    Track quantities are missing (absent from the result) when the event has no
    ``estimates``; event quantities are missing when the artifact they count is absent.
    """
    out: dict[str, np.ndarray] = {}
    estimates = event.get("estimates")
    for name in names:
        q = QUANTITIES[name]
        if q.is_track:
            if estimates is None:
                continue
            values = np.asarray(estimates[name], dtype=np.float64)
            if name in ANGLE_FIELDS:
                values = values * (180.0 / math.pi)
            out[name] = values
            continue
        value: float | None
        if name == "n_traces":
            value = float(event.traces.shape[0])
        elif name == "n_tracks":
            value = None if estimates is None else float(len(estimates))
        elif name == "cluster_multiplicity":
            clusters = event.get("clusters")
            value = None if clusters is None else float(clusters.count)
        elif name == "cloud_points":
            cloud = event.get("cloud")
            value = None if cloud is None else float(len(cloud))
        else:  # pragma: no cover - every event quantity is handled above
            raise KeyError(name)
        if value is not None:
            out[name] = np.array([value])
    return out
