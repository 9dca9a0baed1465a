"""Warm-up for the clustering stages: run one small synthetic cloud through every kernel."""

from __future__ import annotations

from conduit_physics.tracks import warm_cloud


def warm_up_clusterer(stage) -> None:
    """Compile (or load) the kernels by clustering a synthetic cloud, whatever the join mode."""
    cloud = warm_cloud()
    for join in ("continuity", "overlap"):
        params = stage.params.replace(join=join, min_cloud_size=0)
        original = stage.params
        stage.params = params
        try:
            stage.cluster(cloud)
        finally:
            stage.params = original
