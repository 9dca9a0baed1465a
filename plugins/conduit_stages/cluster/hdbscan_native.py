"""HDBSCAN labels computed here, equal to the hdbscan package's (``prims_kdtree``, method 'eom').

The hdbscan package spends most of an event in Prim's algorithm over all
pairs of points (O(n²): 40 ms at 2,400 points) and in Python-level tree
handling; here the minimum spanning tree of a large cloud comes from
Borůvka's algorithm on a KD-tree (small clouds: the same Prim's algorithm,
compiled) and the tree steps are compiled (:mod:`.hdbscan_kernels`). The
arithmetic is the package's: the same core distances, edge weights, lambdas
and stabilities (including its float32 sum of child stabilities), and its
cluster selection (compiled; :func:`select_clusters` keeps hdbscan's steps
in Python, with its dict and set iteration order, as the reference).

Where the labels can differ (clouds of more than :data:`DENSE_PRIM_POINTS`
points only): when two edges of the minimum spanning tree have exactly the same weight, hdbscan's order between them comes from its
Prim's visiting order and an unstable sort, ours from the points' indices.
The partition at every distance is the same, but a tie at a split can leave
a group of points as noise in one and as a small cluster in the other.
``tests/stages/test_stages_cluster_native.py`` checks equality on clouds
without ties and counts the differences on simulated events;
``benchmarks/stages.py --compare`` counts them on both event mixes.
"""

from __future__ import annotations

import numpy as np

from .hdbscan_kernels import (
    KNN_EXTRA,
    condensed_tree,
    core_distances,
    label_selected,
    mst_mutual_reachability,
    select_clusters_eom,
    small_mst,
)
from conduit_physics.clustering.kdtree import LEAF_SIZE, build_tree

__all__ = ["hdbscan_native", "select_clusters", "DENSE_PRIM_POINTS"]

#: Up to this many points the minimum spanning tree comes from hdbscan's own O(n²) Prim's algorithm
#: (:func:`.hdbscan_kernels.prim_dense`, faster there than the tree search); above, from Borůvka.
DENSE_PRIM_POINTS = 500


def hdbscan_native(
    features: np.ndarray,
    min_cluster_size: int,
    min_samples: int,
    cluster_selection_epsilon: float = 0.0,
    allow_single_cluster: bool = False,
) -> np.ndarray:
    """Labels (-1 noise) of (n, 3) ``features``: ``hdbscan.hdbscan(...)[0]`` with ``algorithm='prims_kdtree'``."""
    n = len(features)
    if min_cluster_size < 2:
        raise ValueError("min_cluster_size must be at least 2")
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    min_samples = max(1, min(n - 1, int(min_samples)))  # as hdbscan.hdbscan
    if n <= DENSE_PRIM_POINTS:
        # Prim's algorithm over all pairs needs the core distances only: one compiled call
        mst = small_mst(np.ascontiguousarray(features, dtype=np.float64), min_samples, LEAF_SIZE)
    else:
        # Borůvka settles points from longer lists
        tree = build_tree(features)
        core, knn_d2, knn_idx = core_distances(tree, min_samples, KNN_EXTRA)
        mst = mst_mutual_reachability(tree, core, knn_d2, knn_idx)
    # hdbscan's sort of the edges by weight (numpy's own, for its order between equal weights), then one call
    parent, child, lam, size, stability = condensed_tree(mst, np.argsort(mst.T[2]), int(min_cluster_size))
    root = n
    clusters = select_clusters_eom(parent, child, lam, size, stability, root, float(cluster_selection_epsilon),
                                   bool(allow_single_cluster))
    single_root = len(clusters) == 1 and bool(allow_single_cluster) and clusters[0] == root
    return label_selected(parent, child, lam, clusters, single_root, float(cluster_selection_epsilon))


def select_clusters(
    parent: np.ndarray,
    child: np.ndarray,
    lam: np.ndarray,
    size: np.ndarray,
    stability: np.ndarray,
    root: int,
    epsilon: float,
    allow_single_cluster: bool,
) -> list[int]:
    """Selected cluster ids, ascending: hdbscan's get_clusters ('eom', with cluster_selection_epsilon).

    hdbscan's steps in Python, with its dict and set iteration order: the reference for the compiled
    :func:`.hdbscan_kernels.select_clusters_eom`, which :func:`hdbscan_native` calls.
    """
    stab = dict(zip(range(root, root + len(stability)), stability.tolist()))
    node_list = sorted(stab, reverse=True)
    if not allow_single_cluster:
        node_list = node_list[:-1]
    is_cluster = {c: True for c in node_list}
    rows = np.flatnonzero(size > 1)
    ct_parent = parent[rows].tolist()
    ct_child = child[rows].tolist()
    ct_lambda = lam[rows].tolist()
    parent_to_children: dict[int, list[int]] = {}
    for p, c in zip(ct_parent, ct_child):
        parent_to_children.setdefault(p, []).append(c)
    child_lookup = {c: (p, lv) for p, c, lv in zip(ct_parent, ct_child, ct_lambda)}
    ct_root = min(ct_parent) if ct_parent else 0

    for node in node_list:
        children = parent_to_children.get(node)
        # hdbscan sums the children's stabilities in a C float (float32); a leaf's sum is 0
        subtree = 0.0
        if children:
            total = np.float32(0.0)
            for ch in children:
                total = np.float32(float(total) + stab[ch])
            subtree = float(total)
        if subtree > stab[node]:
            is_cluster[node] = False
            stab[node] = subtree
        elif children:  # (a leaf has no descendants to unselect)
            for sub in _bfs(parent_to_children, node):
                if sub != node:
                    is_cluster[sub] = False

    if epsilon != 0.0 and ct_parent:
        eom = [c for c in is_cluster if is_cluster[c]]
        chosen: set[int] | list[int] = []
        if len(eom) == 1 and eom[0] == ct_root:
            if allow_single_cluster:
                chosen = eom
        else:
            chosen = _epsilon_search(set(eom), child_lookup, parent_to_children, epsilon, allow_single_cluster,
                                     ct_root)
        for c in is_cluster:
            is_cluster[c] = c in chosen
    return sorted({c for c in is_cluster if is_cluster[c]})


def _bfs(parent_to_children: dict[int, list[int]], root: int) -> list[int]:
    out: list[int] = []
    level = [root]
    while level:
        out.extend(level)
        nxt: list[int] = []
        for node in level:
            nxt.extend(parent_to_children.get(node, ()))
        level = nxt
    return out


def _traverse_upwards(child_lookup, epsilon: float, leaf: int, allow_single_cluster: bool, root: int) -> int:
    while True:
        parent = child_lookup[leaf][0]
        if parent == root:
            return parent if allow_single_cluster else leaf
        if 1.0 / child_lookup[parent][1] > epsilon:
            return parent
        leaf = parent


def _epsilon_search(leaves: set[int], child_lookup, parent_to_children, epsilon: float, allow_single_cluster: bool,
                    root: int) -> set[int]:
    """hdbscan's epsilon search; iterates ``leaves`` in the set's own order, as hdbscan does."""
    selected: list[int] = []
    processed: set[int] = set()
    for leaf in leaves:
        if 1.0 / child_lookup[leaf][1] < epsilon:
            if leaf not in processed:
                up = _traverse_upwards(child_lookup, epsilon, leaf, allow_single_cluster, root)
                selected.append(up)
                for sub in _bfs(parent_to_children, up):
                    if sub != up:
                        processed.add(sub)
        else:
            selected.append(leaf)
    return set(selected)
