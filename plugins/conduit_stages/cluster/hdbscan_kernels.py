"""Compiled steps of HDBSCAN (hdbscan's ``prims_kdtree`` path, same arithmetic) on a :class:`conduit_physics.clustering.kdtree.KDTree`.

1. :func:`mst_mutual_reachability`: the minimum spanning tree of the
   mutual-reachability graph, w(p, q) = max(core(p), core(q), |p - q|),
   by Borůvka's algorithm (each component's cheapest outgoing edge, the
   least of its points' own: kept from the round before while still
   outgoing, else from the point's nearest neighbours when they prove it,
   else from a KD-tree search that skips nodes all in the component or
   beyond the component's best, and is skipped itself when the point's lower
   bound cannot beat that best). Ties are broken by the points' indices, so the edges
   form one tree whatever the visiting order. The edges come back rooted at
   point 0 and oriented (parent, child), as hdbscan's Prim's algorithm (started
   at point 0) writes them (source, new point).
2. :func:`single_linkage`: hdbscan's ``label`` (edges by weight, union-find).
3. :func:`condense_tree` and :func:`cluster_stability`: hdbscan's
   ``condense_tree`` and ``compute_stability``, row for row.
4. :func:`label_points`: hdbscan's ``do_labelling`` for the selected clusters.

Cluster selection (excess of mass, ``cluster_selection_epsilon``):
:func:`select_clusters_eom`, equal to hdbscan's steps kept in Python in
:mod:`.hdbscan_native` (``select_clusters``, the reference in the tests). All kernels keep their callees in this module (numba cache
safety).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from conduit_physics.clustering.kdtree import _build, box_gap2

#: The neighbour lists for :func:`mst_mutual_reachability` hold min_samples + KNN_EXTRA rows (itself
#: included): the core distance needs min_samples + 1; longer lists let Borůvka settle more rows without a
#: tree search (3: the fastest of 2, 3, 4 and 7 on the largest dense clouds, docs/performance.md).
KNN_EXTRA = 3

__all__ = ["KNN_EXTRA", "condensed_tree", "core_distances", "label_selected", "small_mst", "knn_lists", "mst_mutual_reachability", "prim_dense", "single_linkage", "condense_tree", "cluster_stability", "label_points"]


@njit(cache=True, nogil=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True, nogil=True)
def _before(w, a, b, bw, ba, bb):
    """True when edge (w, a, b) precedes (bw, ba, bb): by weight, then by the pair of point indices."""
    if w != bw:
        return w < bw
    lo = min(a, b)
    blo = min(ba, bb)
    if lo != blo:
        return lo < blo
    return max(a, b) < max(ba, bb)


@njit(cache=True, nogil=True)
def knn_lists(points, start, end, left, right, dim, lo, hi, k):
    """Squared distances (ascending) and rows of the k nearest rows of every row, itself included."""
    n = points.shape[0]
    d2 = np.empty((n, k))
    idx = np.empty((n, k), dtype=np.int64)
    stack = np.empty(128, dtype=np.int64)
    for p in range(n):
        px = points[p, 0]
        py = points[p, 1]
        pz = points[p, 2]
        for c in range(k):
            d2[p, c] = np.inf
            idx[p, c] = -1
        top = 0
        stack[0] = 0
        while top >= 0:
            node = stack[top]
            top -= 1
            g = box_gap2(lo, hi, node, px, py, pz)
            if g > d2[p, k - 1]:  # g <= |p - q|^2 for every q in the box, also in floating point
                continue
            if left[node] < 0:
                for q in range(start[node], end[node]):
                    dx = px - points[q, 0]
                    dy = py - points[q, 1]
                    dz = pz - points[q, 2]
                    e = dx * dx + dy * dy + dz * dz
                    if e < d2[p, k - 1]:
                        c = k - 1
                        while c > 0 and d2[p, c - 1] > e:
                            d2[p, c] = d2[p, c - 1]
                            idx[p, c] = idx[p, c - 1]
                            c -= 1
                        d2[p, c] = e
                        idx[p, c] = q
                continue
            a = left[node]
            b = right[node]
            if points[p, dim[node]] >= lo[b, dim[node]]:  # p's side first (pushed last)
                a, b = b, a
            stack[top + 1] = b
            stack[top + 2] = a
            top += 2
    return d2, idx


@njit(cache=True, nogil=True)
def _group_search(rows, nq, c, bw, ba, bb, low, points, perm, core, comp, node_comp, node_core, start, end, left,
                  right, dim, lo, hi, stack):
    """The cheapest edge out of component ``c`` from rows[:nq] (rows of one leaf) if it precedes (bw, ba, bb).

    Returns (row, far row, weight), row -1 when none does. One tree walk for
    the group: a node is skipped when all its rows are in ``c``, or when its
    smallest core distance or its box's gap to the group's box exceeds the
    bound, which tightens as edges are found; a row is skipped where its
    lower bound ``low``, its core distance or its gap to the node's box does.
    """
    qlo0 = np.inf
    qlo1 = np.inf
    qlo2 = np.inf
    qhi0 = -np.inf
    qhi1 = -np.inf
    qhi2 = -np.inf
    for t in range(nq):
        p = rows[t]
        qlo0 = min(qlo0, points[p, 0])
        qlo1 = min(qlo1, points[p, 1])
        qlo2 = min(qlo2, points[p, 2])
        qhi0 = max(qhi0, points[p, 0])
        qhi1 = max(qhi1, points[p, 1])
        qhi2 = max(qhi2, points[p, 2])
    found = -1
    top = 0
    stack[0] = 0
    while top >= 0:
        node = stack[top]
        top -= 1
        if node_comp[node] == c or node_core[node] > bw:
            continue
        g = 0.0
        for d in range(3):
            ql = qlo0 if d == 0 else (qlo1 if d == 1 else qlo2)
            qh = qhi0 if d == 0 else (qhi1 if d == 1 else qhi2)
            t = lo[node, d] - qh
            if t > 0:
                g += t * t
            else:
                t = ql - hi[node, d]
                if t > 0:
                    g += t * t
        if math.sqrt(g) > bw:  # g <= |p - q|^2 for every pair of the boxes, also in floating point
            continue
        if left[node] >= 0:
            a = left[node]
            b = right[node]
            sd = dim[node]
            mid = 0.5 * ((qlo0 if sd == 0 else (qlo1 if sd == 1 else qlo2)) + (qhi0 if sd == 0 else (qhi1 if sd == 1 else qhi2)))
            if mid >= lo[b, sd]:  # the group's side first (pushed last)
                a, b = b, a
            stack[top + 1] = b
            stack[top + 2] = a
            top += 2
            continue
        for t in range(nq):
            p = rows[t]
            cp = core[p]
            if cp > bw or low[p] > bw:
                continue
            px = points[p, 0]
            py = points[p, 1]
            pz = points[p, 2]
            if math.sqrt(box_gap2(lo, hi, node, px, py, pz)) > bw:
                continue
            ip = perm[p]
            for q in range(start[node], end[node]):
                if comp[q] == c:
                    continue
                w = cp if cp > core[q] else core[q]
                if w > bw:
                    continue
                dx = px - points[q, 0]
                dy = py - points[q, 1]
                dz = pz - points[q, 2]
                d = math.sqrt(dx * dx + dy * dy + dz * dz)
                if d > w:
                    w = d
                if ba < 0 or _before(w, ip, perm[q], bw, perm[ba], perm[bb]):
                    bw = w
                    ba = p
                    bb = q
                    found = p
    return found, bb, bw


@njit(cache=True, nogil=True)
def _offer(c, w, a, b, perm, best_w, best_a, best_b):
    """Lower component c's best edge of the round to (w, a, b) when that edge precedes it."""
    if best_a[c] < 0 or _before(w, perm[a], perm[b], best_w[c], perm[best_a[c]], perm[best_b[c]]):
        best_w[c] = w
        best_a[c] = a
        best_b[c] = b


