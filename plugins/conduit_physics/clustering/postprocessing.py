"""What every clusterer does after forming its clusters (Spyral HEAD's order): :func:`postprocess`.

1. local-outlier cleaning of each cluster (LOF, ``outlier_scale_factor``);
2. direction of each cluster (rotation sense around its circle, azimuth
   unwrapped, sense from the sign of the magnetic field);
3. joining of pieces of one track: ``continuity`` (end of one piece meets
   the start of the next), ``overlap`` (their circles overlap), or ``none``;
4. a second LOF cleaning;
5. the :class:`conduit.artifacts.Clusters` artifact, clusters ordered by the
   z of their first point.

Spyral defects fixed here (spyral_algorithms.md section 9): the overlap join
works (Spyral 1.1 raises TypeError), its R < 10 mm test applies to both
clusters of a pair, the azimuth is unwrapped before differencing, and the
rotation sense follows the sign of ``magnetic_field`` instead of being fixed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
from conduit.artifacts import Clusters, Direction
from conduit.params import Params, param

from .lof import LOF_OUTLIER, LofNeighbours, UnionPart  # (light: the compiled kernels load on first use)

__all__ = ["ClusterParams", "Piece", "circle_overlap_area", "postprocess", "scaled_features"]


class ClusterParams(Params):
    """The post-processing's parameters, shared by every clusterer (Spyral's ClusterParameters and defaults).

    A clusterer's own ``Params`` subclasses this and adds its settings.
    """

    min_cloud_size: int = param(50, "clouds with fewer points give no clusters", ge=0)
    z_scale: float = param(0.584, "factor on z in the clustering features (x, y, z * z_scale)", gt=0)
    outlier_scale_factor: float = param(
        0.1, "LOF n_neighbors = max(2, int(factor * cluster size)); 0 disables outlier cleaning", ge=0
    )
    lof_k_max: int = param(
        0,
        "largest LOF n_neighbors (caps factor * cluster size on large clusters); 0: no cap (Spyral; docs/analysis.md)",
        ge=0,
    )
    direction_threshold: float = param(0.5, "fraction of turning steps that decides FORWARD/BACKWARD", ge=0, lt=1)
    direction_smoothing: float = param(10.0, "smoothing-spline lam for the direction fit (Spyral: 10)", ge=0)
    join: Literal["continuity", "overlap", "none"] = param("continuity", "how pieces of one track are joined")
    join_radius_fraction: float = param(
        0.4, "continuity join: radius mismatch allowed, as a fraction of the mean circle radius", ge=0
    )
    join_z_fraction: float = param(0.2, "continuity join: z gap allowed, as a fraction of the pair's z span", ge=0)
    min_cluster_size_join: int = param(15, "overlap join: smaller clusters are not joined (points)", ge=1)
    circle_overlap_ratio: float = param(
        0.25, "overlap join: joined when the circles' overlap exceeds this fraction of the smaller circle", ge=0
    )
    reclean_joined: Literal["always", "changed", "never"] = param(
        "always",
        "second LOF cleaning of a joined cluster: 'always' (Spyral); 'changed': only when the first cleaning "
        "removed points from one of its pieces; 'never' (faster on large tracks; docs/analysis.md)",
    )



def scaled_features(cloud: np.ndarray, z_scale: float) -> np.ndarray:
    """(N, 3) clustering features x, y, z * z_scale (C-contiguous float64; z scaled in place of a copy)."""
    features = np.array(cloud[:, :3], dtype=np.float64, order="C")
    features[:, 2] *= z_scale
    return features


@dataclasses.dataclass
class Piece:
    """A cluster while it is being cleaned and joined: its label and cloud rows (ascending = by z).

    ``lof`` keeps the first LOF cleaning's rows, outliers and neighbour lists,
    so that the second cleaning reuses them: a piece that was not joined
    recomputes LOF from them, a joined piece (``parts``: the cleaned pieces
    joined into it) builds its lists from its parts' (:meth:`.lof.LofNeighbours.union`).
    """

    label: int
    rows: np.ndarray
    direction: int = Direction.NONE
    _circle: tuple[float, float, float] | None = None
    lof: tuple[np.ndarray, np.ndarray, Any] | None = None  # (rows cleaned, their outliers, their neighbour lists)
    lost_none: bool = False  # the first cleaning removed no point (of this piece, or of every piece joined into it)
    joined: bool = False
    parts: list[Piece] = dataclasses.field(default_factory=list)  # of a joined piece: the pieces joined into it

    def circle(self, cloud: np.ndarray) -> tuple[float, float, float]:
        if self._circle is None:
            from conduit_physics.tracks.fit import circle_fit  # (the module: the package's lazy names cost per call)

            xc, yc, r, ok = circle_fit(cloud[self.rows, 0], cloud[self.rows, 1])
            self._circle = (xc, yc, r) if ok else (math.nan, math.nan, math.nan)
        return self._circle


def lof_neighbour_count(size: int, params: ClusterParams) -> int:
    """LOF n_neighbors for a cluster of ``size`` points: max(2, int(outlier_scale_factor * size)), at most
    ``lof_k_max`` when that is set (> 0). (LOF itself then caps it at size - 1.)"""
    k = max(2, int(params.outlier_scale_factor * size))
    return min(k, params.lof_k_max) if params.lof_k_max > 0 else k


def _lof_clean(cloud: np.ndarray, piece: Piece, params: ClusterParams) -> Piece:
    """The piece without its local outliers (LOF with n_neighbors = :func:`lof_neighbour_count`)."""
    n = len(piece.rows)
    if params.outlier_scale_factor <= 0 or n < 2:
        return piece
    k = lof_neighbour_count(n, params)
    if piece.lof is not None:
        # Second cleaning of a piece that was not joined: its first neighbour lists, minus the outliers removed.
        _, gone, neighbours = piece.lof
        if not gone.any():
            return piece  # the same points and k as the first cleaning, which found no outlier
        scores = neighbours.without(gone, k).scores()[~gone]
        out = scores > LOF_OUTLIER
        return piece if not out.any() else Piece(piece.label, piece.rows[~out], piece.direction)
    if piece.parts:
        # Second cleaning of a joined piece: from its parts' first lists where their k suffices.
        neighbours = LofNeighbours.union(cloud[piece.rows, :3], k, [_union_part(piece.rows, p) for p in piece.parts])
        out = neighbours.scores() > LOF_OUTLIER
        return piece if not out.any() else Piece(piece.label, piece.rows[~out], piece.direction)
    neighbours, out, outliers = LofNeighbours.search_rows(cloud, piece.rows, k)
    kept = piece.rows[~out] if outliers else piece.rows
    return Piece(piece.label, kept, piece.direction, lof=(piece.rows, out, neighbours), lost_none=not outliers)


def _union_part(rows: np.ndarray, part: Piece):
    """``part`` (a cleaned piece) as a :class:`.lof.UnionPart` of the joined piece whose (sorted) cloud rows are ``rows``."""
    if part.lof is None:
        return UnionPart(np.searchsorted(rows, part.rows))
    before, gone, neighbours = part.lof
    where = np.searchsorted(rows, before)
    where[gone] = -1
    return UnionPart(where, neighbours)


def _direction(cloud: np.ndarray, rows: np.ndarray, params: ClusterParams, field: float) -> int:
    # from the modules, not the package: each of its lazy names is looked up anew on every use (~1 us each)
    from conduit_physics.tracks.fit import direction_of_rows
    from conduit_physics.tracks.helix import turning_sense

    return int(direction_of_rows(cloud, rows, float(params.direction_smoothing), float(params.direction_threshold),
                                 turning_sense(field)))


def _merge(cloud: np.ndarray, a: Piece, b: Piece, params: ClusterParams, field: float) -> Piece:
    rows = np.union1d(a.rows, b.rows)  # sorted row order = z order
    return Piece(a.label, rows, _direction(cloud, rows, params, field), lost_none=a.lost_none and b.lost_none,
                 joined=True, parts=(a.parts or [a]) + (b.parts or [b]))


def _end_point(cloud: np.ndarray, piece: Piece, last: bool) -> tuple[float, float]:
    """Median (distance from the piece's circle centre, z) of its last or first 3 points."""
    xc, yc, _ = piece.circle(cloud)
    rows = piece.rows[-3:] if last else piece.rows[:3]
    rho = np.hypot(cloud[rows, 0] - xc, cloud[rows, 1] - yc)
    return _median(rho.tolist()), _median(cloud[rows, 2].tolist())


def _median(values: list[float]) -> float:
    """np.median of a few values (the same number, without an array call per end of a piece)."""
    values = sorted(values)
    half = len(values) // 2
    return values[half] if len(values) % 2 else (values[half - 1] + values[half]) / 2.0


def _continuity_pair(cloud: np.ndarray, a: Piece, b: Piece, params: ClusterParams) -> bool:
    """Spyral HEAD's continuity test: A's end meets B's start in circle radius and in z."""
    _, _, ra = a.circle(cloud)
    _, _, rb = b.circle(cloud)
    if not (np.isfinite(ra) and np.isfinite(rb)):
        return False
    rho_a, z_a = _end_point(cloud, a, last=True)
    rho_b, z_b = _end_point(cloud, b, last=False)
    # rows ascend with z (the cloud is sorted by z): a piece's z range is that of its first and last row
    z_lo = min(cloud[a.rows[0], 2], cloud[b.rows[0], 2])
    z_hi = max(cloud[a.rows[-1], 2], cloud[b.rows[-1], 2])
    z_thresh = params.join_z_fraction * (z_hi - z_lo)
    rho_thresh = params.join_radius_fraction * 0.5 * (ra + rb)
    return abs(rho_a - rho_b) < rho_thresh and abs(z_a - z_b) < z_thresh


def circle_overlap_area(d: float, r1: float, r2: float) -> float:
    """Area shared by two circles of radii r1, r2 whose centres are d apart."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    c1 = min(1.0, max(-1.0, (d * d + r1 * r1 - r2 * r2) / (2.0 * d * r1)))
    c2 = min(1.0, max(-1.0, (d * d + r2 * r2 - r1 * r1) / (2.0 * d * r2)))
    k = (-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2)
    return r1 * r1 * math.acos(c1) + r2 * r2 * math.acos(c2) - 0.5 * math.sqrt(max(k, 0.0))


def _overlap_pair(cloud: np.ndarray, a: Piece, b: Piece, params: ClusterParams) -> bool:
    """Spyral's circle-overlap test (both clusters large enough and R >= 10 mm: Spyral checks only one)."""
    if len(a.rows) < params.min_cluster_size_join or len(b.rows) < params.min_cluster_size_join:
        return False
    xa, ya, ra = a.circle(cloud)
    xb, yb, rb = b.circle(cloud)
    if not all(np.isfinite(v) for v in (xa, ya, ra, xb, yb, rb)) or ra < 10.0 or rb < 10.0:
        return False
    area = circle_overlap_area(math.hypot(xa - xb, ya - yb), ra, rb)
    return area > params.circle_overlap_ratio * min(math.pi * ra * ra, math.pi * rb * rb)


def _join(cloud: np.ndarray, pieces: list[Piece], params: ClusterParams, field: float) -> list[Piece]:
    test = _continuity_pair if params.join == "continuity" else _overlap_pair
    while True:
        pieces.sort(key=lambda p: (cloud[p.rows[0], 2], p.label))
        used = [False] * len(pieces)
        out: list[Piece] = []
        changed = False
        for i, a in enumerate(pieces):
            if used[i]:
                continue
            for j in range(i + 1, len(pieces)):
                b = pieces[j]
                if used[j] or a.direction != b.direction:
                    continue
                if test(cloud, a, b, params):
                    a = _merge(cloud, a, b, params, field)
                    used[i] = used[j] = True
                    changed = True
                    break
            out.append(a)
        pieces = out
        if not changed:
            return pieces


def _keeps_joined(piece: Piece, params: ClusterParams) -> bool:
    """True for a joined piece that ``reclean_joined`` does not clean again ("changed": when no piece lost a point)."""
    mode = params.reclean_joined
    return piece.joined and (mode == "never" or (mode == "changed" and piece.lost_none))


def postprocess(cloud: np.ndarray, labels: np.ndarray, params: ClusterParams, field: float) -> Clusters:
    """Clean, orient, join and clean again the clusters given by ``labels`` (-1 = noise).

    ``cloud`` is the (N, 8) ``cloud`` artifact (rows sorted by z), ``labels``
    one int per row, ``field`` the magnetic field (T; its sign sets the
    rotation sense of a forward track).
    """
    n = len(cloud)
    labels = np.asarray(labels)
    pieces = [Piece(int(lab), np.flatnonzero(labels == lab)) for lab in np.unique(labels) if lab >= 0]
    pieces = [_lof_clean(cloud, p, params) for p in pieces]
    pieces = [p for p in pieces if len(p.rows)]
    for p in pieces:
        p.direction = _direction(cloud, p.rows, params, field)
    if params.join != "none" and len(pieces) > 1:
        pieces = _join(cloud, pieces, params, field)
    pieces = [p if _keeps_joined(p, params) else _lof_clean(cloud, p, params) for p in pieces]
    pieces = [p for p in pieces if len(p.rows)]
    pieces.sort(key=lambda p: (cloud[p.rows[0], 2], p.label))
    out = np.full(n, -1, dtype=np.int32)
    for p in pieces:
        out[p.rows] = p.label
    return Clusters(
        labels=out,
        cluster_labels=np.array([p.label for p in pieces], dtype=np.int32),
        directions=np.array([p.direction for p in pieces], dtype=np.int8),
    )
