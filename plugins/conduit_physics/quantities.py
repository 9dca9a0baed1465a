"""Per-track and per-event quantities read from the standard artifacts: what histograms and gates are drawn on.

The ``histogram`` sink fills its histograms with these, and the ``kinematics``
stage evaluates its PID gates on them; a plugin may use them too
(:func:`extract` gives the values of one event).

Two levels of quantity exist:

* **track** quantities, one value per row of the ``estimates`` artifact
  (every numeric field of :data:`conduit.artifacts.ESTIMATE_DTYPE`) or of
  the ``kinematics`` artifact, whose rows line up with the estimates
  (:data:`conduit.artifacts.KINEMATICS_DTYPE`: ``excitation``, ``theta_cm``,
  ``ejectile_energy``, ...; needs a ``kinematics`` stage);
* **event** quantities, one value per event: ``cluster_multiplicity``
  (clusters found), ``n_tracks`` (estimate rows), ``cloud_points`` (point-cloud
  rows; ``n_points`` is the estimate field, points of one track) and
  ``n_traces`` (rows of the trace matrix).

Angles (``polar``, ``azimuthal``, ``theta_cm``, ``ejectile_polar``,
``ejectile_azimuthal``) are stored in radians in the artifacts but
histogrammed **in degrees**: axes, ranges and gate polygons on angles are in
degrees, because that is how they are read off a kinematics plot.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from conduit.artifacts import ESTIMATE_DTYPE, KINEMATICS_DTYPE
from conduit.params import did_you_mean

__all__ = [
    "Quantity",
    "QUANTITIES",
    "ANGLE_FIELDS",
    "quantity",
    "unknown_quantity_message",
    "extract",
]

#: Track fields converted from radians to degrees when histogrammed.
ANGLE_FIELDS = frozenset({"polar", "azimuthal", "theta_cm", "ejectile_polar", "ejectile_azimuthal"})


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
    #: The artifact a track quantity is read from (its rows line up with the estimates).
    artifact: str = "estimates"

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


def _kinematics_quantities() -> dict[str, Quantity]:
    """The numeric fields of the ``kinematics`` artifact not already named by the estimates."""
    binning: dict[str, tuple[str, tuple[float, float], int]] = {
        "status": ("", (-0.5, 4.5), 5), "hypothesis": ("", (-1.5, 6.5), 8), "ejectile_Z": ("", (-0.5, 10.5), 11),
        "ejectile_A": ("", (-0.5, 20.5), 21), "excitation": ("MeV", (-5.0, 10.0), 300),
        "theta_cm": ("deg", (0.0, 180.0), 180), "ejectile_energy": ("MeV", (0.0, 50.0), 250),
        "ejectile_brho": ("T·m", (0.0, 3.0), 300), "ejectile_polar": ("deg", (0.0, 180.0), 180),
        "ejectile_azimuthal": ("deg", (0.0, 360.0), 360), "beam_energy": ("MeV", (0.0, 200.0), 400),
        "reaction_x": ("mm", (-30.0, 30.0), 120), "reaction_y": ("mm", (-30.0, 30.0), 120),
        "reaction_z": ("mm", (0.0, 1000.0), 250), "fit_status": ("", (-0.5, 3.5), 4),
        "fit_iterations": ("", (-0.5, 49.5), 50), "fit_residual": ("mm", (0.0, 20.0), 200),
    }
    out = {}
    for name in KINEMATICS_DTYPE.names:
        if name in ESTIMATE_DTYPE.names:
            continue
        unit, (lo, hi), bins = binning.get(name, ("", (0.0, 1.0), 100))
        doc = f"kinematics field '{name}'" + (" (degrees; stored in radians)" if name in ANGLE_FIELDS else "")
        out[name] = Quantity(name, "track", unit, (lo, hi), bins, True, doc, artifact="kinematics")
    return out


QUANTITIES: dict[str, Quantity] = {
    **_estimate_quantities(),
    **_kinematics_quantities(),
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
    hint = did_you_mean(name, QUANTITIES)
    return f"unknown quantity '{name}'{hint}; known: {', '.join(QUANTITIES)}"


def extract(event: Any, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Values of ``names`` for one event: float64 arrays, one per track or a single value.

    Track quantities are missing (absent from the result) when the event has no
    ``estimates``, and NaN per track when their own artifact (``kinematics``) is
    absent; event quantities are missing when the artifact they count is absent.
    """
    out: dict[str, np.ndarray] = {}
    estimates = event.get("estimates")
    for name in names:
        q = QUANTITIES[name]
        if q.is_track:
            if estimates is None:
                continue
            rows = estimates if q.artifact == "estimates" else event.get(q.artifact)
            if rows is None or len(rows) != len(estimates):
                out[name] = np.full(len(estimates), np.nan)  # counted as outside, never misaligned
                continue
            values = np.asarray(rows[name], dtype=np.float64)
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