@njit(cache=True, nogil=True)
def _boruvka(points, perm, core, knn_d2, knn_idx, start, end, left, right, dim, lo, hi):
    """MST edges (tree-order rows a, b) of the mutual-reachability graph, ties broken by point index.

    Each round needs every component's cheapest outgoing edge, the least of
    its rows' own. A row's own cheapest edge is kept from the round before
    while its far end is still in another component (components only grow,
    so nothing new can beat it); else it comes from the row's k nearest when
    the best of them weighs less than ``floor`` (the larger of the row's core
    distance and k-th distance: any edge to a farther row weighs at least
    that); else from one tree search per leaf and component over the rows
    left (:func:`_group_search`), which leaves out rows whose lower bound
    already exceeds the component's best edge so far. A search raises its
    rows' lower bounds to the best it ends with; bounds carry over (a row's
    cheapest edge only grows). Rounds late in the tree, with a few large
    components, are where this saves most: nearly every search there proves
    only that its rows cannot beat the bound.
    """
    n = points.shape[0]
    nn = start.shape[0]
    k = knn_idx.shape[1]
    node_core = np.empty(nn)
    for j in range(nn - 1, -1, -1):  # children have larger ids than their parent
        if left[j] < 0:
            m = np.inf
            for r in range(start[j], end[j]):
                if core[r] < m:
                    m = core[r]
            node_core[j] = m
        else:
            node_core[j] = min(node_core[left[j]], node_core[right[j]])
    floor = np.empty(n)
    for p in range(n):
        floor[p] = max(core[p], math.sqrt(knn_d2[p, k - 1]))
    low = floor.copy()  # lower bound of each row's cheapest edge to a row outside its k nearest
    own_q = np.full(n, -1, dtype=np.int64)  # each row's cheapest outgoing edge, when known
    own_w = np.empty(n)
    uf = np.arange(n)
    comp = np.arange(n)
    node_comp = np.empty(nn, dtype=np.int64)
    ea = np.empty(n - 1, dtype=np.int64)
    eb = np.empty(n - 1, dtype=np.int64)
    best_w = np.empty(n)
    best_a = np.empty(n, dtype=np.int64)
    best_b = np.empty(n, dtype=np.int64)
    stack = np.empty(128, dtype=np.int64)
    pending = np.empty(n, dtype=np.int64)
    group = np.empty(n, dtype=np.int64)
    leaf_of = np.empty(n, dtype=np.int64)
    for j in range(nn):
        if left[j] < 0:
            leaf_of[start[j]:end[j]] = j
    ne = 0
    while ne < n - 1:
        for j in range(nn - 1, -1, -1):
            if left[j] < 0:
                c = comp[start[j]]
                for r in range(start[j] + 1, end[j]):
                    if comp[r] != c:
                        c = -1
                        break
                node_comp[j] = c
            else:
                c = node_comp[left[j]]
                node_comp[j] = c if c == node_comp[right[j]] else -1
        for p in range(n):
            best_w[p] = np.inf
            best_a[p] = -1
            best_b[p] = -1
        npend = 0
        for p in range(n):
            c = comp[p]
            q = own_q[p]
            if q >= 0:
                if comp[q] != c:
                    _offer(c, own_w[p], p, q, perm, best_w, best_a, best_b)
                    continue
                own_q[p] = -1
                if own_w[p] > low[p]:  # its cheapest edge now is no cheaper than the one it lost
                    low[p] = own_w[p]
            lw = np.inf
            lq = -1
            for s in range(k):
                q = knn_idx[p, s]
                if q < 0 or comp[q] == c:
                    continue
                w = max(core[p], core[q], math.sqrt(knn_d2[p, s]))
                if lq < 0 or _before(w, perm[p], perm[q], lw, perm[p], perm[lq]):
                    lw = w
                    lq = q
            if lq >= 0:
                _offer(c, lw, p, lq, perm, best_w, best_a, best_b)
                if lw < low[p]:  # nothing outside the k nearest can weigh as little
                    own_q[p] = lq
                    own_w[p] = lw
                    continue
            pending[npend] = p
            npend += 1
        t0 = 0
        while t0 < npend:  # one search per leaf and component, over its rows still pending
            c = comp[pending[t0]]
            leaf = leaf_of[pending[t0]]
            nq = 0
            t = t0
            while t < npend and leaf_of[pending[t]] == leaf and comp[pending[t]] == c:
                if low[pending[t]] <= best_w[c]:
                    group[nq] = pending[t]
                    nq += 1
                t += 1
            t0 = t
            if nq == 0:
                continue
            a, b, w = _group_search(group, nq, c, best_w[c], best_a[c], best_b[c], low, points, perm, core, comp,
                                    node_comp, node_core, start, end, left, right, dim, lo, hi, stack)
            if a >= 0:  # a's own cheapest edge, and the group's
                own_q[a] = b
                own_w[a] = w
                best_w[c] = w
                best_a[c] = a
                best_b[c] = b
            for s in range(nq):  # every edge of the group that precedes the bound was seen
                if low[group[s]] < w:
                    low[group[s]] = w
        for c in range(n):
            if comp[c] != c or best_a[c] < 0:  # c is not a component's label this round
                continue
            a = best_a[c]
            b = best_b[c]
            ra = _find(uf, a)
            rb = _find(uf, b)
            if ra == rb:  # the same edge, chosen from both sides
                continue
            uf[rb] = ra
            ea[ne] = a
            eb[ne] = b
            ne += 1
        for p in range(n):
            comp[p] = _find(uf, p)
    return ea, eb


