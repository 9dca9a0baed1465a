"""``cluster.hdbscan``: Spyral's clustering, HDBSCAN labels equal to the hdbscan package's, then the shared post-processing.

The labels are computed by :mod:`.hdbscan_native` (compiled) unless ``algorithm`` names one of the
hdbscan package's own algorithms.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from conduit.params import param
from conduit_physics.clustering import Clusterer, ClusterParams, scaled_features


__all__ = ["HdbscanParams", "HdbscanStage", "hdbscan_labels"]


class HdbscanParams(ClusterParams):
    """HDBSCAN settings (Spyral's HdbscanParameters and defaults) plus the shared post-processing."""

    min_points: int = param(3, "HDBSCAN min_samples: neighbours that make a core point", ge=1)
    min_size_scale_factor: float = param(
        0.03, "min_cluster_size = max(int(factor * cloud size), min_size_lower_cutoff)", ge=0
    )
    min_size_lower_cutoff: int = param(10, "smallest min_cluster_size (points)", ge=2)
    cluster_selection_epsilon: float = param(10.0, "HDBSCAN cluster_selection_epsilon (mm, scaled features)", ge=0)
    allow_single_cluster: bool = param(
        True, "HDBSCAN allow_single_cluster: an event with one track may give one cluster (Spyral: false)"
    )
    algorithm: Literal["native", "prims_kdtree", "boruvka_kdtree", "generic", "best"] = param(
        "native",
        "'native': compiled here, labels equal to the hdbscan package's prims_kdtree (docs/analysis.md); "
        "otherwise the hdbscan package with that minimum-spanning-tree algorithm",
    )
    reclean_joined: Literal["always", "changed", "never"] = param(
        "changed",
        "second LOF cleaning of a joined cluster: 'changed': only when the first cleaning removed points from one "
        "of its pieces (this stage's default); 'always' (Spyral); 'never' (docs/analysis.md)",
    )
    lof_k_max: int = param(
        100,
        "largest LOF n_neighbors (caps factor * cluster size on clusters above 1,000 points: this stage's default); "
        "0: no cap (Spyral; docs/analysis.md)",
        ge=0,
    )


def hdbscan_labels(features: np.ndarray, params: HdbscanParams) -> np.ndarray:
    """HDBSCAN labels (-1 noise) of (N, 3) features with Spyral's size rule."""
    n = len(features)
    min_cluster_size = max(int(params.min_size_scale_factor * n), params.min_size_lower_cutoff)
    if params.algorithm == "native":
        from .hdbscan_native import hdbscan_native

        return hdbscan_native(
            features,
            min_cluster_size,
            params.min_points,
            float(params.cluster_selection_epsilon),
            params.allow_single_cluster,
        )
    import hdbscan

    # The module-level function is hdbscan.HDBSCAN.fit without the estimator's
    # repeated input validation (about 1 ms per event).
    labels = hdbscan.hdbscan(
        features,
        min_cluster_size=min_cluster_size,
        min_samples=params.min_points,
        cluster_selection_epsilon=float(params.cluster_selection_epsilon),
        allow_single_cluster=params.allow_single_cluster,
        algorithm=params.algorithm,
        core_dist_n_jobs=1,
    )[0]
    return labels


class HdbscanStage(Clusterer):
    """HDBSCAN on (x, y, z*z_scale), LOF cleaning, direction, track joining (Spyral's clustering)."""

    name = "cluster.hdbscan"
    Params = HdbscanParams

    def labels(self, cloud: np.ndarray) -> np.ndarray:
        return hdbscan_labels(scaled_features(cloud, self.params.z_scale), self.params)
