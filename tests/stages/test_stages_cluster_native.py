"""The compiled clustering kernels against their references.

* HDBSCAN (``algorithm = "native"``): labels equal to the hdbscan package's
  (``prims_kdtree``), element for element, on random clouds, helices and
  simulated events of both event mixes; on points of a lattice (many exactly
  equal distances) the differences are counted and explained.
* LOF on the KD-tree: equal to scikit-learn for large k, and after points are
  removed (the second cleaning reuses the first one's neighbour lists).
* The whole ``cluster.hdbscan`` stage: the same artifact with the compiled
  kernels as with the hdbscan package and the previous brute-force LOF.
"""

from __future__ import annotations

import hdbscan
import numpy as np
import pytest
from conduit.detector import DetectorParams
from conduit.stage import RunContext
from conduit_physics.clustering import scaled_features
from conduit_stages.cluster.hdbscan_native import hdbscan_native
from conduit_stages.cluster.hdbscan_stage import HdbscanParams, HdbscanStage
from conduit_physics.clustering.lof import LofNeighbours, lof_scores
from stages_synth import helix_points

SETTINGS = [  # (min_cluster_size, min_samples, cluster_selection_epsilon, allow_single_cluster)
    (10, 3, 10.0, True),  # the stage's defaults
    (5, 3, 0.0, False),
    (5, 1, 2.0, False),
    (12, 4, 0.0, True),
    (3, 2, 25.0, True),
]


def reference(features, mcs, ms, eps, single):
    return hdbscan.hdbscan(features, min_cluster_size=mcs, min_samples=ms, cluster_selection_epsilon=eps,
                           allow_single_cluster=single, algorithm="prims_kdtree", core_dist_n_jobs=1)[0]


def random_cloud(rng) -> np.ndarray:
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.5:
            parts.append(rng.normal(rng.uniform(-100, 100, 3), rng.uniform(1, 12), (int(rng.integers(3, 150)), 3)))
        else:
            pts = helix_points(tuple(rng.uniform(-20, 20, 2)) + (rng.uniform(100, 800),), rng.uniform(0.3, 2.8),
                               rng.uniform(0, 6.3), rng.uniform(30, 150), step=rng.uniform(1, 4), noise=1.0, rng=rng)
            parts.append(pts[: int(rng.integers(5, 400))])
    parts.append(rng.uniform(-250, 250, (int(rng.integers(0, 30)), 3)))
    return np.ascontiguousarray(np.vstack(parts))


def test_native_hdbscan_labels_equal_the_hdbscan_package_on_random_clouds():
    rng = np.random.default_rng(17)
    compared = clustered = 0
    for _ in range(120):
        cloud = random_cloud(rng)
        for mcs, ms, eps, single in SETTINGS:
            if len(cloud) <= mcs:
                continue
            expected = reference(cloud, mcs, ms, eps, single)
            got = hdbscan_native(cloud, mcs, ms, eps, single)
            np.testing.assert_array_equal(got, expected)
            compared += 1
            clustered += int(expected.max() >= 1)
    assert compared > 500 and clustered > 200