@njit(cache=True, nogil=True)
def _core_ball_edges(points, core, knn_d2, knn_idx, start, end, left, right, lo, hi):
    """Edges (p, q), q != p, |p - q| <= core(p), tree-order rows: every edge whose weight is a core distance.

    From the k nearest lists, or a radius search for a point whose k-th
    nearest is itself within its core distance (a tie in distance).
    """
    n = points.shape[0]
    k = knn_idx.shape[1]
    cap = k * n
    ea = np.empty(cap, dtype=np.int64)
    eb = np.empty(cap, dtype=np.int64)
    ne = 0
    stack = np.empty(128, dtype=np.int64)
    for p in range(n):
        r = core[p]
        if math.sqrt(knn_d2[p, k - 1]) > r:
            for s in range(k):
                q = knn_idx[p, s]
                if q != p and q >= 0 and math.sqrt(knn_d2[p, s]) <= r:
                    ea[ne] = p
                    eb[ne] = q
                    ne += 1
            continue
        px = points[p, 0]
        py = points[p, 1]
        pz = points[p, 2]
        top = 0
        stack[0] = 0
        while top >= 0:
            node = stack[top]
            top -= 1
            g = box_gap2(lo, hi, node, px, py, pz)
            if math.sqrt(g) > r:
                continue
            if left[node] >= 0:
                stack[top + 1] = left[node]
                stack[top + 2] = right[node]
                top += 2
                continue
            for q in range(start[node], end[node]):
                if q == p:
                    continue
                dx = px - points[q, 0]
                dy = py - points[q, 1]
                dz = pz - points[q, 2]
                if math.sqrt(dx * dx + dy * dy + dz * dz) <= r:
                    if ne == cap:
                        cap *= 2
                        ea2 = np.empty(cap, dtype=np.int64)
                        eb2 = np.empty(cap, dtype=np.int64)
                        ea2[:ne] = ea[:ne]
                        eb2[:ne] = eb[:ne]
                        ea = ea2
                        eb = eb2
                    ea[ne] = p
                    eb[ne] = q
                    ne += 1
    return ea[:ne], eb[:ne]


