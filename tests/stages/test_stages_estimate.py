"""estimate: smoothing splines = scipy, closed-form vertex, helix answers, rejection reasons."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conduit.artifacts import ESTIMATE_DTYPE, Clusters, Direction
from conduit.detector import DetectorParams
from conduit.event import Event
from conduit.stage import StageContext
from conduit_physics.tracks import fit as trackfit
from conduit_stages.estimate.stage import EstimateParams, EstimateStage, estimate_tracks
from scipy.interpolate import make_smoothing_spline
from stages_synth import cloud_from_points, helix_points

# ---------------------------------------------------------------- splines


@pytest.mark.parametrize("seed", range(3))
def test_smoothing_spline_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(5, 400))
        t = np.unique(np.round(rng.uniform(0, 1000, n), 3))
        n = len(t)
        if n < 5:
            continue
        y = 80 * np.sin(t / rng.uniform(30, 200)) + rng.normal(0, 2, n)
        w = rng.integers(1, 5, n).astype(float)
        lam = float(10 ** rng.uniform(-1, 4))
        ref = make_smoothing_spline(t, y, w=w, lam=lam)
        g = np.empty(n)
        gamma = np.empty(n)
        assert trackfit.smoothing_spline(t, y, w, lam, g, gamma)
        scale = np.abs(y).max()
        np.testing.assert_allclose(g, ref(t), rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(gamma, ref(t, 2), rtol=0, atol=1e-6 * scale / 100)
        xs = np.linspace(t[0], t[-1], 301)
        mine = np.array([trackfit.spline_eval(t, g, gamma, x) for x in xs])
        np.testing.assert_allclose(mine, ref(xs), rtol=0, atol=1e-6 * scale)


def test_tied_abscissae_are_merged_with_weights():
    """Duplicates in z give the same spline as scipy on the unique z with multiplicity weights."""
    rng = np.random.default_rng(4)
    z = np.sort(rng.integers(0, 60, 120)).astype(float) * 1.818
    y = np.cos(z / 40) * 50 + rng.normal(0, 1, len(z))
    out = np.empty(len(z))
    assert trackfit.smooth_at_points(z, y, 100.0, out)
    uz, inverse, counts = np.unique(z, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=y) / counts
    ref = make_smoothing_spline(uz, means, w=counts.astype(float), lam=100.0)
    np.testing.assert_allclose(out, ref(z), atol=1e-6 * 50)
    # same objective as with the repeated samples: sum over duplicates of (y - f)^2 + lam J(f)
    f = ref(z)
    base = np.sum((y - f) ** 2)
    for sign in (-1, 1):
        bumped = f + sign * 0.01 * np.cos(z / 40)
        assert (
            np.sum((y - bumped) ** 2) + 100.0 * _roughness(uz, bumped[np.unique(z, return_index=True)[1]], ref) > base
        )


def _roughness(uz, values, ref):
    # penalty of the natural spline through `values` compared with ref's own: only the sign matters here
    spline = make_smoothing_spline(uz, values, lam=1e-9)
    xs = np.linspace(uz[0], uz[-1], 4001)
    return np.trapezoid(spline(xs, 2) ** 2, xs) - np.trapezoid(ref(xs, 2) ** 2, xs)


def test_spline_refuses_too_few_or_unsorted_knots():
    g = np.empty(6)
    gam = np.empty(6)
    assert not trackfit.smoothing_spline(np.arange(4.0), np.ones(4), np.ones(4), 1.0, g, gam)
    assert not trackfit.smoothing_spline(np.array([0, 1, 1, 2, 3, 4.0]), np.ones(6), np.ones(6), 1.0, g, gam)
    out = np.empty(8)
    assert not trackfit.smooth_at_points(np.array([1, 1, 1, 2, 2, 3, 3, 4.0]), np.ones(8), 1.0, out)


# ---------------------------------------------------------------- circle and vertex


def test_circle_fit_and_closed_form_vertex_match_dense_sampling():
    rng = np.random.default_rng(8)
    for _ in range(20):
        xc, yc, r = rng.uniform(-150, 150), rng.uniform(-150, 150), rng.uniform(20, 200)
        phi = rng.uniform(0, 2 * np.pi) + np.linspace(0, rng.uniform(0.5, 4), 60)
        x, y = xc + r * np.cos(phi), yc + r * np.sin(phi)
        fx, fy, fr, ok = trackfit.circle_fit(x, y)
        assert ok and fx == pytest.approx(xc, abs=1e-6) and fy == pytest.approx(yc, abs=1e-6)
        assert fr == pytest.approx(r, rel=1e-9)
        # Spyral: 100 000 points on the circle, the one closest to the beam axis
        t = np.linspace(0, 2 * np.pi, 100_000)
        px, py = fx + fr * np.cos(t), fy + fr * np.sin(t)
        k = np.argmin(np.hypot(px, py))
        d = math.hypot(fx, fy)
        vx, vy = fx - fr * fx / d, fy - fr * fy / d
        assert math.hypot(px[k] - vx, py[k] - vy) < 2 * np.pi * fr / 1e5 + 1e-9
    assert not trackfit.circle_fit(np.array([0.0, 1, 2, 3]), np.array([0.0, 1, 2, 3]))[3]  # collinear
    assert not trackfit.circle_fit(np.array([0.0, 1]), np.array([0.0, 1]))[3]


# ---------------------------------------------------------------- whole tracks


def one_track(polar_deg, azimuth, radius, vertex=(1.0, -2.0, 400.0), field=2.85, noise=0.6, seed=0, **kw):
    rng = np.random.default_rng(seed)
    pts = helix_points(vertex, math.radians(polar_deg), azimuth, radius, field_sign=field, noise=noise, rng=rng,
                       step=2.0, **kw)  # fmt: skip
    pts = pts[np.hypot(pts[:, 0], pts[:, 1]) > 20.0]
    cloud = cloud_from_points(pts)
    direction = Direction.FORWARD if polar_deg < 90 else Direction.BACKWARD
    clusters = Clusters(np.zeros(len(cloud), np.int32), np.array([0], np.int32), np.array([direction], np.int8))
    return cloud, clusters


@pytest.mark.parametrize("mode", ["arc", "chord"])
@pytest.mark.parametrize("field", [2.85, -3.0])
def test_helix_parameters_are_recovered(mode, field):
    det = DetectorParams(magnetic_field=field)
    params = EstimateParams(polar_from=mode)
    polar_err, brho_err, vz_err, az_err = [], [], [], []
    rng = np.random.default_rng(11)
    for i in range(30):
        polar = float(rng.choice([rng.uniform(20, 75), rng.uniform(105, 160)]))
        az = float(rng.uniform(0, 2 * np.pi))
        radius = float(rng.uniform(50, 180))
        vertex = (float(rng.normal(0, 2)), float(rng.normal(0, 2)), float(rng.uniform(200, 800)))
        cloud, clusters = one_track(polar, az, radius, vertex, field=field, seed=i)
        est, status = estimate_tracks(cloud, clusters, params, det, event_id=i)
        assert status.tolist() == [trackfit.OK], trackfit.STATUS[status[0]]
        e = est[0]
        assert e["event"] == i and e["cluster_index"] == 0 and e["n_points"] == len(cloud)
        assert e["direction"] == clusters.directions[0]
        polar_err.append(math.degrees(e["polar"]) - polar)
        brho_err.append(e["brho"] / (abs(field) * radius * 1e-3 / math.sin(math.radians(polar))) - 1)
        vz_err.append(e["vertex_z"] - vertex[2])
        az_err.append((math.degrees(e["azimuthal"] - az) + 180) % 360 - 180)
        assert e["radius"] == pytest.approx(radius, rel=0.05)
        assert 0 < e["fit_rms"] < 3.0
        # the vertex is the circle's point closest to the axis: never farther than the true one
        assert math.hypot(e["vertex_x"], e["vertex_y"]) <= math.hypot(vertex[0], vertex[1]) + 1.0
        assert e["dEdx"] == pytest.approx(e["dE"] / e["arclength"]) and e["sqrt_dEdx"] == pytest.approx(
            math.sqrt(e["dEdx"])
        )
        assert e["center_z"] == e["vertex_z"]
    # the chord (Spyral) underestimates tan(polar) because a chord is shorter than its arc
    polar_tol, brho_tol = {"arc": (0.3, 0.02), "chord": (2.0, 0.06)}[mode]
    assert abs(np.median(polar_err)) < polar_tol
    assert abs(np.median(brho_err)) < brho_tol
    assert abs(np.median(vz_err)) < 3.0
    assert abs(np.median(az_err)) < 3.0


def test_arclength_and_charge_follow_the_small_pad_region():
    """dE sums the (smoothed) integral column until the track passes 152 mm from the axis."""
    cloud, clusters = one_track(60, 0.0, 200.0, vertex=(0.0, 0.0, 100.0), noise=0.0)
    est, status = estimate_tracks(cloud, clusters, EstimateParams(polar_from="arc"), DetectorParams())
    assert status[0] == trackfit.OK
    e = est[0]
    r = np.hypot(cloud[:, 0], cloud[:, 1])
    inside = np.flatnonzero(r > 152.0)[0]  # first point beyond the small pads (z-sorted = vertex first)
    # the path from the vertex-end point to the last point inside 152 mm, on the ideal helix
    expected_length = (cloud[inside - 1, 2] - cloud[0, 2]) / math.cos(math.radians(60))
    assert e["arclength"] == pytest.approx(expected_length, rel=0.01)
    assert e["dE"] == pytest.approx(1000.0 * inside, rel=1e-6)  # integral column is 1000 per point


def test_rejections_are_counted_by_reason():
    det = DetectorParams()
    params = EstimateParams()
    cloud, clusters = one_track(50, 1.0, 90.0)
    few = Clusters(
        np.where(np.arange(len(cloud)) < 20, 0, -1).astype(np.int32), clusters.cluster_labels, clusters.directions
    )
    assert estimate_tracks(cloud, few, params, det)[1].tolist() == [trackfit.TOO_FEW]
    none = Clusters(clusters.labels, clusters.cluster_labels, np.array([Direction.NONE], np.int8))
    assert estimate_tracks(cloud, none, params, det)[1].tolist() == [trackfit.DIRECTION_NONE]
    short, short_clusters = one_track(50, 1.0, 150.0, length=350.0)  # under half a turn
    wrong = Clusters(short_clusters.labels, short_clusters.cluster_labels, np.array([Direction.BACKWARD], np.int8))
    assert estimate_tracks(short, short_clusters, params, det)[1].tolist() == [trackfit.OK]
    assert estimate_tracks(short, wrong, params, det)[1].tolist() == [trackfit.MISMATCH]
    # starts at x = 150 heading +y: the circle (centre (60, 0), R 90) passes 30 mm from the axis
    far, far_clusters = one_track(50, math.pi / 2, 90.0, vertex=(150.0, 0.0, 400.0), length=300.0)
    assert estimate_tracks(far, far_clusters, params, det)[1].tolist() == [trackfit.OUTSIDE_BEAM]
    spark = cloud.copy()
    spark[:, 2] = np.repeat(np.arange(4.0), len(spark) // 4 + 1)[: len(spark)] * 10  # 4 distinct z only
    assert estimate_tracks(spark, clusters, params, det)[1].tolist() == [trackfit.SPLINE_FAILED]
    est, status = estimate_tracks(cloud, Clusters.empty(len(cloud)), params, det)
    assert len(est) == 0 and est.dtype == ESTIMATE_DTYPE and len(status) == 0


def test_stage_contract_and_registry():
    from conduit.plugins import get_registry

    assert get_registry().stages["estimate"] is EstimateStage
    assert EstimateStage.requires == ("cloud", "clusters") and EstimateStage.provides == ("estimates",)
    stage = EstimateStage(EstimateParams(), StageContext())
    stage.warm_up()
    cloud, clusters = one_track(70, 2.0, 120.0)
    event = Event(id=42, artifacts={"cloud": cloud, "clusters": clusters})
    stage.process(event)
    est = event.artifacts["estimates"]
    assert est.dtype == ESTIMATE_DTYPE and len(est) == 1 and est["event"][0] == 42
    for name in ESTIMATE_DTYPE.names:
        assert np.isfinite(est[name][0]), name


@pytest.mark.parametrize("polar", [70.0, 80.0, 100.0, 112.0])
def test_multi_turn_spirals_keep_their_polar_angle(polar):
    """Three turns with the radius shrinking by 40 %: the unwrapped arc stays linear in z."""
    radius = 80.0
    turns_length = 3 * 2 * math.pi * radius / math.sin(math.radians(polar))
    cloud, clusters = one_track(polar, 0.7, radius, vertex=(0.5, -0.5, 500.0), length=turns_length, shrink=0.4,
                                z_range=(-1e4, 1e4), max_r=1e4)  # fmt: skip
    est, status = estimate_tracks(cloud, clusters, EstimateParams(), DetectorParams())
    assert status[0] == trackfit.OK
    assert math.degrees(est[0]["polar"]) == pytest.approx(polar, abs=1.0)
    assert est[0]["vertex_z"] == pytest.approx(500.0, abs=5.0)


def test_the_stage_counts_every_rejected_cluster_by_reason():
    """The rejection reasons reach the run's counts (summary, status line, panel, HDF5) through event.counts."""
    stage = EstimateStage(EstimateParams(), StageContext())
    good, _ = one_track(70, 2.0, 120.0)
    far, _ = one_track(50, math.pi / 2, 90.0, vertex=(150.0, 0.0, 400.0), length=300.0)
    undirected, _ = one_track(80, 1.0, 100.0, seed=1)
    few = good[:10].copy()
    parts = [good, far, undirected, few]
    cloud = np.concatenate(parts)
    order = np.argsort(cloud[:, 2], kind="stable")
    labels = np.repeat(np.arange(4, dtype=np.int32), [len(p) for p in parts])
    directions = np.array([Direction.FORWARD, Direction.FORWARD, Direction.NONE, Direction.FORWARD], dtype=np.int8)
    clusters = Clusters(labels[order], np.arange(4, dtype=np.int32), directions)
    event = Event(id=3, artifacts={"cloud": cloud[order], "clusters": clusters})
    stage.process(event)
    assert event.artifacts["estimates"]["cluster_index"].tolist() == [0]
    assert event.counts == {"estimate": {"vertex_outside_beam_region": 1, "direction_none": 1, "too_few_points": 1}}
