"""``estimate``: Spyral's track estimator, compiled, with the vertex in closed form.

Per cluster (spyral_algorithms.md section 4.1): smoothing splines x(z), y(z),
q(z); direction from the clusterer (NONE is rejected, BACKWARD tracks are
read from the high-z end); circle fit on the first arc; vertex = the point
of that circle closest to the beam axis (closed form, instead of sampling
100,000 circle points); vertex z and polar angle from a straight-line fit of
the distance travelled from the vertex (arc on the fitted circle; Spyral:
the x-y chord) against z near the vertex; B-rho = |B| R /
|sin(polar)|; dE, arclength and dE/dx up to where the track leaves the
small pads. Rejected clusters are counted by reason (:data:`conduit_physics.tracks.STATUS`, through
``TransformStage.count``: the run summary, status line, control panel and HDF5 run file show them).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from conduit.artifacts import Clusters, empty_estimates
from conduit.params import Params, param
from conduit.stage import TransformStage

__all__ = ["EstimateParams", "EstimateStage", "estimate_tracks"]


class EstimateParams(Params):
    """Spyral's EstimateParameters (same defaults) and the estimator's options."""

    min_total_trajectory_points: int = param(30, "clusters with fewer points are not estimated", ge=1)
    smoothing_factor: float = param(100.0, "smoothing-spline lam for x(z), y(z), charge(z)", ge=0)
    polar_from: Literal["arc", "chord"] = param(
        "arc",
        "distance from the vertex in the polar-angle fit: arc length on the fitted circle, or the x-y chord (Spyral; biased low)",
    )
    charge_radius: float = param(
        152.0, "dE sums charge until the track passes this distance from the beam axis (mm; the small-pad region)", gt=0
    )


def estimate_tracks(
    cloud: np.ndarray, clusters: Clusters, params: EstimateParams, detector, event_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(estimates with ESTIMATE_DTYPE, status code per cluster)."""
    from conduit_physics.tracks import fit as trackfit

    k = clusters.count
    if k == 0:
        return empty_estimates(), np.zeros(0, dtype=np.int64)
    results, status = trackfit.estimate_event(
        np.ascontiguousarray(cloud, dtype=np.float64),
        np.ascontiguousarray(clusters.labels, dtype=np.int64),
        np.ascontiguousarray(clusters.cluster_labels, dtype=np.int64),
        np.ascontiguousarray(clusters.directions, dtype=np.int64),
        float(params.smoothing_factor),
        int(params.min_total_trajectory_points),
        float(detector.magnetic_field),
        float(detector.beam_region_radius),
        params.polar_from == "arc",
        float(params.charge_radius),
    )
    out = empty_estimates(int(np.count_nonzero(status == trackfit.OK)))
    trackfit.fill_estimates(results, status, clusters.cluster_labels, clusters.directions, int(event_id), out)
    return out, status


class EstimateStage(TransformStage):
    """Vertex, centre, polar/azimuthal angle, B-rho, dE/dx per track (Spyral's estimator, closed-form vertex)."""

    name = "estimate"
    requires = ("cloud", "clusters")
    provides = ("estimates",)
    Params = EstimateParams

    def warm_up(self) -> None:
        from conduit_physics.tracks import warm_cloud

        cloud = warm_cloud()
        labels = np.full(len(cloud), -1, dtype=np.int32)
        labels[:60] = 0
        clusters = Clusters(labels, np.array([0], dtype=np.int32), np.array([0], dtype=np.int8))
        for mode in ("chord", "arc"):
            estimate_tracks(cloud, clusters, self.params.replace(polar_from=mode), self.context.detector)

    def process(self, event) -> None:
        # from the defining module: the package's lazy export would run its import machinery twice per event
        from conduit_physics.tracks.fit import STATUS

        estimates, status = estimate_tracks(
            event.artifacts["cloud"], event.artifacts["clusters"], self.params, self.context.detector, event.id
        )
        event.artifacts["estimates"] = estimates
        # Every rejected cluster is counted by reason (run summary, status line, panel, HDF5 run file).
        if len(estimates) < len(status):
            for code, n in enumerate(np.bincount(status, minlength=len(STATUS))[1:], start=1):
                self.count(event, STATUS[code], int(n))