@njit(cache=True, nogil=True)
def _heap_push(hw, hj, size, w, j):
    i = size
    hw[i] = w
    hj[i] = j
    while i > 0:
        up = (i - 1) // 2
        if hw[up] < hw[i] or (hw[up] == hw[i] and hj[up] <= hj[i]):
            break
        hw[up], hw[i] = hw[i], hw[up]
        hj[up], hj[i] = hj[i], hj[up]
        i = up
    return size + 1


@njit(cache=True, nogil=True)
def _heap_pop(hw, hj, size):
    """Remove the smallest (w, j) (already read at index 0); return the new size."""
    size -= 1
    hw[0] = hw[size]
    hj[0] = hj[size]
    i = 0
    while True:
        a = 2 * i + 1
        if a >= size:
            break
        b = a + 1
        m = a
        if b < size and (hw[b] < hw[a] or (hw[b] == hw[a] and hj[b] < hj[a])):
            m = b
        if hw[i] < hw[m] or (hw[i] == hw[m] and hj[i] <= hj[m]):
            break
        hw[m], hw[i] = hw[i], hw[m]
        hj[m], hj[i] = hj[i], hj[m]
        i = m
    return size


@njit(cache=True, nogil=True)
def _prim_order(n, ea, eb, points_orig, core_orig):
    """hdbscan's Prim's algorithm from point 0, run on the candidate edges (original indices) only.

    A point joins when its current distance is the smallest (the lowest index
    among equals); its current distance is lowered only by a strictly smaller
    weight, so its source is the earliest tree point that reaches it: exactly
    hdbscan's mst_linkage_core_vector, given that the candidates hold every
    edge that is ever a cheapest crossing edge.
    """
    m = ea.shape[0]
    deg = np.zeros(n + 1, dtype=np.int64)
    for i in range(m):
        deg[ea[i] + 1] += 1
        deg[eb[i] + 1] += 1
    for i in range(n):
        deg[i + 1] += deg[i]
    adj = np.empty(2 * m, dtype=np.int64)
    fill = deg[:n].copy()
    for i in range(m):
        adj[fill[ea[i]]] = eb[i]
        fill[ea[i]] += 1
        adj[fill[eb[i]]] = ea[i]
        fill[eb[i]] += 1
    in_tree = np.zeros(n, dtype=np.bool_)
    current = np.full(n, np.inf)
    source = np.zeros(n, dtype=np.int64)
    hw = np.empty(2 * m + 1)
    hj = np.empty(2 * m + 1, dtype=np.int64)
    size = 0
    out = np.empty((n - 1, 3))
    u = 0
    for step in range(n - 1):
        in_tree[u] = True
        cu = core_orig[u]
        for s in range(deg[u], deg[u + 1]):
            j = adj[s]
            if in_tree[j]:
                continue
            dx = points_orig[u, 0] - points_orig[j, 0]
            dy = points_orig[u, 1] - points_orig[j, 1]
            dz = points_orig[u, 2] - points_orig[j, 2]
            w = math.sqrt(dx * dx + dy * dy + dz * dz)
            if core_orig[j] > w:
                w = core_orig[j]
            if cu > w:
                w = cu
            if w < current[j]:
                current[j] = w
                source[j] = u
                size = _heap_push(hw, hj, size, w, j)
        while True:
            w = hw[0]
            j = hj[0]
            size = _heap_pop(hw, hj, size)
            if not in_tree[j] and w == current[j]:
                break
        out[step, 0] = source[j]
        out[step, 1] = j
        out[step, 2] = w
        u = j
    return out


