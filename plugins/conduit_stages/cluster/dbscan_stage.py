"""``cluster.dbscan``: a compiled DBSCAN on the same features, then the shared post-processing.

A drop-in for ``cluster.hdbscan`` (same ``clusters`` artifact): change
``use = "cluster.hdbscan"`` to ``use = "cluster.dbscan"``. DBSCAN joins every
chain of points closer than ``eps``; it is fast (a z-sorted window, no
tree) and has no notion of varying density, so crossing tracks stay joined
where hdbscan may split them.
"""

from __future__ import annotations

import numpy as np
from conduit.params import param
from conduit_physics.clustering import Clusterer, ClusterParams


__all__ = ["DbscanParams", "DbscanStage", "dbscan"]


class DbscanParams(ClusterParams):
    """DBSCAN settings plus the shared post-processing."""

    eps: float = param(
        10.0, "neighbourhood radius in the scaled features (mm); hdbscan's cluster_selection_epsilon scale", gt=0
    )
    min_samples: int = param(
        3, "points within eps (itself included) that make a core point (hdbscan's min_points)", ge=1
    )
    min_cluster_size: int = param(10, "smaller clusters are noise (points)", ge=1)


def dbscan(cloud: np.ndarray, params: DbscanParams) -> np.ndarray:
    """DBSCAN labels (-1 noise) of a z-sorted cloud."""
    from .kernels import dbscan_labels

    zs = np.ascontiguousarray(cloud[:, 2] * params.z_scale)
    if len(zs) > 1 and np.any(np.diff(zs) < 0):
        raise ValueError("cluster.dbscan needs a cloud sorted by z")
    return dbscan_labels(
        np.ascontiguousarray(cloud[:, 0]),
        np.ascontiguousarray(cloud[:, 1]),
        zs,
        float(params.eps),
        int(params.min_samples),
        int(params.min_cluster_size),
    )


class DbscanStage(Clusterer):
    """Compiled DBSCAN on (x, y, z*z_scale), then LOF cleaning, direction and joining like cluster.hdbscan."""

    name = "cluster.dbscan"
    Params = DbscanParams

    def labels(self, cloud: np.ndarray) -> np.ndarray:
        return dbscan(cloud, self.params)
