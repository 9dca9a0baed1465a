"""The shapes of the standard artifacts stages exchange.

Any stage providing one of these names must produce exactly this form, so
that stages from different plugins can be swapped (``cluster.hdbscan`` for
another clusterer) and sinks can record and display them.

``cloud``
    float64 array (N, 8), rows sorted by z, columns :data:`CLOUD_COLUMNS`
    (Spyral's point cloud layout): x, y, z (mm), amplitude (ADC),
    integral (ADC·TB), pad id, time (TB, after per-pad correction), pad scale.

``clusters``
    :class:`Clusters`: one label per cloud row (-1 = noise/outlier) and, per
    cluster, its label and direction.

``estimates``
    numpy structured array, one row per estimated track, dtype
    :data:`ESTIMATE_DTYPE`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "CLOUD_COLUMNS",
    "X",
    "Y",
    "Z",
    "AMPLITUDE",
    "INTEGRAL",
    "PAD_ID",
    "TIME",
    "SCALE",
    "Clusters",
    "Direction",
    "ESTIMATE_DTYPE",
    "empty_cloud",
    "empty_estimates",
]

CLOUD_COLUMNS = ("x", "y", "z", "amplitude", "integral", "pad", "time", "scale")
X, Y, Z, AMPLITUDE, INTEGRAL, PAD_ID, TIME, SCALE = range(8)


def empty_cloud(n: int = 0) -> np.ndarray:
    return np.zeros((n, len(CLOUD_COLUMNS)), dtype=np.float64)


class Direction:
    """Track direction codes (Spyral's values)."""

    NONE = -1
    FORWARD = 0  # towards +z, the pad plane
    BACKWARD = 1


@dataclasses.dataclass
class Clusters:
    """Cluster assignment of the points of ``cloud``.

    ``labels[i]`` is the cluster of cloud row ``i`` (-1: noise or outlier).
    ``cluster_labels[k]`` and ``directions[k]`` describe cluster ``k``
    (clusters in the order the clusterer produced them, noise excluded).
    """

    labels: np.ndarray  # int32 (N,)
    cluster_labels: np.ndarray  # int32 (K,)
    directions: np.ndarray  # int8 (K,), Direction codes

    @property
    def count(self) -> int:
        return int(len(self.cluster_labels))

    def indices(self, k: int) -> np.ndarray:
        """Cloud row indices of cluster ``k`` (in cloud order, i.e. sorted by z)."""
        return np.flatnonzero(self.labels == self.cluster_labels[k])

    @classmethod
    def empty(cls, n_points: int) -> Clusters:
        return cls(
            labels=np.full(n_points, -1, dtype=np.int32),
            cluster_labels=np.zeros(0, dtype=np.int32),
            directions=np.zeros(0, dtype=np.int8),
        )


#: One row per estimated track. Units: mm, rad, T·m; dE in integral units (ADC·TB).
ESTIMATE_DTYPE = np.dtype(
    [
        ("event", np.int64),
        ("cluster_index", np.int32),
        ("cluster_label", np.int32),
        ("vertex_x", np.float64),
        ("vertex_y", np.float64),
        ("vertex_z", np.float64),
        ("center_x", np.float64),
        ("center_y", np.float64),
        ("center_z", np.float64),
        ("radius", np.float64),
        ("polar", np.float64),
        ("azimuthal", np.float64),
        ("brho", np.float64),
        ("dE", np.float64),
        ("arclength", np.float64),
        ("dEdx", np.float64),
        ("sqrt_dEdx", np.float64),
        ("direction", np.int8),
        ("n_points", np.int32),
        ("fit_rms", np.float64),
    ]
)


def empty_estimates(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=ESTIMATE_DTYPE)
