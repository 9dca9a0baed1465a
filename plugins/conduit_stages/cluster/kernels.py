"""Compiled kernels of the clustering stages: local outlier factor and DBSCAN.

Kept self-contained (numba cache safety): the track geometry the
post-processing also needs lives in :mod:`conduit_physics.tracks`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["dbscan_labels", "lof_outliers", "lof_scores"]


@njit(cache=True, nogil=True)
def _insert(nd, ni, c, k, d, j):
    """Insert candidate (d, j) into the sorted k-list (nd, ni) holding c entries; return the new count.

    Order is lexicographic in (distance, index), so the k nearest are
    well defined whatever the order candidates arrive in.
    """
    if c < k:
        pos = c
        c += 1
    elif d < nd[k - 1] or (d == nd[k - 1] and j < ni[k - 1]):
        pos = k - 1
    else:
        return c
    while pos > 0 and (nd[pos - 1] > d or (nd[pos - 1] == d and ni[pos - 1] > j)):
        nd[pos] = nd[pos - 1]
        ni[pos] = ni[pos - 1]
        pos -= 1
    nd[pos] = d
    ni[pos] = j
    return c


@njit(cache=True, nogil=True)
def lof_scores(points, n_neighbors):
    """Local outlier factor of every point (sklearn's LocalOutlierFactor, fitted on ``points``).

    ``points`` (n, 3), any order. As sklearn: n_neighbors is capped at n - 1;
    each point's neighbours exclude itself; the k-distance of a point is the
    distance to its k-th neighbour; reach-dist(p, o) = max(d(p, o), kdist(o));
    lrd(p) = 1 / (mean reach-dist over p's neighbours + 1e-10);
    LOF(p) = mean over p's neighbours of lrd(o) / lrd(p). Neighbours at equal
    distance are taken in index order. The k nearest are found by sweeping
    outwards in z (tracks are long in z), stopping once the z gap alone
    exceeds the current k-th distance.
    """
    n = points.shape[0]
    k = min(n_neighbors, n - 1)
    out = np.ones(n)
    if k < 1:
        return out
    order = np.argsort(points[:, 2], kind="mergesort")
    xs = np.empty(n)
    ys = np.empty(n)
    zs = np.empty(n)
    for r in range(n):
        xs[r] = points[order[r], 0]
        ys[r] = points[order[r], 1]
        zs[r] = points[order[r], 2]
    neigh = np.empty((n, k), dtype=np.int64)  # original indices
    nd = np.empty((n, k))
    kdist = np.empty(n)
    for r in range(n):
        i = order[r]
        di = nd[i]
        ni = neigh[i]
        c = 0
        left = r - 1
        right = r + 1
        while left >= 0 or right < n:
            gap_l = zs[r] - zs[left] if left >= 0 else np.inf
            gap_r = zs[right] - zs[r] if right < n else np.inf
            if gap_l <= gap_r:
                q = left
                gap = gap_l
                left -= 1
            else:
                q = right
                gap = gap_r
                right += 1
            if c == k and gap * gap > di[k - 1]:
                break
            ex = xs[q] - xs[r]
            ey = ys[q] - ys[r]
            ez = zs[q] - zs[r]
            # squared distances while searching (as sklearn's trees do), roots at the end
            c = _insert(di, ni, c, k, ex * ex + ey * ey + ez * ez, order[q])
        for c in range(k):
            di[c] = math.sqrt(di[c])
        kdist[i] = di[k - 1]
    lrd = np.empty(n)
    for i in range(n):
        s = 0.0
        for c in range(k):
            s += max(nd[i, c], kdist[neigh[i, c]])
        lrd[i] = 1.0 / (s / k + 1e-10)
    for i in range(n):
        s = 0.0
        for c in range(k):
            s += lrd[neigh[i, c]] / lrd[i]
        out[i] = s / k
    return out


@njit(cache=True, nogil=True)
def lof_outliers(points, n_neighbors):
    """True for points sklearn's LocalOutlierFactor(contamination='auto') predicts as outliers (LOF > 1.5)."""
    scores = lof_scores(points, n_neighbors)
    out = np.empty(points.shape[0], dtype=np.bool_)
    for i in range(points.shape[0]):
        out[i] = -scores[i] < -1.5
    return out


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