@njit(cache=True, nogil=True)
def prim_dense(points, core):
    """hdbscan's mst_linkage_core_vector, line for line: Prim's algorithm over all pairs from point 0.

    O(n²) but with no search structure: the faster way for a few hundred
    points, and identical to hdbscan whatever the ties. Rows (source, new
    point, weight) in the order the points join.
    """
    n = points.shape[0]
    out = np.zeros((n - 1, 3))
    in_tree = np.zeros(n, dtype=np.int8)
    current_distances = np.full(n, np.inf)
    current_sources = np.ones(n)
    current_node = 0
    for i in range(1, n):
        in_tree[current_node] = 1
        current_node_core = core[current_node]
        new_distance = np.finfo(np.float64).max
        source_node = 0
        new_node = 0
        cx = points[current_node, 0]
        cy = points[current_node, 1]
        cz = points[current_node, 2]
        for j in range(n):
            if in_tree[j]:
                continue
            right_value = current_distances[j]
            right_source = current_sources[j]
            dx = cx - points[j, 0]
            dy = cy - points[j, 1]
            dz = cz - points[j, 2]
            left_value = math.sqrt(dx * dx + dy * dy + dz * dz)
            core_value = core[j]
            if current_node_core > right_value or core_value > right_value or left_value > right_value:
                if right_value < new_distance:
                    new_distance = right_value
                    source_node = right_source
                    new_node = j
                continue
            if core_value > current_node_core:
                if core_value > left_value:
                    left_value = core_value
            elif current_node_core > left_value:
                left_value = current_node_core
            if left_value < right_value:
                current_distances[j] = left_value
                current_sources[j] = current_node
                if left_value < new_distance:
                    new_distance = left_value
                    source_node = current_node
                    new_node = j
            elif right_value < new_distance:
                new_distance = right_value
                source_node = right_source
                new_node = j
        out[i - 1, 0] = source_node
        out[i - 1, 1] = new_node
        out[i - 1, 2] = new_distance
        current_node = new_node
    return out


def core_distances(tree, min_samples: int, extra: int = KNN_EXTRA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core distances (tree order; distance to the (min_samples + 1)-th nearest, itself first, as hdbscan)
    and the lists of the min_samples + ``extra`` nearest (squared distances, rows) they came from
    (``extra`` >= 1; :func:`mst_mutual_reachability` wants :data:`KNN_EXTRA`)."""
    n = tree.points.shape[0]
    k = min(n, min_samples + max(1, int(extra)))
    d2, idx = knn_lists(tree.points, tree.start, tree.end, tree.left, tree.right, tree.dim, tree.lo, tree.hi, k)
    return np.sqrt(d2[:, min(min_samples, n - 1)]), d2, idx


def mst_mutual_reachability(tree, core: np.ndarray, knn_d2: np.ndarray, knn_idx: np.ndarray) -> np.ndarray:
    """(n - 1, 3) rows (source, new point, weight) of hdbscan's Prim's MST, in its order, original indices.

    ``core``, ``knn_d2``, ``knn_idx`` come from :func:`core_distances`.
    Borůvka's tree gives every edge whose weight is a distance; the core
    balls give every edge whose weight is a core distance; Prim's algorithm
    then runs on those few candidates.
    """
    n = tree.points.shape[0]
    if n < 2:
        return np.empty((0, 3))
    t = tree
    ma, mb = _boruvka(t.points, t.perm, core, knn_d2, knn_idx, t.start, t.end, t.left, t.right, t.dim, t.lo, t.hi)
    ba, bb = _core_ball_edges(t.points, core, knn_d2, knn_idx, t.start, t.end, t.left, t.right, t.lo, t.hi)
    perm = t.perm
    ea = perm[np.concatenate([ma, ba])]
    eb = perm[np.concatenate([mb, bb])]
    points_orig = np.empty_like(t.points)
    points_orig[perm] = t.points
    core_orig = np.empty_like(core)
    core_orig[perm] = core
    return _prim_order(n, ea, eb, points_orig, core_orig)


@njit(cache=True, nogil=True)
def _root(parent, x):
    """hdbscan's fast_find in its union-find of merged clusters (-1 = a root): the root, path compressed."""
    root = x
    while parent[root] != -1:
        root = parent[root]
    while x != root and parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True, nogil=True)
