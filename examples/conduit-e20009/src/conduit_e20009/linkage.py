"""A second clustering algorithm: single linkage on the scaled point cloud.

Two points belong to the same cluster when a chain of neighbours closer than
``link_distance`` joins them (the connected components of the fixed-radius
neighbour graph). Features are x, y and z * z_scale, as for cluster.hdbscan.
Small components are noise. Direction comes from the sense of rotation around
the track's fitted circle, as the built-in clusterers do.
"""

from __future__ import annotations

import numpy as np

from conduit.artifacts import Clusters, Direction
from conduit.params import Params, param
from conduit.stage import TransformStage


class LinkageParams(Params):
    """Neighbour distance and minimum cluster size."""

    link_distance: float = param(8.0, "points closer than this are linked (mm, in scaled coordinates)", gt=0)
    z_scale: float = param(0.584, "factor on z before linking (makes the drift span comparable to the pad plane)", gt=0)
    min_cluster_size: int = param(15, "smaller components are noise (points)", ge=2)


class LinkageClusterStage(TransformStage):
    """Single-linkage clustering (fixed-radius neighbour graph) as a drop-in for cluster.hdbscan."""

    name = "cluster.linkage"
    requires = ("cloud",)
    provides = ("clusters",)
    Params = LinkageParams

    def process(self, event) -> None:
        cloud = event.artifacts["cloud"]
        event.artifacts["clusters"] = link_clusters(cloud, self.params, self.context.detector.magnetic_field)


def link_clusters(cloud: np.ndarray, params: LinkageParams, field: float) -> Clusters:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(cloud)
    if n == 0:
        return Clusters.empty(0)
    features = np.column_stack([cloud[:, 0], cloud[:, 1], cloud[:, 2] * params.z_scale])
    pairs = cKDTree(features).query_pairs(params.link_distance, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    keep = sizes[component] >= params.min_cluster_size
    labels = np.full(n, -1, dtype=np.int32)
    kept = np.unique(component[keep])
    for new, old in enumerate(kept):
        labels[component == old] = new
    cluster_labels = np.arange(len(kept), dtype=np.int32)
    directions = np.array([_direction(cloud[labels == k], field) for k in cluster_labels], dtype=np.int8)
    return Clusters(labels=labels, cluster_labels=cluster_labels, directions=directions)


def _direction(points: np.ndarray, field: float) -> int:
    """FORWARD when the track turns the way a positive particle moving to +z turns in this field."""
    if len(points) < 5:
        return Direction.NONE
    order = np.argsort(points[:, 2])
    x, y = points[order, 0], points[order, 1]
    centre = _circle_centre(x, y)
    if not np.all(np.isfinite(centre)):
        return Direction.NONE
    phi = np.unwrap(np.arctan2(y - centre[1], x - centre[0]))
    turning = np.sign(phi[-1] - phi[0])
    # conduit's convention (DetectorParams): with a positive field a forward track turns
    # counter-clockwise, i.e. its azimuth increases with z.
    forward_sense = np.sign(field) if field else 1.0
    if turning == 0:
        return Direction.NONE
    return Direction.FORWARD if turning == forward_sense else Direction.BACKWARD


def _circle_centre(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Centre of the algebraic least-squares circle through (x, y) (mm)."""
    u, v = x - x.mean(), y - y.mean()
    a = np.array([[u @ u, u @ v], [u @ v, v @ v]])
    b = 0.5 * np.array([(u**3).sum() + (u * v * v).sum(), (v**3).sum() + (v * u * u).sum()])
    try:
        c = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.array([np.nan, np.nan])
    return c + np.array([x.mean(), y.mean()])
