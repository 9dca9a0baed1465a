"""Track geometry for AT-TPC analysis: one public place for what clusterers, estimators and viewers share.

Import the names from here (``from conduit_physics.tracks import circle_fit,
direction_code, helix``); they load on first use, so importing this package
loads neither numpy nor numba.

Geometry, in :mod:`.helix` (numpy only):

* :func:`turning_sense` the project's field convention: +1 when a positive particle's azimuth around its
  circle grows along its path (``magnetic_field >= 0``), else -1;
* :func:`helix`, :func:`helices` the line a track (an ``estimates`` row) follows in the chamber (mm).

Compiled kernels, in :mod:`.fit` (numba; every kernel keeps its callees in that module, so that
numba's cache cannot mix versions):

* :func:`circle_fit` Kasa algebraic least-squares circle in x-y: ``(x_c, y_c, radius, ok)`` (mm);
* :func:`direction_code` ``FORWARD`` / ``BACKWARD`` / ``NONE`` (:class:`conduit.artifacts.Direction`) from the
  rotation sense around the track's circle, azimuth unwrapped along z;
* :func:`smoothing_spline`, :func:`spline_eval`, :func:`smooth_at_points`, :func:`merge_ties` natural cubic
  smoothing splines equal to ``scipy.interpolate.make_smoothing_spline``, ties in z merged into weighted knots;
* :func:`estimate_event` the per-track estimator of the ``estimate`` stage (vertex, circle, angles,
  B-rho, dE/dx), with ``STATUS`` naming why a track was rejected.

Test data, in :mod:`.synthetic`: :func:`warm_cloud`, a small cloud (two helical arcs and scattered points,
cloud layout, sorted by z) that runs every branch of a clusterer or estimator once (warm-up, tests).

Units: mm, radians, T, T·m (see :mod:`conduit.artifacts` for the artifacts' columns).
"""

from __future__ import annotations

from conduit.lazy import lazy_exports

_LAZY = {
    "turning_sense": "helix",
    "helix": "helix",
    "helices": "helix",
    "CHAMBER_RADIUS": "helix",
    "warm_cloud": "synthetic",
    "circle_fit": "fit",
    "direction_code": "fit",
    "smoothing_spline": "fit",
    "spline_eval": "fit",
    "smooth_at_points": "fit",
    "merge_ties": "fit",
    "estimate_event": "fit",
    "STATUS": "fit",
    "RESULT_FIELDS": "fit",
    "KNOT_MERGE_MM": "fit",
}

__all__ = list(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