def _single_linkage(src, dst, w, n):
    out = np.empty((n - 1, 4))
    parent = np.full(2 * n - 1, -1, dtype=np.int64)
    size = np.zeros(2 * n - 1, dtype=np.int64)
    size[:n] = 1
    nxt = n
    for i in range(n - 1):
        a = _root(parent, int(src[i]))
        b = _root(parent, int(dst[i]))
        out[i, 0] = a
        out[i, 1] = b
        out[i, 2] = w[i]
        out[i, 3] = size[a] + size[b]
        parent[a] = nxt
        parent[b] = nxt
        size[nxt] = size[a] + size[b]
        nxt += 1
    return out


def single_linkage(mst: np.ndarray) -> np.ndarray:
    """hdbscan's single-linkage hierarchy (n - 1, 4) from its MST rows (sorted here exactly as hdbscan does)."""
    edges = mst[np.argsort(mst.T[2]), :]
    n = len(mst) + 1
    return _single_linkage(np.ascontiguousarray(edges[:, 0]), np.ascontiguousarray(edges[:, 1]),
                           np.ascontiguousarray(edges[:, 2]), n)


@njit(cache=True, nogil=True)
def _emit_points(hier, n, sub_root, parent_label, lam, ignore, queue, res_parent, res_child, res_lambda, res_size,
                 pos):
    """Rows (parent_label, point, lam, 1) for the points under ``sub_root``, breadth first; mark the subtree."""
    queue[0] = sub_root
    head = 0
    tail = 1
    while head < tail:
        node = queue[head]
        head += 1
        ignore[node] = True
        if node < n:
            res_parent[pos] = parent_label
            res_child[pos] = node
            res_lambda[pos] = lam
            res_size[pos] = 1
            pos += 1
        else:
            queue[tail] = int(hier[node - n, 0])
            queue[tail + 1] = int(hier[node - n, 1])
            tail += 2
    return pos


@njit(cache=True, nogil=True)
def condense_tree(hier, min_cluster_size):
    """hdbscan's condense_tree: rows (parent, child, lambda, child_size) as four arrays."""
    n = hier.shape[0] + 1
    root = 2 * hier.shape[0]
    order = np.empty(2 * n - 1, dtype=np.int64)
    order[0] = root
    head = 0
    tail = 1
    while head < tail:
        node = order[head]
        head += 1
        if node >= n:
            order[tail] = int(hier[node - n, 0])
            order[tail + 1] = int(hier[node - n, 1])
            tail += 2
    relabel = np.empty(root + 1, dtype=np.int64)
    relabel[root] = n
    ignore = np.zeros(2 * n - 1, dtype=np.bool_)
    queue = np.empty(2 * n - 1, dtype=np.int64)
    res_parent = np.empty(2 * n, dtype=np.int64)
    res_child = np.empty(2 * n, dtype=np.int64)
    res_lambda = np.empty(2 * n)
    res_size = np.empty(2 * n, dtype=np.int64)
    pos = 0
    next_label = n + 1
    for idx in range(tail):
        node = order[idx]
        if ignore[node] or node < n:
            continue
        row = node - n
        left = int(hier[row, 0])
        right = int(hier[row, 1])
        lam = 1.0 / hier[row, 2] if hier[row, 2] > 0.0 else np.inf
        left_count = int(hier[left - n, 3]) if left >= n else 1
        right_count = int(hier[right - n, 3]) if right >= n else 1
        if left_count >= min_cluster_size and right_count >= min_cluster_size:
            relabel[left] = next_label
            next_label += 1
            res_parent[pos] = relabel[node]
            res_child[pos] = relabel[left]
            res_lambda[pos] = lam
            res_size[pos] = left_count
            pos += 1
            relabel[right] = next_label
            next_label += 1
            res_parent[pos] = relabel[node]
            res_child[pos] = relabel[right]
            res_lambda[pos] = lam
            res_size[pos] = right_count
            pos += 1
        elif left_count < min_cluster_size and right_count < min_cluster_size:
            pos = _emit_points(hier, n, left, relabel[node], lam, ignore, queue, res_parent, res_child, res_lambda,
                               res_size, pos)
            pos = _emit_points(hier, n, right, relabel[node], lam, ignore, queue, res_parent, res_child, res_lambda,
                               res_size, pos)
        elif left_count < min_cluster_size:
            relabel[right] = relabel[node]
            pos = _emit_points(hier, n, left, relabel[node], lam, ignore, queue, res_parent, res_child, res_lambda,
                               res_size, pos)
        else:
            relabel[left] = relabel[node]
            pos = _emit_points(hier, n, right, relabel[node], lam, ignore, queue, res_parent, res_child, res_lambda,
                               res_size, pos)
    return res_parent[:pos].copy(), res_child[:pos].copy(), res_lambda[:pos].copy(), res_size[:pos].copy()


