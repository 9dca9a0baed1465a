"""cluster.hdbscan and cluster.dbscan: LOF = sklearn, DBSCAN = sklearn, direction, joins, artifact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conduit.artifacts import Clusters, Direction
from conduit.detector import DetectorParams
from conduit.event import Event
from conduit.stage import StageContext
from conduit_physics.clustering import ClusterParams, circle_overlap_area, postprocess
from conduit_stages.cluster.dbscan_stage import DbscanParams, DbscanStage, dbscan
from conduit_stages.cluster.hdbscan_stage import HdbscanParams, HdbscanStage
from stages_synth import cloud_from_points, helix_points


def track(vertex, polar_deg, azimuth, radius, rng, **kw):
    pts = helix_points(vertex, math.radians(polar_deg), azimuth, radius, noise=0.8, rng=rng, **kw)
    return pts[np.hypot(pts[:, 0], pts[:, 1]) > 20.0]  # the beam pads see nothing


def event_cloud(rng, tracks, n_noise=15):
    """Cloud (sorted by z) and the true track index per row (-1 noise)."""
    parts = [t for t in tracks]
    noise = rng.uniform([-250, -250, 0], [250, 250, 1000], (n_noise, 3))
    pts = np.vstack(parts + [noise])
    truth = np.concatenate([np.full(len(t), i) for i, t in enumerate(parts)] + [np.full(n_noise, -1)])
    order = np.argsort(pts[:, 2], kind="stable")
    return cloud_from_points(pts), truth[order]


def context(field: float = 2.85) -> StageContext:
    return StageContext(detector=DetectorParams(magnetic_field=field))


# ---------------------------------------------------------------- LOF


@pytest.mark.parametrize("seed", range(3))
def test_lof_predictions_equal_sklearn(seed):
    from conduit_physics.clustering.lof import lof_outliers, lof_scores
    from sklearn.neighbors import LocalOutlierFactor

    rng = np.random.default_rng(seed)
    flagged = 0
    for n in (2, 3, 7, 30, 120, 250):
        for shape in ("blob", "track"):
            if shape == "blob":
                pts = rng.normal(0, 10, (n, 3))
            else:
                pts = helix_points((0, 0, 100), 0.9, rng.uniform(0, 6), 90, step=2.0, noise=1.0, rng=rng)[:n]
            if n >= 7:
                pts[: max(1, n // 20)] += rng.normal(0, 40, (max(1, n // 20), 3))  # outliers
            pts = np.ascontiguousarray(pts)
            for factor in (0.05, 0.1, 0.3):
                k = max(2, int(factor * len(pts)))
                sk = LocalOutlierFactor(n_neighbors=min(k, len(pts) - 1))
                expected = sk.fit_predict(pts) == -1
                got = lof_outliers(pts, k)
                np.testing.assert_array_equal(got, expected)
                np.testing.assert_allclose(lof_scores(pts, k), -sk.negative_outlier_factor_, rtol=1e-9)
                flagged += int(got.sum())
    assert flagged > 20


# ---------------------------------------------------------------- DBSCAN


def test_dbscan_equals_sklearn_on_core_points(rng):
    from sklearn.cluster import DBSCAN

    a = track((0, 0, 300), 60, 0.4, 90, rng)
    b = track((5, 5, 500), 120, 2.5, 60, rng)
    cloud, _ = event_cloud(rng, [a, b], n_noise=40)
    params = DbscanParams(min_cluster_size=1)
    feats = np.column_stack([cloud[:, 0], cloud[:, 1], cloud[:, 2] * params.z_scale])
    ref = DBSCAN(eps=params.eps, min_samples=params.min_samples).fit(feats)
    got = dbscan(cloud, params)
    core = np.zeros(len(cloud), bool)
    core[ref.core_sample_indices_] = True
    # same noise points, and the same partition of the core points
    np.testing.assert_array_equal(got == -1, ref.labels_ == -1)
    pairs = {(int(g), int(r)) for g, r in zip(got[core], ref.labels_[core])}
    assert len(pairs) == len({g for g, _ in pairs}) == len({r for _, r in pairs}) >= 2
    # small clusters become noise
    small = dbscan(cloud, DbscanParams(min_cluster_size=10_000))
    assert np.all(small == -1)


def test_dbscan_refuses_an_unsorted_cloud(rng):
    cloud, _ = event_cloud(rng, [track((0, 0, 300), 60, 0.4, 90, rng)])
    with pytest.raises(ValueError, match="sorted by z"):
        dbscan(cloud[::-1].copy(), DbscanParams())


# ---------------------------------------------------------------- direction


@pytest.mark.parametrize("field", [2.85, -2.0])
@pytest.mark.parametrize("polar", [25, 60, 85, 95, 120, 155])
def test_direction_follows_polar_angle_and_field_sign(polar, field, rng):
    from conduit_physics.tracks import direction_code

    pts = track((0, 0, 500), polar, rng.uniform(0, 2 * np.pi), 70, rng, field_sign=field)
    pts = pts[np.argsort(pts[:, 2], kind="stable")]
    sense = 1.0 if field > 0 else -1.0
    code = direction_code(pts[:, 0].copy(), pts[:, 1].copy(), pts[:, 2].copy(), 10.0, 0.5, sense)
    assert code == (Direction.FORWARD if polar < 90 else Direction.BACKWARD)
    # the same points read with the opposite field sign turn the other way
    flipped = direction_code(pts[:, 0].copy(), pts[:, 1].copy(), pts[:, 2].copy(), 10.0, 0.5, -sense)
    assert flipped == (Direction.BACKWARD if polar < 90 else Direction.FORWARD)


def test_direction_unwraps_the_azimuth():
    """A short arc crossing the centre's phi = 0 line: without unwrapping one step of 4 looks backwards."""
    from conduit_physics.tracks import direction_code

    phi = np.radians([-30.0, -15.0, 0.5, 15.0, 30.0])  # counter-clockwise, crosses phi = 0
    x = 100 + 50 * np.cos(phi)
    y = 50 * np.sin(phi)
    z = np.array([100.0, 110.0, 120.0, 130.0, 140.0])
    # wrapped to [0, 2 pi) the steps are +, +2pi-ish..., i.e. 1 of 4 steps negative: 75 % forward
    wrapped = np.mod(np.arctan2(y, x - 100), 2 * np.pi)
    assert np.sum(np.diff(wrapped) > 0) == 3
    assert direction_code(x, y, z, 10.0, 0.8, 1.0) == Direction.FORWARD  # all 4 steps turn forward
    assert direction_code(x, y, z, 10.0, 0.8, -1.0) == Direction.BACKWARD


