"""The clusterer base class: a subclass gives each cloud point a label, the base does everything else."""

from __future__ import annotations

import numpy as np
from conduit.artifacts import Clusters
from conduit.stage import StageDefinitionError, TransformStage

from .postprocessing import ClusterParams, postprocess

__all__ = ["Clusterer", "ClusterLabelsError"]


class ClusterLabelsError(ValueError):
    """``labels(cloud)`` returned something that is not one integer label per cloud row."""


class Clusterer(TransformStage):
    """Base of every clusterer, built-in or yours: implement ``labels(cloud)``, get the ``clusters`` artifact.

    A subclass sets ``name`` and ``Params`` (a subclass of :class:`ClusterParams`
    with its own settings) and implements :meth:`labels`. The base class does
    the rest, exactly as for ``cluster.hdbscan`` and ``cluster.dbscan``, which
    are built on it: the cloud-size cut (``min_cloud_size``), local-outlier
    (LOF) cleaning, the direction of each cluster, the joining of pieces of one
    track, a second cleaning, the :class:`conduit.artifacts.Clusters` artifact,
    and the warm-up (it runs :meth:`labels` and every post-processing kernel on
    synthetic clouds once per worker, so numba code in ``labels`` compiles
    before the first event).

    Stability: ``Clusterer``, :class:`ClusterParams` (its field names, meanings
    and units), :meth:`labels`, :meth:`cluster` and :func:`postprocess` are a
    public API of attpc-conduit; they change only with a major version and
    a deprecation noted in docs/writing-a-plugin.md. New parameters may be
    added to :class:`ClusterParams` with defaults that keep results unchanged.
    """

    requires = ("cloud",)
    provides = ("clusters",)
    Params = ClusterParams

    def labels(self, cloud: np.ndarray) -> np.ndarray:
        """The cluster of each row of ``cloud`` (one int per row; -1 = noise; any other values, any order).

        ``cloud`` is the (N, 8) float64 ``cloud`` artifact (x, y, z in mm, rows
        sorted by z; :data:`conduit.artifacts.CLOUD_COLUMNS`) with N at least
        ``max(min_cloud_size, 2)``. Return a length-N integer array.
        """
        raise NotImplementedError

    def cluster(self, cloud: np.ndarray) -> Clusters:
        """The ``clusters`` artifact of one cloud: size cut, :meth:`labels`, then :func:`postprocess`."""
        p = self.params
        if len(cloud) < max(p.min_cloud_size, 2):
            return Clusters.empty(len(cloud))
        labels = checked_labels(self.name, self.labels(cloud), len(cloud))
        return postprocess(cloud, labels, p, self.context.detector.magnetic_field)

    def process(self, event) -> None:
        event.artifacts["clusters"] = self.cluster(event.artifacts["cloud"])

    def warm_up(self) -> None:
        """Compile (or load) every kernel: :meth:`cluster` on a small and a large synthetic cloud, both joins.

        Two sizes because some label algorithms change kernels with the cloud
        size (HDBSCAN's minimum spanning tree above a few hundred points).
        """
        from conduit_physics.tracks import warm_cloud

        original = self.params
        try:
            for cloud in (warm_cloud(), warm_cloud(400)):
                for join in ("continuity", "overlap"):
                    self.params = original.replace(join=join, min_cloud_size=0)
                    self.cluster(cloud)
        finally:
            self.params = original

    @classmethod
    def validate_definition(cls) -> None:
        super().validate_definition()
        if not issubclass(cls.Params, ClusterParams):
            raise StageDefinitionError(
                f"{cls.name}: a Clusterer's Params must subclass conduit_physics.clustering.ClusterParams "
                "(the post-processing reads its fields)"
            )
        if cls.labels is Clusterer.labels:
            raise StageDefinitionError(f"{cls.name}: a Clusterer must implement labels(cloud)")
        if cls.provides != ("clusters",) or "cloud" not in cls.requires:
            raise StageDefinitionError(f"{cls.name}: a Clusterer requires 'cloud' and provides exactly ('clusters',)")


def checked_labels(stage: str, labels: object, n_points: int) -> np.ndarray:
    """``labels`` as an int64 array, or :class:`ClusterLabelsError` naming the stage when it is not one per row."""
    array = np.asarray(labels)
    if array.shape != (n_points,):
        raise ClusterLabelsError(
            f"{stage}: labels(cloud) returned shape {array.shape} for a cloud of {n_points} points "
            f"(expected ({n_points},): one label per cloud row)"
        )
    if array.dtype.kind not in "iu":
        raise ClusterLabelsError(f"{stage}: labels(cloud) returned {array.dtype} values; expected integers")
    return array.astype(np.int64, copy=False)