@njit(cache=True, nogil=True)
def cluster_stability(parent, child, lam, size):
    """hdbscan's compute_stability: stability of clusters root..max(parent), indexed from the root (n)."""
    root = parent.min()
    largest = max(child.max(), root)
    births = np.full(largest + 1, np.nan)
    seen = np.zeros(largest + 1, dtype=np.bool_)
    for i in range(child.shape[0]):
        c = child[i]
        if not seen[c] or lam[i] < births[c]:
            births[c] = lam[i]
            seen[c] = True
    births[root] = 0.0
    out = np.zeros(parent.max() - root + 1)
    for i in range(parent.shape[0]):
        out[parent[i] - root] += (lam[i] - births[parent[i]]) * float(size[i])
    return out


@njit(cache=True, nogil=True)
def label_points(parent, child, lam, selected, label_of, single_root, epsilon):
    """hdbscan's do_labelling: each point takes the label of the nearest selected cluster above it, else -1.

    ``selected[c]`` marks the selected clusters and ``label_of[c]`` their labels.
    ``single_root``: the root alone is selected with allow_single_cluster; its
    points are then kept when they leave at lambda >= 1 / epsilon (epsilon > 0)
    or at the root's largest lambda.
    """
    root = parent.min()
    n = root
    top = np.empty(max(parent.max(), child.max()) + 1, dtype=np.int64)
    top[root] = root
    root_max_lambda = 0.0
    for i in range(parent.shape[0]):
        if parent[i] == root and lam[i] > root_max_lambda:
            root_max_lambda = lam[i]
    labels = np.full(n, -1, dtype=np.int64)
    for i in range(parent.shape[0]):
        c = child[i]
        t = top[parent[i]]
        if c >= n:
            top[c] = c if selected[c] else t
            continue
        if t != root:
            labels[c] = label_of[t]
        elif single_root:
            if epsilon != 0.0:
                if lam[i] >= 1.0 / epsilon:
                    labels[c] = label_of[root]
            elif lam[i] >= root_max_lambda:
                labels[c] = label_of[root]
    return labels


# One call per step of :func:`.hdbscan_native.hdbscan_native` (a default event's cloud has ~190 points: there
# each call's dispatch, argument typing and the boxing of the arrays it returns cost as much as its work).


@njit(cache=True, nogil=True)
def small_mst(features, min_samples, leaf_size):
    """:func:`prim_dense` of ``features`` (n >= 2, C-contiguous) with the core distances it needs, in one call.

    The same steps as ``build_tree``, ``core_distances(tree, min_samples, 1)`` and ``prim_dense(features,
    core in input order)`` (``min_samples`` already capped at n - 1): the same arrays.
    """
    tp, perm, start, end, left, right, dim, lo, hi = _build(features, leaf_size)
    n = tp.shape[0]
    d2, _ = knn_lists(tp, start, end, left, right, dim, lo, hi, min(n, min_samples + 1))
    col = min(min_samples, n - 1)
    core_orig = np.empty(n)
    for r in range(n):
        core_orig[perm[r]] = math.sqrt(d2[r, col])
    return prim_dense(features, core_orig)


@njit(cache=True, nogil=True)
def condensed_tree(mst, order, min_cluster_size):
    """:func:`single_linkage` of the MST rows taken in ``order`` (hdbscan's sort, done by the caller in numpy),
    :func:`condense_tree` and :func:`cluster_stability`: (parent, child, lambda, size, stability)."""
    m = mst.shape[0]
    src = np.empty(m)
    dst = np.empty(m)
    w = np.empty(m)
    for i in range(m):
        j = order[i]
        src[i] = mst[j, 0]
        dst[i] = mst[j, 1]
        w[i] = mst[j, 2]
    hier = _single_linkage(src, dst, w, m + 1)
    parent, child, lam, size = condense_tree(hier, min_cluster_size)
    return parent, child, lam, size, cluster_stability(parent, child, lam, size)


@njit(cache=True, nogil=True)
def label_selected(parent, child, lam, clusters, single_root, epsilon):
    """:func:`label_points` with cluster ``clusters[i]`` (ids, ascending) labelled i."""
    top = max(parent.max(), child.max()) + 1
    selected = np.zeros(top, dtype=np.bool_)
    label_of = np.full(top, -1, dtype=np.int64)
    for label in range(clusters.shape[0]):
        selected[clusters[label]] = True
        label_of[clusters[label]] = label
    return label_points(parent, child, lam, selected, label_of, single_root, epsilon)