# ---------------------------------------------------------------- joins


def split_track_cloud(rng):
    """One forward track with a 60 mm gap in z (as when a few pads are dead), plus noise."""
    pts = track((0, 0, 150), 40, 1.0, 110, rng, step=2.0)
    z0 = pts[:, 2].min() + 0.45 * np.ptp(pts[:, 2])
    pts = pts[(pts[:, 2] < z0) | (pts[:, 2] > z0 + 25)]
    return event_cloud(rng, [pts], n_noise=10)


@pytest.mark.parametrize("join", ["continuity", "overlap"])
def test_joins_reassemble_a_split_track(join, rng):
    cloud, truth = split_track_cloud(rng)
    params = HdbscanParams(join="none")
    stage = HdbscanStage(params, context())
    pieces = stage.cluster(cloud)
    assert pieces.count == 2  # hdbscan sees two pieces
    joined = HdbscanStage(params.replace(join=join), context()).cluster(cloud)
    assert joined.count == 1
    members = joined.indices(0)
    assert np.all(truth[members] == 0) and len(members) > 0.85 * np.sum(truth == 0)
    assert joined.directions[0] == Direction.FORWARD


def test_overlap_join_needs_both_circles_large_and_same_direction(rng):
    a = track((0, 0, 100), 45, 0.5, 80, rng, step=2.0, length=350.0)
    b = track((0, 0, 900), 135, 0.5, 80, rng, step=2.0, length=350.0)  # backward track, same circle, far in z
    cloud, _ = event_cloud(rng, [a, b], n_noise=0)
    clusters = HdbscanStage(HdbscanParams(join="overlap"), context()).cluster(cloud)
    assert sorted(clusters.directions.tolist()) == [Direction.FORWARD, Direction.BACKWARD]
    assert clusters.count == 2


