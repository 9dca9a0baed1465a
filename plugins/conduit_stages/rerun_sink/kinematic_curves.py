"""The ``kinematics`` stage's curves over the polar-angle vs B-rho histograms.

Each listed state of the residual puts its ejectile on a curve of polar angle
(deg) against B-rho at the vertex (T·m). :func:`curves_for` collects them once
per run from the :class:`~conduit_physics.kinematics.KinematicCurves` objects
the pipeline's ``kinematics`` stages publish; :func:`add_curves` draws them,
labelled, inside the frame of every 2-D histogram whose x is a polar angle and
whose y a B-rho (``kinematics``: Bρ vs θ by default), in that frame's data
coordinates, so they sit on the data they describe. Points outside the
histogram's range are left out rather than pinned to its edge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .plot2d import Figure, Frame, Lines, Texts

__all__ = ["curves_for", "add_curves", "overlays"]

#: Quantities of the x and y axes a curve belongs on.
POLAR_QUANTITIES = frozenset({"polar", "ejectile_polar"})
BRHO_QUANTITIES = frozenset({"brho", "ejectile_brho"})
_COLORS = ((250, 200, 60), (90, 200, 250), (240, 110, 200), (130, 230, 120), (250, 140, 70), (180, 160, 250))


def curves_for(context: Any) -> list:
    """The curves every :class:`~conduit_physics.kinematics.KinematicCurves` object offers (empty without one)."""
    from conduit_physics.kinematics import KinematicCurves

    return [curve for source in context.shared.all(KinematicCurves) for curve in source.curves()]


def overlays(view: Any) -> bool:
    """True when the histogram ``view`` is polar angle (x) against B-rho (y): the curves belong on it."""
    return (view.y is not None and view.x.quantity.name in POLAR_QUANTITIES
            and view.y.quantity.name in BRHO_QUANTITIES)


def add_curves(fig: Figure, frame: Frame, curves: list) -> None:
    """Draw ``curves`` (polar deg, B-rho T·m) in ``frame``, each labelled above its highest point in range
    (labels of neighbouring states, whose curves nearly coincide, are stacked rather than overprinted)."""
    for k, curve in enumerate(curves):
        inside = ((curve.polar >= frame.x.low) & (curve.polar <= frame.x.high)
                  & (curve.brho >= frame.y.low) & (curve.brho <= frame.y.high))
        if inside.sum() < 2:
            continue
        points = frame.points(curve.polar[inside], curve.brho[inside])
        color = _COLORS[k % len(_COLORS)]
        fig.add(f"curves/{k}", Lines([points], color=color, width=1.5, labels=[curve.label], draw_order=25.0))
        top = points[np.argmin(points[:, 1])]
        lift = (30.0 + 45.0 * k) * frame.width / 1000.0
        fig.add(f"curves/{k}_label", Texts(np.array([[top[0] + 60.0, top[1] - lift]]), [curve.label], color=color))
