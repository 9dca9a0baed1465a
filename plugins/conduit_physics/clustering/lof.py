"""Local outlier factor of a cluster's points, and the neighbour lists kept to recompute it after removals.

Equal to scikit-learn's ``LocalOutlierFactor`` (n_neighbors capped at n - 1,
neighbours at equal distance taken in index order). The compiled kernels are
in :mod:`.lof_kernels` on the KD-tree of :mod:`.kdtree`. Used by the
post-processing of every clusterer (:func:`conduit_physics.clustering.postprocess`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["LofNeighbours", "UnionPart", "lof_outliers", "lof_scores", "LOF_OUTLIER"]

#: LocalOutlierFactor(contamination='auto') calls a point an outlier above this LOF.
LOF_OUTLIER = 1.5

#: :meth:`LofNeighbours.without` compares the points left with too few neighbours with every remaining point
#: while they are at most 1 / BRUTE_ROWS_FRACTION of them (each costs a pass over the set); else it searches afresh.
BRUTE_ROWS_FRACTION = 8


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
    return lof_scores(points, n_neighbors) > LOF_OUTLIER


@dataclasses.dataclass
class UnionPart:
    """One part of a union of point sets, for :meth:`LofNeighbours.union`.

    ``where[i]`` is the union row of the part's i-th point (-1: not in the
    union, e.g. removed as an outlier), ascending over the points kept (the
    union keeps each part's order, so that ties at equal distance go the same
    way); ``neighbours`` are the part's earlier lists over those same points
    (None: none kept).
    """

    where: np.ndarray
    neighbours: LofNeighbours | None = None


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

    @classmethod
    def search_scored(cls, points: np.ndarray, n_neighbors: int) -> tuple[LofNeighbours, np.ndarray]:
        """``(search(points, n_neighbors), its scores())`` from one compiled call (:func:`.lof_kernels.lof_search_scores`)."""
        from .kdtree import LEAF_SIZE
        from .lof_kernels import lof_search_scores

        pts = np.ascontiguousarray(points, dtype=np.float64)
        n = len(pts)
        k = min(int(n_neighbors), n - 1)
        if k < 1:
            found = cls.search(pts, n_neighbors)
            return found, found.scores()
        tp, perm, nbr, nd, kdist, keep, scores = lof_search_scores(pts, k, LEAF_SIZE)
        return cls(tp, perm, nbr, nd, kdist, keep), scores

    @classmethod
    def search_rows(cls, cloud: np.ndarray, rows: np.ndarray, n_neighbors: int) -> tuple[LofNeighbours, np.ndarray, int]:
        """``search(cloud[rows, :3], n_neighbors)``, which of those points are outliers (LOF > :data:`LOF_OUTLIER`)
        and how many, from one compiled call (:func:`.lof_kernels.lof_rows_outliers`; ``cloud`` float64)."""
        from .kdtree import LEAF_SIZE
        from .lof_kernels import lof_rows_outliers

        k = min(int(n_neighbors), len(rows) - 1)
        if k < 1:
            found = cls.search(cloud[rows, :3], n_neighbors)
            out = found.scores() > LOF_OUTLIER
            return found, out, int(out.sum())
        tp, perm, nbr, nd, kdist, keep, out, count = lof_rows_outliers(cloud, rows, k, LEAF_SIZE, LOF_OUTLIER)
        return cls(tp, perm, nbr, nd, kdist, keep), out, int(count)

    @classmethod
    def union(cls, points: np.ndarray, n_neighbors: int, parts: list[UnionPart]) -> LofNeighbours:
        """The lists of the union of ``parts`` (``points``, set order), reusing the parts' own earlier lists.

        Each point of a part whose earlier lists hold at least k (=
        ``n_neighbors`` capped at n - 1) neighbours gets its k nearest in the
        union from those and from the nearby points of the other parts
        (:func:`.lof_kernels.lof_union_rows`); the other points are searched
        in the union's tree (:func:`.lof_kernels.lof_rows_search`). The same
        neighbours and distances as :meth:`search`, possibly in another order
        within a list (so LOF equal up to rounding in the last bits).
        """
        from .kdtree import build_tree
        from .lof_kernels import lof_rows_search, lof_union_rows

        pts = np.ascontiguousarray(points, dtype=np.float64)
        n = len(pts)
        k = min(int(n_neighbors), n - 1)
        listed = [p.neighbours is not None and p.neighbours.k >= k >= 1 for p in parts]
        if not any(listed):
            return cls.search(pts, n_neighbors)
        tree = build_tree(pts)
        row_of = np.empty(n, dtype=np.int64)  # union point -> tree row
        row_of[tree.perm] = np.arange(n)
        members = [row_of[p.where[p.where >= 0]] for p in parts]
        grp_rows = np.concatenate(members)
        grp_ptr = np.zeros(len(parts) + 1, dtype=np.int64)
        grp_ptr[1:] = np.cumsum([len(m) for m in members])
        nbr = np.empty((n, k), dtype=np.int32)
        nd = np.empty((n, k))
        kdist = np.zeros(n)
        ok = np.zeros(n, dtype=np.bool_)
        for g, (part, has) in enumerate(zip(parts, listed)):
            if has:
                old = part.neighbours
                # the part's own rows (its tree order) -> union tree rows, -1 for points no longer in it
                where = part.where[old.perm]
                old_row = np.where((where >= 0) & old.keep, row_of[where], -1)
                lof_union_rows(tree.points, tree.perm, old.nbr, old.nd, old.kdist, old_row, g, grp_rows, grp_ptr, nbr,
                               nd, kdist, ok)
        if not ok.all():
            lof_rows_search(tree.points, tree.perm, tree.start, tree.end, tree.left, tree.right, tree.dim, tree.lo,
                            tree.hi, ~ok, nbr, nd, kdist)
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
        entries from the ordered list); the few that lost too many are
        compared with every remaining point; when many did, the set is
        searched afresh.
        """
        from .lof_kernels import lof_fewer, lof_rows_brute

        gone_rows = ~self.keep.copy()
        gone_rows[np.argsort(self.perm)[gone]] = True  # set order -> tree rows
        left = int((~gone_rows).sum())
        k = min(int(n_neighbors), left - 1)
        if 1 <= k <= self.k:
            nbr, nd, kdist, ok = lof_fewer(self.nbr, self.nd, self.perm, gone_rows, k)
            short = np.flatnonzero(~ok & ~gone_rows)
            if len(short) * BRUTE_ROWS_FRACTION <= left:
                if len(short):
                    lof_rows_brute(self.points, self.perm, ~gone_rows, short, nbr, nd, kdist)
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