@njit(cache=True, nogil=True)
def _mark_below(node, first, kids, queue, flags, value):
    """flags[c - root] = value for every cluster c strictly below ``node`` (CSR children ``first``/``kids``, ids - root)."""
    queue[0] = node
    head = 0
    tail = 1
    while head < tail:
        c = queue[head]
        head += 1
        for s in range(first[c], first[c + 1]):
            queue[tail] = kids[s]
            tail += 1
            flags[kids[s]] = value


@njit(cache=True, nogil=True)
def select_clusters_eom(parent, child, lam, size, stability, root, epsilon, allow_single_cluster):
    """Selected cluster ids, ascending: hdbscan's get_clusters ('eom', with cluster_selection_epsilon).

    :func:`.hdbscan_native.select_clusters` (hdbscan's own steps in Python, with its dict and set order)
    compiled. The excess of mass visits the clusters in descending id, summing each one's children's
    stabilities in a float32 in row order, as hdbscan does. The epsilon search does not depend on the
    order hdbscan iterates its set of leaves in: in a condensed tree a child is born no farther than its
    parent (1 / lambda), and siblings are born together, so every cluster below a leaf's ``up`` (the
    lowest ancestor born farther than epsilon) is born within epsilon and a leaf skipped as already
    under an earlier ``up`` would have climbed to that same ``up``. ``tests/stages/test_stages_cluster_native.py``
    compares the two on random, helix and lattice clouds with several settings.
    """
    m = stability.shape[0]  # clusters root .. root + m - 1, indexed from 0
    # the cluster rows (child size > 1) in row order: children lists (CSR), each child's parent and birth lambda
    count = np.zeros(m + 1, dtype=np.int64)
    up_of = np.full(m, -1, dtype=np.int64)
    birth = np.zeros(m)
    rows = 0
    for i in range(parent.shape[0]):
        if size[i] > 1:
            count[parent[i] - root + 1] += 1
            rows += 1
    first = np.zeros(m + 1, dtype=np.int64)
    for c in range(m):
        first[c + 1] = first[c] + count[c + 1]
    kids = np.empty(rows, dtype=np.int64)
    fill = first[:m].copy()
    ct_root = -1
    for i in range(parent.shape[0]):
        if size[i] > 1:
            p = parent[i] - root
            c = child[i] - root
            kids[fill[p]] = c
            fill[p] += 1
            up_of[c] = p
            birth[c] = lam[i]
            if ct_root < 0 or p < ct_root:
                ct_root = p
    stab = stability.copy()
    is_cluster = np.ones(m, dtype=np.bool_)
    lowest = 0 if allow_single_cluster else 1  # without allow_single_cluster the root is never a candidate
    if not allow_single_cluster:
        is_cluster[0] = False
    queue = np.empty(m, dtype=np.int64)
    for node in range(m - 1, lowest - 1, -1):
        subtree = 0.0
        if first[node + 1] > first[node]:
            total = np.float32(0.0)
            for s in range(first[node], first[node + 1]):
                total = np.float32(np.float64(total) + stab[kids[s]])
            subtree = np.float64(total)
        if subtree > stab[node]:
            is_cluster[node] = False
            stab[node] = subtree
        elif first[node + 1] > first[node]:
            _mark_below(node, first, kids, queue, is_cluster, False)
    if not allow_single_cluster:
        is_cluster[0] = False
    if epsilon != 0.0 and rows > 0:
        n_eom = 0
        only = -1
        for c in range(lowest, m):
            if is_cluster[c]:
                n_eom += 1
                only = c
        chosen = np.zeros(m, dtype=np.bool_)
        if n_eom == 1 and only == ct_root:
            if allow_single_cluster:
                chosen[only] = True
        else:
            processed = np.zeros(m, dtype=np.bool_)
            for leaf in range(m - 1, lowest - 1, -1):
                if not is_cluster[leaf]:
                    continue
                if 1.0 / birth[leaf] < epsilon:
                    if not processed[leaf]:
                        c = leaf
                        while True:  # hdbscan's traverse_upwards
                            p = up_of[c]
                            if p == ct_root:
                                c = p if allow_single_cluster else c
                                break
                            if 1.0 / birth[p] > epsilon:
                                c = p
                                break
                            c = p
                        chosen[c] = True
                        _mark_below(c, first, kids, queue, processed, True)
                else:
                    chosen[leaf] = True
        for c in range(lowest, m):
            is_cluster[c] = chosen[c]
    n_sel = 0
    for c in range(m):
        n_sel += is_cluster[c]
    out = np.empty(n_sel, dtype=np.int64)
    j = 0
    for c in range(m):
        if is_cluster[c]:
            out[j] = c + root
            j += 1
    return out
