"""z ties: the pointcloud stage's seeded tie jitter, and how the spline fits treat near-equal z.

Spyral's cluster and estimation phases fit ``scipy.interpolate.make_smoothing_spline``
over z, which raises "x should be an ascending array" on equal z values
(spyral_algorithms.md §2.2, §3.3, §4.1). These tests pin what Spyral needs
without Spyral: strictly increasing z in every cloud and every cluster, and
scipy's spline accepting them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.interpolate
from conduit.artifacts import PAD_ID, TIME, Z
from conduit.detector import DetectorParams
from conduit.event import Event
from conduit.stage import StageContext
from conduit_physics.tracks import fit as trackfit
from conduit_stages.pointcloud import kernels
from conduit_stages.pointcloud.stage import PointcloudKernel, PointcloudParams, PointcloudStage

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import physics  # noqa: E402

N_EVENTS = 12


@pytest.fixture(scope="module")
def simulated():
    """12 events of the reference mix and the simulator's [detector] table."""
    _, detector, sims = physics.simulate("default", N_EVENTS, seed=91)
    return detector, sims


def kernel(pads, detector, **overrides) -> PointcloudKernel:
    return PointcloudKernel(PointcloudParams.from_mapping(overrides), pads, detector)


def splitmix64(x: int) -> int:
    """The documented generator, written independently in Python integers."""
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_every_cloud_has_strictly_increasing_z_and_scipy_splines_accept_it(pads, simulated):
    detector, sims = simulated
    jittered = kernel(pads, detector)
    whole = kernel(pads, detector, tie_jitter=0.0)
    strict = tied = 0
    for sim in sims:
        cloud = jittered(sim.event.traces, sim.event.id)
        assert len(cloud) >= 30
        if np.all(np.diff(cloud[:, Z]) > 0):
            strict += 1
        # Spyral's spline over the whole cloud (its clusters are subsets: strict as well)
        scipy.interpolate.make_smoothing_spline(cloud[:, Z], cloud[:, 0], lam=10.0)
        plain = whole(sim.event.traces)
        if np.any(np.diff(plain[:, Z]) == 0):
            tied += 1
            with pytest.raises(ValueError, match="ascending"):
                scipy.interpolate.make_smoothing_spline(plain[:, Z], plain[:, 0], lam=10.0)
    assert strict == N_EVENTS
    assert tied == N_EVENTS  # whole time buckets: every event of the mix has ties without the jitter


def test_jitter_is_below_tie_jitter_and_keeps_everything_else(pads, simulated):
    detector, sims = simulated
    sim = sims[3]
    jittered = kernel(pads, detector, tie_jitter=0.001)(sim.event.traces, sim.event.id)
    plain = kernel(pads, detector, tie_jitter=0.0)(sim.event.traces, sim.event.id)
    assert jittered.shape == plain.shape
    key = lambda c: np.lexsort((np.floor(c[:, TIME]), c[:, PAD_ID]))  # noqa: E731
    a, b = jittered[key(jittered)], plain[key(plain)]
    shift = a[:, TIME] - b[:, TIME]
    assert np.all(shift >= 0.0) and np.all(shift < 0.001)
    assert shift.max() > 0.0009 and shift.min() < 0.0001  # spread over the whole interval
    np.testing.assert_array_equal(np.delete(a, [Z, TIME], axis=1), np.delete(b, [Z, TIME], axis=1))
    np.testing.assert_allclose(a[:, Z], detector.z_from_bucket(a[:, TIME]), rtol=0, atol=1e-9)


def test_jitter_is_seeded_by_seed_and_event_id_only(pads, simulated):
    detector, sims = simulated
    k = kernel(pads, detector)
    t0, t1 = sims[0].event.traces, sims[1].event.traces
    first = k(t0, 5)
    k(t1, 6)  # another event in between changes nothing: no shared generator state
    np.testing.assert_array_equal(k(t0, 5), first)
    np.testing.assert_array_equal(kernel(pads, detector)(t0, 5), first)  # a fresh kernel (another worker)
    assert not np.array_equal(k(t0, 6)[:, TIME], first[:, TIME])
    assert not np.array_equal(kernel(pads, detector, jitter_seed=1)(t0, 5)[:, TIME], first[:, TIME])


