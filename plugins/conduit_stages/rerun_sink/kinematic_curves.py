"""The ``kinematics`` stage's curves in the viewer: line strips over polar angle (deg) vs B-rho (T·m).

Drawn once, as static data, at :data:`CURVES` (one child entity per curve),
in the data coordinates of the polar-angle vs B-rho histogram (x = polar in
degrees, y = B-rho in T·m), so that the view showing that histogram in data
coordinates overlays them by including ``CURVES/**`` (a view of their own
would be useless: 2-D views keep x and y at the same scale, and these axes
differ by two orders of magnitude). Nothing is drawn when the pipeline has no
``kinematics`` stage.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["CURVES", "log_curves"]

#: Entity path of the curves (below the sink's prefix).
CURVES = "/kinematics/curves"
_COLORS = ((250, 200, 60), (90, 200, 250), (240, 110, 200), (130, 230, 120), (250, 140, 70), (180, 160, 250))


def log_curves(sink: Any) -> int:
    """Log the curves of every ``kinematics`` stage of the pipeline as statics; return how many."""
    stages = sink.context.stage_params("kinematics")
    if not stages:
        return 0
    from conduit_stages.kinematics.curves import kinematic_curves

    curves = []
    for params in stages:
        curves += kinematic_curves(params, float(sink.context.detector.detector_length))
    for i, curve in enumerate(curves):
        strip = np.column_stack([curve.polar, curve.brho])
        sink._static(f"{CURVES}/{_slug(curve.label)}",
                     sink.rr.LineStrips2D([strip], radii=sink.rr.components.Radius.ui_points(1.5),
                                          colors=_COLORS[i % len(_COLORS)], labels=curve.label))
    return len(curves)


def _slug(label: str) -> str:
    """'11Be(0.32 MeV) p' -> '11Be_0.32_MeV_p': an entity path part."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_")
