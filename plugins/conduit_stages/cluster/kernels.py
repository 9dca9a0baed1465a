"""Kernels of the clustering stages: local outlier factor (on :mod:`.lof_kernels`) and a compiled DBSCAN.

The compiled kernels keep their callees in their own module (numba cache
safety): the track geometry the post-processing also needs lives in
:mod:`conduit_physics.tracks`, the KD-tree in :mod:`.kdtree`, HDBSCAN in
:mod:`.hdbscan_kernels`, LOF in :mod:`.lof_kernels`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numba import njit

__all__ = ["LofNeighbours", "dbscan_labels", "lof_outliers", "lof_scores"]


def lof_scores(points: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Local outlier factor of every row of (n, 3) ``points`` (scikit-learn's LocalOutlierFactor fitted on them).

    As scikit-learn: n_neighbors is capped at n - 1; each point's neighbours
    exclude itself; reach-dist(p, o) = max(|p - o|, kdist(o));
    lrd(p) = 1 / (mean reach-dist over p's neighbours + 1e-10);
    LOF(p) = mean over p's neighbours of lrd(o) / lrd(p). Neighbours at equal
    distance are taken in index order. Computed on a KD-tree
    (:mod:`.lof_kernels`).
    """
    return LofNeighbours.search(points, n_neighbors).scores()


def lof_outliers(points: np.ndarray, n_neighbors: int) -> np.ndarray:
    """True for the points LocalOutlierFactor(contamination='auto') predicts as outliers (LOF > 1.5)."""
    return lof_scores(points, n_neighbors) > 1.5


@dataclasses.dataclass
class LofNeighbours:
    """The k nearest of every point of a set, kept so that LOF can be recomputed after points are removed.

    Rows are in KD-tree order; ``perm[row]`` is the point's index in the set.
    """

    points: np.ndarray
    perm: np.ndarray
    nbr: np.ndarray
    nd: np.ndarray
    kdist: np.ndarray
    keep: np.ndarray

    @classmethod
    def search(cls, points: np.ndarray, n_neighbors: int) -> LofNeighbours:
        from .kdtree import build_tree
        from .lof_kernels import lof_neighbours

        pts = np.ascontiguousarray(points, dtype=np.float64)
        n = len(pts)
        k = min(int(n_neighbors), n - 1)
        if k < 1:
            empty = np.empty((n, 0))
            return cls(pts, np.arange(n), empty.astype(np.int32), empty, np.zeros(n), np.ones(n, dtype=np.bool_))
        tree = build_tree(pts)
        nbr, nd, kdist = lof_neighbours(tree.points, tree.perm, tree.start, tree.end, tree.left, tree.right,
                                        tree.dim, tree.lo, tree.hi, k)
        return cls(tree.points, tree.perm, nbr, nd, kdist, np.ones(n, dtype=np.bool_))

    @property
    def k(self) -> int:
        return self.nbr.shape[1]

    def scores(self) -> np.ndarray:
        """LOF of the kept points in the set's order (1 for removed points)."""
        from .lof_kernels import lof_from_neighbours

        out = np.ones(len(self.perm))
        if self.k:
            out[self.perm] = lof_from_neighbours(self.nbr, self.nd, self.kdist, self.keep)
        return out

    def without(self, gone: np.ndarray, n_neighbors: int) -> LofNeighbours:
        """The same for the kept points minus ``gone`` (set order), with ``n_neighbors`` (capped at n - 1).

        Each remaining point's new neighbours are its first old ones that
        remain, when enough remain (exact: removing points only removes
        entries from the ordered list); otherwise the set is searched afresh.
        """
        from .lof_kernels import lof_fewer

        gone_rows = ~self.keep.copy()
        gone_rows[np.argsort(self.perm)[gone]] = True  # set order -> tree rows
        left = int((~gone_rows).sum())
        k = min(int(n_neighbors), left - 1)
        if 1 <= k <= self.k:
            nbr, nd, kdist, ok = lof_fewer(self.nbr, self.nd, self.perm, gone_rows, k)
            if ok[~gone_rows].all():
                return LofNeighbours(self.points, self.perm, nbr, nd, kdist, ~gone_rows)
        inv = np.argsort(self.perm)
        kept_set = np.flatnonzero(~gone_rows[inv])
        fresh = LofNeighbours.search(self.points[inv][kept_set], n_neighbors)
        return _embed(fresh, kept_set, len(self.perm), self.points[inv])


def _embed(sub: LofNeighbours, members: np.ndarray, n: int, points: np.ndarray) -> LofNeighbours:
    """``sub`` (over points[members]) re-expressed over all n points, the others removed."""
    perm = np.concatenate([members[sub.perm], np.setdiff1d(np.arange(n), members)])
    keep = np.zeros(n, dtype=np.bool_)
    keep[: len(members)] = True
    k = sub.k
    nbr = np.zeros((n, k), dtype=np.int32)
    nbr[: len(members)] = sub.nbr
    nd = np.zeros((n, k))
    nd[: len(members)] = sub.nd
    kdist = np.zeros(n)
    kdist[: len(members)] = sub.kdist
    return LofNeighbours(np.ascontiguousarray(points[perm]), perm, nbr, nd, kdist, keep)


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