def test_another_process_gives_the_same_bytes(pads, simulated, tmp_path):
    """What a worker process computes for an event is what this process computes (no shared state)."""
    detector, sims = simulated
    traces = sims[4].event.traces
    np.save(tmp_path / "traces.npy", traces)
    script = (
        "import sys, numpy as np\n"
        "from conduit.detector import DetectorParams\n"
        "from conduit.padplane import load_pad_plane\n"
        "from conduit_stages.pointcloud.stage import PointcloudKernel, PointcloudParams\n"
        "k = PointcloudKernel(PointcloudParams(), load_pad_plane(None), DetectorParams())\n"
        "np.save(sys.argv[2], k(np.load(sys.argv[1]), 77))\n"
    )
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "traces.npy"), str(tmp_path / "cloud.npy")],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert detector == DetectorParams()  # the simulator's table is the default one used there
    np.testing.assert_array_equal(np.load(tmp_path / "cloud.npy"), kernel(pads, detector)(traces, 77))


def test_jitter_follows_the_documented_formula():
    cloud = np.zeros((5, 8))
    cloud[:, TIME] = 100.0
    seed, event_id = 7, 123456789
    kernels.jitter_times(cloud, TIME, 0.5, seed, event_id)
    key = splitmix64(splitmix64(seed) ^ event_id)
    expected = [100.0 + 0.5 * (splitmix64((key + i) % (1 << 64)) >> 11) / 2.0**53 for i in range(5)]
    np.testing.assert_array_equal(cloud[:, TIME], expected)


def test_stage_keys_the_jitter_with_the_event_id(pads, simulated):
    detector, sims = simulated
    stage = PointcloudStage(PointcloudParams(), StageContext(detector=detector))
    event = Event(id=4242, traces=sims[2].event.traces)
    stage.process(event)
    np.testing.assert_array_equal(event.artifacts["cloud"], kernel(pads, detector)(sims[2].event.traces, 4242))


def test_tie_jitter_zero_keeps_whole_buckets(pads, simulated):
    detector, sims = simulated
    cloud = kernel(pads, detector, tie_jitter=0.0)(sims[0].event.traces, 99)
    np.testing.assert_array_equal(cloud[:, TIME], np.round(cloud[:, TIME]))
    assert np.all(np.diff(cloud[:, Z]) >= 0)


def test_remaining_equal_values_are_lifted_one_float_step():
    z = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0])
    assert kernels.make_strictly_increasing(z) == 3
    assert np.all(np.diff(z) > 0)
    assert z[1] == np.nextafter(1.0, 2.0) and z[2] == np.nextafter(z[1], 2.0) and z[4] == np.nextafter(2.0, 3.0)
    assert kernels.make_strictly_increasing(z) == 0


def test_near_ties_share_one_spline_knot():
    step = trackfit.KNOT_MERGE_MM
    z = np.array([0.0, 0.2 * step, 0.9 * step, 5.0, 5.0, 5.0 + 0.5 * step, 10.0])
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    knots, means, weights, which = trackfit.merge_ties(z, values)
    np.testing.assert_allclose(knots, [np.mean(z[:3]), np.mean(z[3:6]), 10.0])
    np.testing.assert_array_equal(means, [2.0, 5.0, 7.0])
    np.testing.assert_array_equal(weights, [3.0, 3.0, 1.0])
    np.testing.assert_array_equal(which, [0, 0, 0, 1, 1, 1, 2])
    # exact ties keep their knot exactly where they are
    knots, *_ = trackfit.merge_ties(np.array([1.5, 1.5, 1.5, 4.0]), np.zeros(4))
    assert knots[0] == 1.5
    # a group is measured from its first sample: a chain of close samples does not become one knot
    chain = np.arange(6) * 0.6 * step
    assert len(trackfit.merge_ties(chain, np.zeros(6))[0]) == 3


def test_the_estimate_smoothing_is_the_same_with_and_without_jitter(pads, simulated):
    """Jittered near-ties merge into the knots that exact ties made: smoothed values agree to micrometres."""
    detector, sims = simulated
    sim = sims[5]
    plain = kernel(pads, detector, tie_jitter=0.0)(sim.event.traces)
    jittered = kernel(pads, detector)(sim.event.traces, sim.event.id)
    out_plain, out_jit = np.empty(len(plain)), np.empty(len(jittered))
    assert trackfit.smooth_at_points(plain[:, Z], plain[:, 0], 100.0, out_plain)
    assert trackfit.smooth_at_points(jittered[:, Z], jittered[:, 0], 100.0, out_jit)
    # same points, compare in a common order
    order_p = np.lexsort((plain[:, PAD_ID], np.round(plain[:, TIME])))
    order_j = np.lexsort((jittered[:, PAD_ID], np.floor(jittered[:, TIME])))
    np.testing.assert_allclose(out_jit[order_j], out_plain[order_p], rtol=0, atol=0.01)
