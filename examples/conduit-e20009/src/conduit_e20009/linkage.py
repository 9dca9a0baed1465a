"""A second clustering algorithm: single linkage on the scaled point cloud.

Two points belong to the same cluster when a chain of neighbours closer than
``link_distance`` joins them (the connected components of the fixed-radius
neighbour graph). Features are x, y and z * z_scale, as for cluster.hdbscan.
Small components are noise.

Only the labels are this package's: it subclasses the public
:class:`conduit_physics.clustering.Clusterer`, which does the size cut, LOF
cleaning, direction, joining of track pieces and warm-up exactly as for the
built-in clusterers (docs/writing-a-plugin.md, "Write your own clusterer").
"""

from __future__ import annotations

import numpy as np
from conduit import param
from conduit_physics.clustering import Clusterer, ClusterParams, scaled_features


class LinkageParams(ClusterParams):
    """Neighbour distance and minimum cluster size, plus the shared post-processing's parameters."""

    link_distance: float = param(8.0, "points closer than this are linked (mm, in scaled coordinates)", gt=0)
    min_cluster_size: int = param(15, "smaller components are noise (points)", ge=2)


class LinkageClusterStage(Clusterer):
    """Single-linkage clustering (fixed-radius neighbour graph) as a drop-in for cluster.hdbscan."""

    name = "cluster.linkage"
    Params = LinkageParams

    def labels(self, cloud: np.ndarray) -> np.ndarray:
        return link_labels(scaled_features(cloud, self.params.z_scale), self.params)


def link_labels(features: np.ndarray, params: LinkageParams) -> np.ndarray:
    """Component of each row of (N, 3) ``features`` (-1: in a component smaller than min_cluster_size)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(features)
    pairs = cKDTree(features).query_pairs(params.link_distance, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    return np.where(sizes[component] >= params.min_cluster_size, component, -1)
