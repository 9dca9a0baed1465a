"""The public clustering API: write a clusterer by giving each cloud point a label.

::

    import numpy as np
    from conduit import param
    from conduit_physics.clustering import Clusterer, ClusterParams

    class ChainParams(ClusterParams):
        link: float = param(8.0, "points closer than this are linked (mm)", gt=0)

    class ChainClusterer(Clusterer):
        '''Connected components of the neighbour graph.'''
        name = "myexp.chain"
        Params = ChainParams

        def labels(self, cloud: np.ndarray) -> np.ndarray:
            ...   # one int per cloud row, -1 = noise

:class:`Clusterer` (a :class:`conduit.stage.TransformStage`) then does what
every clusterer needs, as the built-in ``cluster.hdbscan`` and
``cluster.dbscan`` do with the same class: the cloud-size cut, LOF cleaning,
direction, joining of track pieces, the ``clusters`` artifact and the warm-up.
:class:`ClusterParams` holds those steps' parameters (a clusterer's ``Params``
subclasses it). The contract of the ``clusters`` artifact, with units, and
what ``estimate`` does with each direction: docs/writing-a-plugin.md,
"Write your own clusterer".

Names (loaded on first use, so importing this package is cheap):

* :class:`Clusterer`, :class:`ClusterParams`, :class:`ClusterLabelsError` (a ``labels`` result that is not
  one integer per cloud row; the message names the stage);
* :func:`postprocess` ``(cloud, labels, params, field) -> Clusters``: the post-processing alone;
* :func:`scaled_features` ``(cloud, z_scale)``: the (N, 3) features x, y, z * z_scale (mm) the built-ins cluster on;
* :func:`circle_overlap_area`; :mod:`.lof` (local outlier factor: ``lof_scores``, ``lof_outliers``,
  ``LofNeighbours``) and :mod:`.kdtree` (a compiled KD-tree), the kernels the post-processing runs on.

Stability: the names above are a public API (see :class:`Clusterer`).
"""

from __future__ import annotations

from conduit.lazy import lazy_exports

_LAZY = {
    "Clusterer": "base",
    "ClusterLabelsError": "base",
    "ClusterParams": "postprocessing",
    "postprocess": "postprocessing",
    "scaled_features": "postprocessing",
    "circle_overlap_area": "postprocessing",
    "lof_scores": "lof",
    "lof_outliers": "lof",
    "LofNeighbours": "lof",
}

__all__ = list(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
