"""Kernels of the clustering stages: a compiled DBSCAN.

The compiled kernels keep their callees in their own module (numba cache
safety): what every clusterer's post-processing needs (local outlier factor,
the KD-tree, track geometry) is public, in :mod:`conduit_physics.clustering`
and :mod:`conduit_physics.tracks`; HDBSCAN is in :mod:`.hdbscan_kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["dbscan_labels"]


@njit(cache=True, nogil=True)
def dbscan_labels(x, y, zs, eps, min_samples, min_cluster_size):
    """DBSCAN on (x, y, zs) with ``zs`` ascending; labels -1 for noise.

    A point is a core point when at least ``min_samples`` points (itself
    included) lie within ``eps`` (inclusive, as sklearn). Clusters are the
    connected components of core points, each border point joining the
    first cluster that reaches it; clusters are numbered in order of their
    lowest point index. Clusters smaller than ``min_cluster_size`` become
    noise. Neighbours are searched in a window of ``zs``, so the cost is
    O(N * neighbours in the window).
    """
    n = x.shape[0]
    eps2 = eps * eps
    lo = np.empty(n, dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    a = 0
    b = 0
    for i in range(n):
        while zs[a] < zs[i] - eps:
            a += 1
        b = max(b, i)
        while b + 1 < n and zs[b + 1] <= zs[i] + eps:
            b += 1
        lo[i] = a
        hi[i] = b
    core = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        count = 0
        for j in range(lo[i], hi[i] + 1):
            dx = x[j] - x[i]
            dy = y[j] - y[i]
            dz = zs[j] - zs[i]
            if dx * dx + dy * dy + dz * dz <= eps2:
                count += 1
        core[i] = count >= min_samples
    labels = np.full(n, -1, dtype=np.int64)
    queue = np.empty(n, dtype=np.int64)
    next_label = 0
    for seed in range(n):
        if not core[seed] or labels[seed] >= 0:
            continue
        labels[seed] = next_label
        head = 0
        tail = 0
        queue[tail] = seed
        tail += 1
        while head < tail:
            i = queue[head]
            head += 1
            for j in range(lo[i], hi[i] + 1):
                if labels[j] >= 0:
                    continue
                dx = x[j] - x[i]
                dy = y[j] - y[i]
                dz = zs[j] - zs[i]
                if dx * dx + dy * dy + dz * dz <= eps2:
                    labels[j] = next_label
                    if core[j]:
                        queue[tail] = j
                        tail += 1
        next_label += 1
    # small clusters -> noise, renumber compactly
    sizes = np.zeros(next_label, dtype=np.int64)
    for i in range(n):
        if labels[i] >= 0:
            sizes[labels[i]] += 1
    remap = np.full(next_label, -1, dtype=np.int64)
    kept = 0
    for c in range(next_label):
        if sizes[c] >= min_cluster_size:
            remap[c] = kept
            kept += 1
    for i in range(n):
        if labels[i] >= 0:
            labels[i] = remap[labels[i]]
    return labels
