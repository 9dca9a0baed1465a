"""A compiled KD-tree over a few thousand 3-D points, the neighbour structure of the clustering kernels.

:func:`build_tree` reorders the points so that every node holds a contiguous
range of rows (``points[perm]``) and records each node's bounding box; the
kernels in :mod:`.lof_kernels` and :mod:`conduit_stages.cluster.hdbscan_kernels` walk it with their own
loops (each compiled module keeps its callees, for numba cache safety).

Distances are computed as ``sqrt(dx*dx + dy*dy + dz*dz)``, summed in that
order, bit for bit what scikit-learn's trees and hdbscan compute.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

__all__ = ["KDTree", "build_tree", "box_gap2", "LEAF_SIZE"]

#: Points per leaf: small leaves prune well for the thin, track-like clouds of the TPC.
LEAF_SIZE = 12


class KDTree(NamedTuple):
    """Arrays of a tree built by :func:`build_tree` (node 0 is the root; rows are in tree order).

    ``points`` (n, 3) are the input rows reordered (``points[i] = input[perm[i]]``);
    node ``j`` holds rows ``start[j]:end[j]``, its children are ``left[j]``,
    ``right[j]`` (-1 for a leaf), it was split along coordinate ``dim[j]``
    and its bounding box is ``lo[j]``..``hi[j]``.
    """

    points: np.ndarray
    perm: np.ndarray
    start: np.ndarray
    end: np.ndarray
    left: np.ndarray
    right: np.ndarray
    dim: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@njit(cache=True, nogil=True)
def _select(perm, keys, lo, hi, nth):
    """Reorder perm[lo:hi] so that the row at ``nth`` has the nth smallest key (ties by row index)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        # median of three as the pivot
        a, b, c = perm[lo], perm[mid], perm[hi - 1]
        ka, kb, kc = keys[a], keys[b], keys[c]
        if (ka < kb) == (kb < kc):
            pivot = b
        elif (kb < ka) == (ka < kc):
            pivot = a
        else:
            pivot = c
        kp = keys[pivot]
        i = lo
        j = hi - 1
        while i <= j:
            while keys[perm[i]] < kp or (keys[perm[i]] == kp and perm[i] < pivot):
                i += 1
            while keys[perm[j]] > kp or (keys[perm[j]] == kp and perm[j] > pivot):
                j -= 1
            if i <= j:
                t = perm[i]
                perm[i] = perm[j]
                perm[j] = t
                i += 1
                j -= 1
        if nth <= j:
            hi = j + 1
        elif nth >= i:
            lo = i
        else:
            return


@njit(cache=True, nogil=True)
def _build(points, leaf_size):
    n = points.shape[0]
    perm = np.arange(n)
    max_nodes = 2 * (n // max(1, (leaf_size + 1) // 2)) + 3
    start = np.empty(max_nodes, dtype=np.int64)
    end = np.empty(max_nodes, dtype=np.int64)
    left = np.full(max_nodes, -1, dtype=np.int64)
    right = np.full(max_nodes, -1, dtype=np.int64)
    split = np.zeros(max_nodes, dtype=np.int64)
    lo = np.empty((max_nodes, 3))
    hi = np.empty((max_nodes, 3))
    keys = np.empty(n)
    stack = np.empty(max_nodes, dtype=np.int64)
    start[0] = 0
    end[0] = n
    count = 1
    top = 0
    stack[0] = 0
    while top >= 0:
        node = stack[top]
        top -= 1
        s = start[node]
        e = end[node]
        for d in range(3):
            lo[node, d] = np.inf
            hi[node, d] = -np.inf
        for r in range(s, e):
            i = perm[r]
            for d in range(3):
                v = points[i, d]
                if v < lo[node, d]:
                    lo[node, d] = v
                if v > hi[node, d]:
                    hi[node, d] = v
        if e - s <= leaf_size:
            continue
        dim = 0
        spread = hi[node, 0] - lo[node, 0]
        for d in range(1, 3):
            if hi[node, d] - lo[node, d] > spread:
                spread = hi[node, d] - lo[node, d]
                dim = d
        for r in range(s, e):
            keys[perm[r]] = points[perm[r], dim]
        mid = (s + e) // 2
        _select(perm, keys, s, e, mid)
        a = count
        b = count + 1
        count += 2
        start[a] = s
        end[a] = mid
        start[b] = mid
        end[b] = e
        left[node] = a
        right[node] = b
        split[node] = dim
        stack[top + 1] = b
        stack[top + 2] = a
        top += 2
    ordered = np.empty((n, 3))
    for r in range(n):
        for d in range(3):
            ordered[r, d] = points[perm[r], d]
    return ordered, perm, start[:count].copy(), end[:count].copy(), left[:count].copy(), right[:count].copy(), \
        split[:count].copy(), lo[:count].copy(), hi[:count].copy()


def build_tree(points: np.ndarray, leaf_size: int = LEAF_SIZE) -> KDTree:
    """KD-tree of (n, 3) float64 ``points`` (n >= 1), split at the median of the widest coordinate."""
    pts = np.ascontiguousarray(points, dtype=np.float64)
    return KDTree(*_build(pts, int(leaf_size)))


@njit(cache=True, nogil=True)
def box_gap2(lo, hi, node, x, y, z):
    """Squared distance from (x, y, z) to the bounding box of ``node`` (0 inside).

    It never exceeds the squared distance to any point in the box, also in
    floating point (each term is at most that coordinate's difference squared).
    """
    g = 0.0
    for d in range(3):
        c = x if d == 0 else (y if d == 1 else z)
        t = lo[node, d] - c
        if t > 0:
            g += t * t
        else:
            t = c - hi[node, d]
            if t > 0:
                g += t * t
    return g