def test_circle_overlap_area():
    assert circle_overlap_area(10.0, 3.0, 4.0) == 0.0
    assert circle_overlap_area(0.5, 3.0, 1.0) == pytest.approx(math.pi)
    # two unit circles one radius apart: 2 pi / 3 - sqrt(3) / 2
    assert circle_overlap_area(1.0, 1.0, 1.0) == pytest.approx(2 * math.pi / 3 - math.sqrt(3) / 2)


# ---------------------------------------------------------------- stages


@pytest.mark.parametrize("stage_cls,params", [(HdbscanStage, HdbscanParams()), (DbscanStage, DbscanParams())])
def test_two_track_event_is_clustered_and_oriented(stage_cls, params, rng):
    a = track((0, 3, 300), 55, 0.3, 100, rng, step=2.5)
    b = track((2, -1, 700), 125, 3.5, 60, rng, step=2.5)
    cloud, truth = event_cloud(rng, [a, b], n_noise=20)
    event = Event(id=5, artifacts={"cloud": cloud})
    stage = stage_cls(params, context())
    stage.process(event)
    clusters: Clusters = event.artifacts["clusters"]
    assert clusters.labels.dtype == np.int32 and clusters.labels.shape == (len(cloud),)
    assert clusters.cluster_labels.dtype == np.int32 and clusters.directions.dtype == np.int8
    assert clusters.count == 2
    firsts = [cloud[clusters.indices(k)[0], 2] for k in range(2)]
    assert firsts == sorted(firsts)
    for k in range(2):
        members = clusters.indices(k)
        true, counts = np.unique(truth[members], return_counts=True)
        main = true[np.argmax(counts)]
        assert main >= 0 and counts.max() / len(members) > 0.95  # purity
        assert len(members) > 0.8 * np.sum(truth == main)  # efficiency
        expected = Direction.FORWARD if main == 0 else Direction.BACKWARD
        assert clusters.directions[k] == expected
    assert set(np.unique(clusters.labels)) == set(clusters.cluster_labels.tolist()) | {-1}


def test_small_clouds_give_no_clusters(rng):
    cloud, _ = event_cloud(rng, [track((0, 0, 300), 60, 0.4, 90, rng)[:30]], n_noise=5)
    for stage in (HdbscanStage(HdbscanParams(), context()), DbscanStage(DbscanParams(), context())):
        clusters = stage.cluster(cloud)
        assert clusters.count == 0 and np.all(clusters.labels == -1) and len(clusters.labels) == len(cloud)
        assert stage.cluster(cloud[:0]).count == 0


def test_min_cluster_size_rule_and_params(rng):
    from conduit.params import ParamError

    with pytest.raises(ParamError, match="join"):
        HdbscanParams.from_mapping({"join": "continuous"})
    with pytest.raises(ParamError, match="did you mean 'min_points'"):
        HdbscanParams.from_mapping({"min_point": 3})
    p = HdbscanParams.from_mapping({"join": "overlap", "min_points": 5})
    assert p.join == "overlap" and p.min_points == 5 and p.z_scale == 0.584
    assert DbscanParams.from_mapping({"eps": 5}).eps == 5.0


def test_stages_registered_and_swappable():
    from conduit.plugins import get_registry

    stages = get_registry().stages
    assert stages["cluster.hdbscan"] is HdbscanStage and stages["cluster.dbscan"] is DbscanStage
    for cls in (HdbscanStage, DbscanStage):
        assert cls.requires == ("cloud",) and cls.provides == ("clusters",)
        stage = cls(cls.Params(), context())
        stage.warm_up()


def test_postprocess_without_join_keeps_labels(rng):
    a = track((0, 3, 300), 55, 0.3, 100, rng, step=2.5)
    cloud, truth = event_cloud(rng, [a], n_noise=0)
    labels = np.where(truth >= 0, 7, -1)
    clusters = postprocess(cloud, labels, ClusterParams(join="none", outlier_scale_factor=0.0), 2.85)
    assert clusters.cluster_labels.tolist() == [7]
    np.testing.assert_array_equal(clusters.labels, labels.astype(np.int32))