@pytest.mark.parametrize("n", [2, 3, 4, 11])
def test_native_hdbscan_on_tiny_and_duplicated_clouds(n):
    rng = np.random.default_rng(n)
    clouds = [rng.normal(0, 5, (n, 3)), np.zeros((n, 3)), np.repeat(rng.normal(0, 5, (max(1, n // 2), 3)), 2, 0)]
    for cloud in clouds:
        cloud = np.ascontiguousarray(cloud)
        for mcs, ms, eps, single in [(2, 3, 0.0, False), (2, 1, 1.0, True), (3, 2, 0.0, True)]:
            np.testing.assert_array_equal(hdbscan_native(cloud, mcs, ms, eps, single),
                                          reference(cloud, mcs, ms, eps, single))


def test_native_hdbscan_on_lattice_points_with_many_equal_distances():
    """On integer points many pairs are exactly as far apart. Up to DENSE_PRIM_POINTS points the tree
    comes from hdbscan's own Prim's algorithm: equal labels whatever the ties. Above, hdbscan breaks
    ties by its Prim's visiting order and an unstable sort; where the labels then differ, the
    single-linkage merge heights (the hierarchy up to the order of equal merges) are still the same."""
    from hdbscan.hdbscan_ import _hdbscan_prims_kdtree

    from conduit_stages.cluster import hdbscan_kernels as hk
    from conduit_stages.cluster.hdbscan_native import DENSE_PRIM_POINTS
    from conduit_physics.clustering.kdtree import build_tree

    rng = np.random.default_rng(5)
    for _ in range(60):
        cloud = rng.integers(0, 12, (int(rng.integers(20, DENSE_PRIM_POINTS)), 3)).astype(float)
        for mcs, ms, eps, single in SETTINGS[:3]:
            np.testing.assert_array_equal(hdbscan_native(cloud, mcs, ms, eps, single),
                                          reference(cloud, mcs, ms, eps, single))
    differ = total = 0
    for _ in range(8):
        cloud = rng.integers(0, 25, (int(rng.integers(DENSE_PRIM_POINTS + 1, 900)), 3)).astype(float)
        for mcs, ms, eps, single in SETTINGS[:3]:
            total += 1
            if np.array_equal(hdbscan_native(cloud, mcs, ms, eps, single), reference(cloud, mcs, ms, eps, single)):
                continue
            differ += 1
            expected, _ = _hdbscan_prims_kdtree(cloud, ms)
            tree = build_tree(cloud)
            core, d2, idx = hk.core_distances(tree, ms)
            got = hk.single_linkage(hk.mst_mutual_reachability(tree, core, d2, idx))
            np.testing.assert_array_equal(got[:, 2], expected[:, 2])
    assert total == 24 and differ < total  # about half differ on this lattice, never in the heights


def simulated_clouds(preset: str, events: int, seed: int) -> list[np.ndarray]:
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams
    from conduit_stages.pointcloud.stage import PointcloudStage

    sim = Simulator(SimulationParams(seed=seed, events=events, preset=preset), DetectorParams())
    stage = PointcloudStage(PointcloudStage.Params(), RunContext())
    clouds = []
    for i in range(events):
        event = sim.event(i).event
        stage.process(event)
        clouds.append(event.artifacts["cloud"])
    return clouds


@pytest.fixture(scope="module")
def dense_clouds():
    return simulated_clouds("dense", 40, 71)


@pytest.fixture(scope="module")
def default_clouds():
    return simulated_clouds("default", 20, 72)


def test_native_hdbscan_labels_equal_the_package_on_simulated_events(dense_clouds, default_clouds):
    params = HdbscanParams()
    compared = big = 0
    for cloud in dense_clouds + default_clouds:
        if len(cloud) < params.min_cloud_size:
            continue
        features = scaled_features(cloud, params.z_scale)
        mcs = max(int(params.min_size_scale_factor * len(cloud)), params.min_size_lower_cutoff)
        expected = reference(features, mcs, params.min_points, params.cluster_selection_epsilon, True)
        np.testing.assert_array_equal(hdbscan_native(features, mcs, params.min_points,
                                                     params.cluster_selection_epsilon, True), expected)
        compared += 1
        big += len(cloud) > 700
    assert compared >= 50 and big >= 3  # the dense mix brings clouds of many hundreds of points


def test_the_stage_gives_the_same_clusters_as_with_the_hdbscan_package(dense_clouds, default_clouds):
    context = RunContext(detector=DetectorParams(magnetic_field=2.85))
    native = HdbscanStage(HdbscanParams(reclean_joined="always"), context)  # the exact path: every cleaning
    package = HdbscanStage(HdbscanParams(algorithm="prims_kdtree", reclean_joined="always"), context)
    clustered = 0
    for cloud in dense_clouds + default_clouds:
        a = native.cluster(cloud)
        b = package.cluster(cloud)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.cluster_labels, b.cluster_labels)
        np.testing.assert_array_equal(a.directions, b.directions)
        clustered += a.count
    assert clustered > 60


def ordered_mst(points: np.ndarray, ms: int) -> set[tuple[int, int]]:
    """The minimum spanning tree of the mutual-reachability graph over all pairs, ties broken by
    (weight, smaller index, larger index): Prim's algorithm in numpy, as the reference of Borůvka's edges."""
    n = len(points)
    dist = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    core = np.sort(dist, axis=1)[:, min(ms, n - 1)]
    weight = np.maximum(dist, np.maximum(core[:, None], core[None, :]))
    inside = np.zeros(n, dtype=bool)
    best_w = np.full(n, np.inf)
    best_src = np.full(n, -1)
    edges: set[tuple[int, int]] = set()
    new = 0
    for _ in range(n - 1):
        inside[new] = True
        w = weight[new]
        lo_old = np.minimum(best_src, np.arange(n))
        hi_old = np.maximum(best_src, np.arange(n))
        lo_new = np.minimum(new, np.arange(n))
        hi_new = np.maximum(new, np.arange(n))
        better = (w < best_w) | ((w == best_w) & ((lo_new < lo_old) | ((lo_new == lo_old) & (hi_new < hi_old))))
        better &= ~inside
        best_w[better] = w[better]
        best_src[better] = new
        out = np.flatnonzero(~inside)
        lo = np.minimum(best_src[out], out)
        hi = np.maximum(best_src[out], out)
        pick = out[np.lexsort((hi, lo, best_w[out]))[0]]
        edges.add((int(min(pick, best_src[pick])), int(max(pick, best_src[pick]))))
        new = pick
    return edges


def test_boruvka_gives_the_minimum_spanning_tree_with_ties_broken_by_index(dense_clouds):
    """Borůvka's edges (rows settled by their neighbour lists, kept from round to round, or searched)
    are the one minimum spanning tree of the order (weight, smaller index, larger index), also when
    many weights are equal (lattice points)."""
    from conduit_physics.clustering.kdtree import build_tree
    from conduit_stages.cluster import hdbscan_kernels as hk

    rng = np.random.default_rng(23)
    clouds = [rng.integers(0, 14, (int(rng.integers(300, 700)), 3)).astype(float) for _ in range(4)]
    clouds += [random_cloud(rng) for _ in range(6)]
    clouds += [scaled_features(c, 0.584) for c in sorted(dense_clouds, key=len)[-2:]]
    checked = 0
    for cloud in clouds:
        for ms in (1, 3, 5):
            tree = build_tree(cloud)
            core, d2, idx = hk.core_distances(tree, ms)
            a, b = hk._boruvka(tree.points, tree.perm, core, d2, idx, tree.start, tree.end, tree.left, tree.right,
                               tree.dim, tree.lo, tree.hi)
            a, b = tree.perm[a], tree.perm[b]
            got = set(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()))
            assert len(got) == len(cloud) - 1
            assert got == ordered_mst(cloud, ms)
            checked += 1
    assert checked == 36


# ---------------------------------------------------------------- LOF


def spiral(rng, n: int) -> np.ndarray:
    """A proton curling up near 90 degrees: loops of a shrinking circle, close in z, with noise."""
    pts = helix_points((0, 0, 400), 1.45, rng.uniform(0, 6.3), 120, step=1.5, shrink=0.7, noise=1.5, rng=rng,
                       length=2500.0)
    pts = pts[:n]
    pts[: n // 40] += rng.normal(0, 30, (n // 40, 3))  # outliers
    return np.ascontiguousarray(pts)


@pytest.mark.parametrize("n, factor", [(900, 0.1), (1600, 0.1), (600, 0.3)])
def test_lof_with_many_neighbours_equals_sklearn(n, factor):
    from sklearn.neighbors import LocalOutlierFactor

    rng = np.random.default_rng(n)
    pts = spiral(rng, n)
    k = max(2, int(factor * len(pts)))
    sk = LocalOutlierFactor(n_neighbors=k)
    expected_outliers = sk.fit_predict(pts) == -1
    scores = lof_scores(pts, k)
    np.testing.assert_allclose(scores, -sk.negative_outlier_factor_, rtol=1e-9)
    np.testing.assert_array_equal(scores > 1.5, expected_outliers)
    assert expected_outliers.sum() < len(pts) // 5
    assert factor > 0.2 or expected_outliers.sum() > 0  # with k = 10 % some of the scattered points stand out


@pytest.mark.parametrize("cloud", ["lattice", "spiral"])
def test_lof_neighbour_lists_are_the_k_nearest_with_ties_by_index(cloud):
    """Every row's list is its k nearest by (squared distance, index), against a brute-force ranking in numpy.

    The lattice has many points at exactly the k-th distance (the band's last bucket is ranked by index);
    the spiral is the dense mix's shape with k = 10 % (150 neighbours)."""
    rng = np.random.default_rng(11)
    if cloud == "lattice":
        g = np.arange(9, dtype=float) * 2.0
        pts = np.ascontiguousarray(np.array(np.meshgrid(g, g, g[:5])).reshape(3, -1).T)  # 405 points
        pts = pts[rng.permutation(len(pts))]
    else:
        pts = spiral(rng, 1500)
    k = int(0.1 * len(pts))
    found = LofNeighbours.search(pts, k)
    d = pts[:, None, :] - pts[None, :, :]
    e = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]  # the kernel's sum order
    row_of = np.argsort(found.perm)
    ties = 0
    for i in range(len(pts)):
        order = np.lexsort((np.arange(len(pts)), e[i]))
        order = order[order != i][:k]
        ties += int(np.sum(e[i] == e[i, order[-1]]) > np.sum(e[i, order] == e[i, order[-1]]))
        row = row_of[i]
        np.testing.assert_array_equal(np.sort(found.perm[found.nbr[row]]), np.sort(order))
        np.testing.assert_array_equal(np.sort(found.nd[row]), np.sqrt(e[i, order]))
        assert found.kdist[row] == np.sqrt(e[i, order[-1]])
    assert cloud == "spiral" or ties > 100  # the lattice does exercise the tie rule


def union_case(case: str):
    """(union points, k, parts) for :meth:`LofNeighbours.union`: parts with and without usable earlier lists.

    "spiral": a 1,700-point track cut into a piece of 1,200 points (12 outliers of its first set removed, its
    lists k = 100), one of 300 (k = 30: too few, searched) and one of 200 (no lists); "lattice": a 9 x 9 x 10
    lattice (many points at exactly the k-th distance) in two halves, one with k = 40 and one with k = 50 (the
    union's k = 40), interleaved at random in the union so that ties go either way across the halves."""
    from conduit_physics.clustering.lof import UnionPart

    rng = np.random.default_rng(5)
    if case == "spiral":
        track = spiral(rng, 1700)[1700 // 40:]  # without the spiral's own outliers (each part gets its own)
        noise = track[rng.integers(0, 1200, 12)] + rng.normal(0, 25, (12, 3))
        pieces = [(np.concatenate([track[:1200], noise]), 100, 12), (track[1200:1500], 30, 0), (track[1500:], 0, 0)]
        k = 100
    else:
        g = np.arange(9, dtype=float) * 2.0
        lattice = np.array(np.meshgrid(g, g, np.arange(10, dtype=float) * 2.0)).reshape(3, -1).T
        low = lattice[:, 2] < 9.0
        pieces = [(lattice[low], 40, 0), (lattice[~low], 50, 0)]
        k = 40
    # the parts interleaved at random in the union, each keeping its own order (as a joined cluster's sorted rows)
    owner = rng.permutation(np.repeat(np.arange(len(pieces)), [len(p) - gone for p, _, gone in pieces]))
    union = np.empty((len(owner), 3))
    parts = []
    for j, (points, part_k, gone) in enumerate(pieces):
        kept = len(points) - gone
        where = np.full(len(points), -1)
        where[:kept] = np.flatnonzero(owner == j)  # the part's last ``gone`` points are removed
        union[where[:kept]] = points[:kept]
        parts.append(UnionPart(where, LofNeighbours.search(points, part_k) if part_k else None))
    return np.ascontiguousarray(union), k, parts


@pytest.mark.parametrize("case", ["spiral", "lattice"])
def test_lof_lists_of_a_union_from_its_parts_equal_a_search_of_the_union(case):
    """``LofNeighbours.union`` (a joined cluster's second cleaning) gives every point its k nearest of the union by
    (squared distance, index), against a brute-force ranking in numpy, and LOF equal to a fresh search's."""
    union, k, parts = union_case(case)
    found = LofNeighbours.union(union, k, parts)
    d = union[:, None, :] - union[None, :, :]
    e = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]  # the kernel's sum order
    row_of = np.argsort(found.perm)
    for i in range(len(union)):
        order = np.lexsort((np.arange(len(union)), e[i]))
        order = order[order != i][:k]
        row = row_of[i]
        np.testing.assert_array_equal(np.sort(found.perm[found.nbr[row]]), np.sort(order))
        np.testing.assert_array_equal(np.sort(found.nd[row]), np.sqrt(e[i, order]))
        assert found.kdist[row] == np.sqrt(e[i, order[-1]])
    np.testing.assert_allclose(found.scores(), LofNeighbours.search(union, k).scores(), rtol=1e-13)


@pytest.mark.parametrize("seed", range(4))
def test_lof_after_removing_points_equals_a_fresh_fit(seed):
    from sklearn.neighbors import LocalOutlierFactor

    rng = np.random.default_rng(seed)
    pts = spiral(rng, int(rng.integers(80, 700))) if seed % 2 else rng.normal(0, 20, (int(rng.integers(30, 400)), 3))
    k = max(2, int(0.1 * len(pts)))
    first = LofNeighbours.search(pts, k)
    gone = rng.random(len(pts)) < (0.02 if seed < 2 else 0.3)  # few (lists reused) or many (searched afresh)
    left = pts[~gone]
    k2 = max(2, int(0.1 * len(left)))
    expected = -LocalOutlierFactor(n_neighbors=min(k2, len(left) - 1)).fit(left).negative_outlier_factor_
    second = first.without(gone, k2)
    np.testing.assert_allclose(second.scores()[~gone], expected, rtol=1e-9)
    assert np.all(second.scores()[gone] == 1.0)
    # and once more, removing from the reduced set
    gone2 = gone | (rng.random(len(pts)) < 0.05)
    left2 = pts[~gone2]
    k3 = max(2, int(0.1 * len(left2)))
    expected2 = -LocalOutlierFactor(n_neighbors=min(k3, len(left2) - 1)).fit(left2).negative_outlier_factor_
    np.testing.assert_allclose(second.without(gone2 & ~gone, k3).scores()[~gone2], expected2, rtol=1e-9)


# ---------------------------------------------------------------- the densest events, against the reference


def sklearn_lof(points: np.ndarray, factor: float) -> np.ndarray:
    """The reference scores (Spyral's cleaning): scikit-learn's LocalOutlierFactor, brute force."""
    from sklearn.neighbors import LocalOutlierFactor

    k = max(2, int(factor * len(points)))
    lof = LocalOutlierFactor(n_neighbors=min(k, len(points) - 1), algorithm="brute").fit(points)
    return -lof.negative_outlier_factor_


def event_cloud(preset: str, index: int, seed: int, events: int) -> np.ndarray:
    """The cloud of event ``index`` of a simulated run (``events`` long) of ``preset``."""
    from conduit_simulate.generator import Simulator
    from conduit_simulate.params import SimulationParams
    from conduit_stages.pointcloud.stage import PointcloudStage

    event = Simulator(SimulationParams(seed=seed, events=events, preset=preset), DetectorParams()).event(index).event
    PointcloudStage(PointcloudStage.Params(), RunContext()).process(event)
    return event.artifacts["cloud"]


def dense_event_cloud(index: int) -> np.ndarray:
    """The cloud of event ``index`` of the dense mix, seed 1 (as benchmarks/stages.py)."""
    return event_cloud("dense", index, seed=1, events=200)


@pytest.mark.parametrize("index, expected_cleanings", [(182, [(410, 410), (403, 403), (1479, 1479), (2292, 2292)]),
                                                       (198, [(192, 192), (186, 185), (188, 188), (186, 185),
                                                              (1409, 1409), (2159, 2159)])])
def test_dense_event_of_over_2000_points_equals_the_reference(index, expected_cleanings, monkeypatch):
    """Events 182 and 198 of the dense mix (seed 1, as the benchmark): 2,321 and 2,202 points, whose pieces are
    joined into one cluster of more than 2,000 points before the second cleaning (LOF with k > 200).

    The stage (compiled HDBSCAN, KD-tree LOF reusing its neighbour lists) gives the same artifact as the
    reference (the hdbscan package's labels, scikit-learn's brute-force LocalOutlierFactor on every cleaning),
    and every cleaning's LOF scores equal scikit-learn's.
    """
    from conduit_physics.clustering import postprocessing
    from conduit_physics.clustering.postprocessing import Piece

    cloud = dense_event_cloud(index)
    assert len(cloud) > 2000
    context = RunContext(detector=DetectorParams(magnetic_field=2.85))
    cleanings = []
    compiled_clean = postprocessing._lof_clean

    def checked_clean(cloud, piece, params):
        cleaned = compiled_clean(cloud, piece, params)
        points = cloud[piece.rows, :3]
        factor = params.outlier_scale_factor
        np.testing.assert_allclose(lof_scores(points, max(2, int(factor * len(points)))),
                                   sklearn_lof(points, factor), rtol=1e-9)
        cleanings.append((len(piece.rows), len(cleaned.rows)))
        return cleaned

    monkeypatch.setattr(postprocessing, "_lof_clean", checked_clean)
    got = HdbscanStage(HdbscanParams(reclean_joined="always", lof_k_max=0), context).cluster(cloud)
    assert cleanings == expected_cleanings  # the last: one cluster of more than 2,000 points, k > 200

    def reference_clean(cloud, piece, params):
        out = sklearn_lof(cloud[piece.rows, :3], params.outlier_scale_factor) > 1.5  # LocalOutlierFactor(contamination='auto')
        return Piece(piece.label, piece.rows[~out], piece.direction)

    monkeypatch.setattr(postprocessing, "_lof_clean", reference_clean)
    expected = HdbscanStage(HdbscanParams(algorithm="prims_kdtree", reclean_joined="always", lof_k_max=0),
                            context).cluster(cloud)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.cluster_labels, expected.cluster_labels)
    np.testing.assert_array_equal(got.directions, expected.directions)
    assert expected.count == 1 and (expected.labels == -1).sum() > 0


def test_a_joined_clusters_lists_from_its_pieces_give_scikit_learns_lof_and_the_reference_artifact(monkeypatch):
    """Dense event 198 (seed 1): with the default cap (k = 100) two of its pieces lose a point, so the joined cluster
    of 2,159 points is cleaned again, from the lists of its 1,409-point piece (k = 100 too) and a search of the
    others' points (``LofNeighbours.union``). Its LOF scores equal scikit-learn's (k = 100), and the artifact equals
    the reference (scikit-learn's LocalOutlierFactor on every cleaning, k capped as the stage caps it)."""
    from conduit_physics.clustering import lof_kernels, postprocessing
    from conduit_physics.clustering.postprocessing import Piece, lof_neighbour_count

    cloud = dense_event_cloud(198)
    context = RunContext(detector=DetectorParams(magnetic_field=2.85))
    params = HdbscanParams()
    assert params.lof_k_max == 100 and params.reclean_joined == "changed"
    reused = []
    union_rows = lof_kernels.lof_union_rows

    def counted_union_rows(*args):
        reused.append(len(args[3]))  # the piece's rows
        return union_rows(*args)

    monkeypatch.setattr(lof_kernels, "lof_union_rows", counted_union_rows)
    compiled_clean = postprocessing._lof_clean
    joined = []

    def checked_clean(cloud, piece, params):
        cleaned = compiled_clean(cloud, piece, params)
        if piece.parts:
            points = cloud[piece.rows, :3]
            k = lof_neighbour_count(len(points), params)
            reference = sklearn_lof_k(points, k)
            scores = LofNeighbours.union(points, k, [postprocessing._union_part(piece.rows, p)
                                                     for p in piece.parts]).scores()
            np.testing.assert_allclose(scores, reference, rtol=1e-9)
            np.testing.assert_array_equal(cleaned.rows, piece.rows[reference <= 1.5])
            joined.append(len(piece.rows))
        return cleaned

    monkeypatch.setattr(postprocessing, "_lof_clean", checked_clean)
    got = HdbscanStage(params, context).cluster(cloud)
    assert joined == [2159] and 1409 in reused

    def reference_clean(cloud, piece, params):
        points = cloud[piece.rows, :3]
        out = sklearn_lof_k(points, lof_neighbour_count(len(points), params)) > 1.5
        return Piece(piece.label, piece.rows[~out], piece.direction)

    monkeypatch.setattr(postprocessing, "_lof_clean", reference_clean)
    expected = HdbscanStage(params.replace(algorithm="prims_kdtree", reclean_joined="always"), context).cluster(cloud)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.cluster_labels, expected.cluster_labels)
    np.testing.assert_array_equal(got.directions, expected.directions)


def sklearn_lof_k(points: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's LocalOutlierFactor scores with n_neighbors = k (capped at n - 1), brute force."""
    from sklearn.neighbors import LocalOutlierFactor

    lof = LocalOutlierFactor(n_neighbors=min(k, len(points) - 1), algorithm="brute").fit(points)
    return -lof.negative_outlier_factor_


@pytest.mark.parametrize("index, cleanings", [(182, {"always": 4, "changed": 3, "never": 3}),
                                              (198, {"always": 6, "changed": 6, "never": 5})])
def test_reclean_joined_skips_the_second_cleaning_of_a_joined_cluster_as_documented(index, cleanings, monkeypatch):
    """``reclean_joined``: event 182's pieces lose no point in the first cleaning, so 'changed' does not clean
    the joined cluster again; two of event 198's pieces lose one point each, so 'changed' cleans it again (as
    'always'); 'never' cleans no joined cluster again. On both events the artifact is the same as 'always'."""
    from conduit_physics.clustering import postprocessing

    cloud = dense_event_cloud(index)
    context = RunContext(detector=DetectorParams(magnetic_field=2.85))
    compiled_clean = postprocessing._lof_clean
    artifacts = {}
    for setting, expected in cleanings.items():
        sizes = []

        def counted_clean(cloud, piece, params):
            sizes.append(len(piece.rows))
            return compiled_clean(cloud, piece, params)

        monkeypatch.setattr(postprocessing, "_lof_clean", counted_clean)
        artifacts[setting] = HdbscanStage(HdbscanParams(reclean_joined=setting), context).cluster(cloud)
        assert len(sizes) == expected, setting
        assert (max(sizes) > 2000) == (setting == "always" or (setting == "changed" and index == 198))
    assert HdbscanParams().reclean_joined == "changed"  # the stage's default (docs/analysis.md)
    for setting in ("changed", "never"):
        np.testing.assert_array_equal(artifacts[setting].labels, artifacts["always"].labels)
        np.testing.assert_array_equal(artifacts[setting].directions, artifacts["always"].directions)


def test_lof_after_removing_a_few_points_with_the_same_k_equals_a_fresh_fit():
    """Removing 3 points and keeping k leaves the rows that had them as neighbours one short: those few rows
    are compared with every remaining point (:func:`lof_rows_brute`), the others keep their lists."""
    from conduit_physics.clustering.lof import BRUTE_ROWS_FRACTION
    from conduit_physics.clustering.lof_kernels import lof_fewer
    from sklearn.neighbors import LocalOutlierFactor

    rng = np.random.default_rng(5)
    pts = spiral(rng, 1200)
    k = int(0.1 * len(pts))
    first = LofNeighbours.search(pts, k)
    gone = np.zeros(len(pts), dtype=bool)
    gone[[3, 11, 20]] = True  # three of the scattered points: in the lists of a few rows only
    gone_rows = np.zeros(len(pts), dtype=bool)
    gone_rows[np.argsort(first.perm)[gone]] = True
    ok = lof_fewer(first.nbr, first.nd, first.perm, gone_rows, k)[3]
    short = int((~ok & ~gone_rows).sum())
    assert 0 < short and short * BRUTE_ROWS_FRACTION <= len(pts) - 3  # the brute-force rows, not a new search
    expected = -LocalOutlierFactor(n_neighbors=k).fit(pts[~gone]).negative_outlier_factor_
    np.testing.assert_allclose(first.without(gone, k).scores()[~gone], expected, rtol=1e-9)


def test_lof_neighbour_count_is_capped_by_lof_k_max():
    from conduit_physics.clustering import ClusterParams
    from conduit_physics.clustering.postprocessing import lof_neighbour_count

    capped = HdbscanParams()
    assert capped.lof_k_max == 100 and ClusterParams().lof_k_max == 0  # the stage's default; the reference's
    assert [lof_neighbour_count(n, capped) for n in (5, 999, 1000, 1009, 2292)] == [2, 99, 100, 100, 100]
    assert [lof_neighbour_count(n, capped.replace(lof_k_max=0)) for n in (5, 999, 1000, 2292)] == [2, 99, 100, 229]


#: (events, clusters, cleanings, cleanings the cap binds in, events whose clusters differ from the uncapped reference)
EXPECTED_CAP_OUTCOME = {"default": (100, 164, 330, 0, 0), "dense": (40, 67, 135, 2, 0)}


def test_lof_k_max_changes_nothing_for_clusters_below_it(dense_clouds):
    """LOF's k is 10 % of the cluster: the default cap (100) binds only on clusters of 1,000 points or more. On
    the default mix, where none is that large, the labels, clusters and directions equal the uncapped reference's
    in every event (100); on the dense mix they are equal too (0 of 40 events differ, as benchmarks/reclean_truth.py
    found on 3,600 dense events), while the cap binds in the cleanings of its largest clusters."""
    from conduit_physics.clustering import postprocessing

    context = RunContext(detector=DetectorParams(magnetic_field=2.85))
    capped = HdbscanStage(HdbscanParams(), context)
    reference = HdbscanStage(HdbscanParams(lof_k_max=0), context)
    counted = {"capped": 0, "cleanings": 0}
    compiled_clean = postprocessing._lof_clean

    def counting_clean(cloud, piece, params):
        counted["cleanings"] += 1
        counted["capped"] += 0 < params.lof_k_max < int(params.outlier_scale_factor * len(piece.rows))
        return compiled_clean(cloud, piece, params)

    outcome = {}
    default_clouds = simulated_clouds("default", 100, 2024)  # as benchmarks/reclean_truth.py
    for mix, clouds in (("default", default_clouds), ("dense", dense_clouds)):
        counted.update(capped=0, cleanings=0)
        clusters = differ = 0
        postprocessing._lof_clean = counting_clean
        try:
            got = [capped.cluster(cloud) for cloud in clouds]
        finally:
            postprocessing._lof_clean = compiled_clean
        for cloud, a in zip(clouds, got):
            b = reference.cluster(cloud)
            differ += not (np.array_equal(a.labels, b.labels) and np.array_equal(a.cluster_labels, b.cluster_labels)
                           and np.array_equal(a.directions, b.directions))
            clusters += a.count
        outcome[mix] = (len(clouds), clusters, counted["cleanings"], counted["capped"], differ)
    largest = max(len(c) for c in default_clouds)
    assert largest < 1000  # no default cluster reaches the cap
    assert outcome["default"][3:] == (0, 0)
    assert outcome["dense"][3] > 0 and outcome["dense"][4] == 0, outcome
    assert outcome == EXPECTED_CAP_OUTCOME, outcome


def test_lof_k_max_bounds_every_cleanings_k_on_a_cluster_of_2000_points(monkeypatch):
    """Dense event 182 (seed 1): one cluster of 2,292 points. Capped, no LOF search or reuse asks for more than
    100 neighbours; uncapped the joined cluster's second cleaning asks for 229 (this fails if the cap is ignored).
    (The joined cluster's lists come from ``LofNeighbours.union``, which searches afresh when it cannot reuse.)"""
    from conduit_physics.clustering.lof import LofNeighbours

    cloud = dense_event_cloud(182)
    context = RunContext(detector=DetectorParams(magnetic_field=2.85))
    asked: list[int] = []
    search = LofNeighbours.search.__func__
    union = LofNeighbours.union.__func__

    def recorded_search(cls, points, n_neighbors):
        if not in_union:
            asked.append(int(n_neighbors))
        return search(cls, points, n_neighbors)

    in_union: list[bool] = []

    def recorded_union(cls, points, n_neighbors, parts):
        asked.append(int(n_neighbors))
        in_union.append(True)
        try:
            return union(cls, points, n_neighbors, parts)
        finally:
            in_union.pop()

    search_rows = LofNeighbours.search_rows.__func__

    def recorded_search_rows(cls, cloud, rows, n_neighbors):  # a first cleaning (one compiled call)
        asked.append(int(n_neighbors))
        return search_rows(cls, cloud, rows, n_neighbors)

    monkeypatch.setattr(LofNeighbours, "search", classmethod(recorded_search))
    monkeypatch.setattr(LofNeighbours, "search_rows", classmethod(recorded_search_rows))
    monkeypatch.setattr(LofNeighbours, "union", classmethod(recorded_union))
    ks = {}
    for cap in (100, 0, 40):
        asked.clear()
        HdbscanStage(HdbscanParams(reclean_joined="always", lof_k_max=cap), context).cluster(cloud)
        ks[cap] = list(asked)
    assert ks == {100: [41, 40, 100, 100], 0: [41, 40, 147, 229], 40: [40, 40, 40, 40]}, ks


def test_a_small_lof_k_max_changes_the_labels_where_it_binds():
    """Default-mix event 172 (seed 1, 882 points, a cluster of 827): lof_k_max = 64 (k 64 instead of 82) keeps
    10 more points in their cluster, all made by its particle (benchmarks/reclean_truth.py); 100 does not bind."""
    cloud = event_cloud("default", 172, seed=1, events=300)  # as benchmarks/reclean_truth.py
    context = RunContext(detector=DetectorParams(magnetic_field=2.85))
    labels = {cap: HdbscanStage(HdbscanParams(lof_k_max=cap), context).cluster(cloud).labels for cap in (0, 100, 64)}
    np.testing.assert_array_equal(labels[100], labels[0])
    changed = labels[64] != labels[0]
    assert int(changed.sum()) == 10 and (labels[0][changed] == -1).all() and (labels[64][changed] >= 0).all()


def _steps_one_by_one(features, mcs, ms, eps, single):
    """hdbscan_native as it was before its steps were fused into fewer compiled calls (64b3cf7): the reference."""
    from conduit_physics.clustering.kdtree import build_tree
    from conduit_stages.cluster import hdbscan_kernels as hk
    from conduit_stages.cluster.hdbscan_native import DENSE_PRIM_POINTS, select_clusters

    n = len(features)
    ms = max(1, min(n - 1, int(ms)))
    tree = build_tree(features)
    core, knn_d2, knn_idx = hk.core_distances(tree, ms, 1 if n <= DENSE_PRIM_POINTS else hk.KNN_EXTRA)
    if n <= DENSE_PRIM_POINTS:
        core_orig = np.empty_like(core)
        core_orig[tree.perm] = core
        mst = hk.prim_dense(np.ascontiguousarray(features, dtype=np.float64), core_orig)
    else:
        mst = hk.mst_mutual_reachability(tree, core, knn_d2, knn_idx)
    parent, child, lam, size = hk.condense_tree(hk.single_linkage(mst), mcs)
    stability = hk.cluster_stability(parent, child, lam, size)
    clusters = select_clusters(parent, child, lam, size, stability, n, eps, single)
    top = max(int(parent.max()), int(child.max())) + 1
    selected = np.zeros(top, dtype=np.bool_)
    label_of = np.full(top, -1, dtype=np.int64)
    for label, c in enumerate(clusters):
        selected[c] = True
        label_of[c] = label
    single_root = len(clusters) == 1 and single and clusters[0] == n
    return (mst, parent, child, lam, size, stability,
            hk.label_points(parent, child, lam, selected, label_of, single_root, eps))


def test_fused_hdbscan_calls_give_the_separate_steps_arrays_bit_for_bit():
    """small_mst, condensed_tree, select_clusters_eom and label_selected: the same arrays as the step-by-step
    calls they replace (the selection: hdbscan's steps in Python), on random clouds and on lattice clouds (many
    equal distances and weights), both MST paths."""
    from conduit_physics.clustering.kdtree import LEAF_SIZE
    from conduit_stages.cluster import hdbscan_kernels as hk
    from conduit_stages.cluster.hdbscan_native import select_clusters

    rng = np.random.default_rng(2712)
    clouds = [random_cloud(rng) for _ in range(60)]
    clouds += [np.ascontiguousarray(rng.integers(0, 12, (int(rng.integers(2, 500)), 3)).astype(np.float64))
               for _ in range(24)]
    clouds += [np.ascontiguousarray(rng.integers(0, 25, (int(rng.integers(501, 900)), 3)).astype(np.float64))
               for _ in range(6)]
    checked = 0
    for cloud in clouds:
        n = len(cloud)
        for mcs, ms, eps, single in SETTINGS:
            mst, parent, child, lam, size, stability, labels = _steps_one_by_one(cloud, mcs, ms, eps, single)
            msc = max(1, min(n - 1, ms))
            if n <= 500:
                assert np.array_equal(hk.small_mst(cloud, msc, LEAF_SIZE), mst)
            fused = hk.condensed_tree(mst, np.argsort(mst.T[2]), mcs)
            for got, want in zip(fused, (parent, child, lam, size, stability)):
                assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True)
            assert np.array_equal(hdbscan_native(cloud, mcs, ms, eps, single), labels)
            checked += 1
            for e in (eps, 0.0, 0.5, 3.0, 10.0, 40.0):  # the compiled selection against hdbscan's steps
                for s in (True, False):
                    want = select_clusters(parent, child, lam, size, stability, n, e, s)
                    got = hk.select_clusters_eom(parent, child, lam, size, stability, n, e, s)
                    assert got.tolist() == want, (n, mcs, ms, e, s)
    assert checked == len(clouds) * len(SETTINGS)


def test_lof_search_scored_equals_search_then_scores():
    rng = np.random.default_rng(5)
    for _ in range(40):
        cloud = random_cloud(rng)
        for k in (1, 2, 5, 18, 60):
            a = LofNeighbours.search(cloud, k)
            b, scores = LofNeighbours.search_scored(cloud, k)
            assert np.array_equal(scores, a.scores())
            for name in ("points", "perm", "nbr", "nd", "kdist", "keep"):
                assert np.array_equal(getattr(a, name), getattr(b, name)), name
    one = LofNeighbours.search_scored(np.zeros((1, 3)), 5)[1]
    assert np.array_equal(one, np.ones(1))


def test_lof_search_rows_equals_search_of_the_gathered_points_and_their_outliers():
    from conduit_physics.clustering.lof import LOF_OUTLIER

    rng = np.random.default_rng(6)
    checked_outliers = 0
    for _ in range(40):
        points = random_cloud(rng)
        cloud = np.zeros((len(points), 8))
        cloud[:, :3] = points
        cloud[:, 3:] = rng.normal(size=(len(points), 5))
        for size in (1, 2, 3, 30, len(points)):
            rows = np.sort(rng.choice(len(points), min(size, len(points)), replace=False))
            for k in (1, 2, 5, 18, 60):
                a = LofNeighbours.search(np.ascontiguousarray(cloud[rows, :3]), k)
                want = a.scores() > LOF_OUTLIER
                b, out, count = LofNeighbours.search_rows(cloud, rows, k)
                assert np.array_equal(out, want) and count == int(want.sum())
                checked_outliers += count
                for name in ("points", "perm", "nbr", "nd", "kdist", "keep"):
                    assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert checked_outliers > 0


def test_direction_of_rows_equals_direction_code_of_the_gathered_columns():
    from conduit_physics.tracks.fit import direction_code, direction_of_rows

    rng = np.random.default_rng(9)
    for _ in range(60):
        pts = helix_points(tuple(rng.uniform(-20, 20, 2)) + (rng.uniform(100, 800),), rng.uniform(0.3, 2.8),
                           rng.uniform(0, 6.3), rng.uniform(30, 150), step=rng.uniform(1, 4), noise=1.0, rng=rng)
        cloud = np.zeros((len(pts) + 7, 8))
        cloud[:len(pts), :3] = pts[np.argsort(pts[:, 2], kind="stable")]
        rows = np.sort(rng.choice(len(pts), int(rng.integers(1, len(pts) + 1)), replace=False))
        for sense in (1.0, -1.0):
            want = direction_code(np.ascontiguousarray(cloud[rows, 0]), np.ascontiguousarray(cloud[rows, 1]),
                                  np.ascontiguousarray(cloud[rows, 2]), 10.0, 0.5, sense)
            assert direction_of_rows(cloud, rows, 10.0, 0.5, sense) == want
