"""Warm-up for the clustering stages: run one small synthetic cloud through every kernel."""

from __future__ import annotations

from conduit_physics.tracks import warm_cloud


def warm_up_clusterer(stage) -> None:
    """Compile (or load) the kernels by clustering synthetic clouds, whatever the join mode.

    A small and a large cloud: HDBSCAN takes a different minimum-spanning-tree
    kernel above a few hundred points (:data:`.hdbscan_native.DENSE_PRIM_POINTS`).
    """
    for cloud in (warm_cloud(), warm_cloud(400)):
        for join in ("continuity", "overlap"):
            params = stage.params.replace(join=join, min_cloud_size=0)
            original = stage.params
            stage.params = params
            try:
                stage.cluster(cloud)
            finally:
                stage.params = original
