"""The detector response: pulse shape, drift timing, digitisation, zero suppression, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
from simulate.sim_peaks import count_points, find_trace_peaks, remove_baseline

from conduit.detector import DetectorParams
from conduit_simulate.generator import Simulator
from conduit_simulate.params import SimulationParams
from conduit_simulate.response import shaper_kernel


def _continuous(t):
    return np.exp(-3 * t) * t**3 * np.sin(t)


def test_shaper_kernel_is_the_get_response_at_one_bucket_spacing():
    tau = 6.25
    k = shaper_kernel(tau)
    peak = _continuous(np.linspace(0, 3, 300001)).max()
    assert peak == pytest.approx(0.04409, rel=1e-3)  # reference §8
    t = np.arange(len(k))
    assert np.allclose(k, _continuous(t / tau) / peak)
    assert k[0] == 0.0 and k.max() <= 1.0 and k.max() > 0.99
    # Negative lobe from π τ on, minimum about −0.96 % of the peak.
    assert np.all(k[(t > math.pi * tau + 0.5) & (t < 2 * math.pi * tau - 0.5)] < 0)
    assert k.min() == pytest.approx(-0.0096, abs=0.0005)


def _pulse_properties(trace: np.ndarray) -> tuple[float, float]:
    """Sub-bucket peak position (parabola through the top three samples) and FWHM (linear interpolation)."""
    i = int(np.argmax(trace))
    a, b, c = trace[i - 1], trace[i], trace[i + 1]
    peak_t = i + 0.5 * (a - c) / (a - 2 * b + c)
    peak_v = b - 0.25 * (a - c) * (peak_t - i)
    half = peak_v / 2
    left = i - 1
    while trace[left] > half:
        left -= 1
    right = i + 1
    while trace[right] > half:
        right += 1
    t_left = left + (half - trace[left]) / (trace[left + 1] - trace[left])
    t_right = right - 1 + (trace[right - 1] - half) / (trace[right - 1] - trace[right])
    return peak_t, t_right - t_left


@pytest.fixture(scope="module")
def sharp_simulator():
    """No diffusion: a point deposit lands on one pad at one time."""
    params = SimulationParams(preset="single-track", transverse_diffusion=0.0, longitudinal_diffusion=0.0, fano=0.0)
    return Simulator(params)


@pytest.mark.parametrize("z", [200.0, 537.25, 900.0])
def test_point_deposit_peaks_at_the_bucket_of_its_z(sharp_simulator, z):
    sim = sharp_simulator
    det = sim.detector
    pads, signal = sim.pad_signals(30.0, 40.0, z, 0.01)
    assert len(pads) == 1
    assert pads[0] == sim.pads.pad_at(np.array([30.0]), np.array([40.0]))[0]
    # The [detector] buckets are peak-time edges (as calibrated on real data): the pulse PEAK sits at the
    # bucket of z, which the analysis' z_from_bucket inverts exactly; the charge arrives 1.166 τ earlier.
    expected_peak = float(det.bucket_from_z(z))
    assert det.z_from_bucket(expected_peak) == pytest.approx(z)
    peak_t, fwhm = _pulse_properties(signal[0])
    tau = sim.tau
    assert tau == pytest.approx(6.25)
    assert peak_t == pytest.approx(expected_peak, abs=0.15)
    assert fwhm == pytest.approx(1.26 * tau, abs=0.3)
    # Amplitude: electrons x gain x ADC per electron (unit-peak response; Polya draws average out only roughly).
    expected = 0.01 / 34e-6 * sim.params.gain * sim.adc_per_electron
    assert signal[0].max() == pytest.approx(expected, rel=0.15)


def test_shaping_time_sets_the_pulse_width():
    sim = Simulator(
        SimulationParams(
            preset="single-track", transverse_diffusion=0.0, longitudinal_diffusion=0.0, shaping_time=512.0
        )
    )
    assert sim.tau == pytest.approx(3.2)
    _, signal = sim.pad_signals(30.0, 40.0, 500.0, 0.01)
    peak_t, fwhm = _pulse_properties(signal[0])
    assert peak_t == pytest.approx(float(sim.detector.bucket_from_z(500.0)), abs=0.15)
    assert fwhm == pytest.approx(1.26 * 3.2, abs=0.3)


def test_diffusion_spreads_charge_over_neighbouring_pads():
    sim = Simulator(SimulationParams(preset="single-track", fano=0.0))
    near_pads, _ = sim.pad_signals(30.0, 40.0, 990.0, 0.05)  # 10 mm of drift: σ_T ≈ 0.35 mm
    far_pads, far = sim.pad_signals(30.0, 40.0, 100.0, 0.05)  # 900 mm: σ_T ≈ 3.3 mm
    assert len(far_pads) > len(near_pads) >= 1
    assert len(far_pads) >= 4


def test_quiet_event_baseline_is_the_pedestal_and_each_crossing_one_peak(quiet_single_track):
    sim = Simulator(quiet_single_track)
    ev = sim.event(0)
    traces = ev.event.traces
    samples = traces[:, 5:].astype(int)
    assert len(traces) > 20
    # With no noise and flat pedestals every sample away from the pulse is exactly 400.
    assert np.median(samples) == 400
    assert np.all(samples[:, :3] == 400)
    peaks_per_trace = [len(find_trace_peaks(t - 400.0, threshold=40.0)) for t in samples]
    assert all(n <= 1 for n in peaks_per_trace)  # the proton crosses each pad once
    assert sum(peaks_per_trace) > 0.5 * len(traces)
    # Zero suppression: every read channel has a signal above the 20-ADC threshold.
    assert np.all(samples.max(axis=1) - 400 > 20)
    truth = ev.truth
    assert set(traces[:, 4].tolist()) == set(truth.contributions["pad"][truth.contributions["read"]].tolist())


def test_pulse_times_follow_the_track_z(quiet_single_track):
    sim = Simulator(quiet_single_track)
    ev = sim.event(1)
    traces = ev.event.traces
    deposits = ev.truth.deposits
    det = sim.detector
    for row in traces[:20]:
        pad = int(row[4])
        peak_t, _ = _pulse_properties(row[5:].astype(float) - 400.0)
        z_point = float(det.z_from_bucket(peak_t))
        # Deposits collected on this pad (by their projected position) lie at that z within a few mm.
        on_pad = sim.pads.pad_at(deposits["x"].astype(float), deposits["y"].astype(float)) == pad
        if on_pad.any():
            assert np.min(np.abs(deposits["z"][on_pad] - z_point)) < 6.0


def test_saturation_flattens_pulses_at_4095():
    params = SimulationParams(preset="single-track", gain=200_000.0, events=1)
    ev = Simulator(params).event(0)
    samples = ev.event.traces[:, 5:]
    assert samples.max() == 4095
    assert samples.min() >= 0
    saturated = samples == 4095
    runs = [
        np.max(np.diff(np.flatnonzero(np.diff(np.concatenate([[0], r.astype(int), [0]])) != 0))[::2])
        for r in saturated
        if r.any()
    ]
    assert max(runs) >= 5  # flat tops several buckets long


def test_partial_readout_suppresses_quiet_channels_and_full_reads_everything():
    quiet = dict(events=1, noise=0.0, fpn_noise=0.0)
    sim = Simulator(SimulationParams(noise_pads=50, **quiet))
    partial = sim.event(0)
    full = Simulator(SimulationParams(readout="full", **quiet)).event(0)
    # Full readout: every pad of the map, once.
    assert full.event.n_traces == 10240
    assert sorted(full.event.traces[:, 4].tolist()) == list(range(10240))
    # Same seed, same physics: the partial event's rows are the full event's rows, sample for sample.
    by_pad = {int(r[4]): r for r in full.event.traces}
    for row in partial.event.traces:
        assert np.array_equal(by_pad[int(row[4])], row)
    c = partial.truth.contributions
    read = set(partial.event.traces[:, 4].tolist())
    signal_pads = set(c["pad"].tolist())
    assert len(read - signal_pads) == 50  # the noise-only pads
    # Every signal channel read rises more than 20 ADC over its pedestal; every one left out stays below.
    for pad, row in by_pad.items():
        if pad not in signal_pads:
            continue
        height = row[5:].max() - sim.pedestals[Simulator.channel_index(row[None, :4].astype(np.int64))][0]
        assert (height > 20) == (pad in read), pad
    assert signal_pads - read  # diffusion tails below threshold exist
    assert np.array_equal(c["read"], np.isin(c["pad"], list(read)))


def test_fpn_rows_carry_pedestal_and_correlated_noise_only():
    sim = Simulator(SimulationParams(events=1))
    ev = sim.event(0)
    fpn = ev.fpn
    assert len(fpn) == 160 * 4
    assert set(fpn[:, 3].tolist()) == {11, 22, 45, 56}
    assert np.all(fpn[:, 4] == -1)
    assert not np.isin(ev.event.traces[:, 3], [11, 22, 45, 56]).any()
    ped = sim.pedestals[Simulator.channel_index(fpn[:, :4].astype(np.int64))]
    resid = fpn[:, 5:] - ped[:, None]
    assert abs(resid.mean()) < 0.2
    assert resid.std() == pytest.approx(math.hypot(4.0, 2.0), rel=0.05)
    # Channels share the correlated noise of their AGET quarter with its FPN channel.
    traces = ev.event.traces
    row = next(r for r in traces if r[3] < 11 and r[4] not in set(ev.truth.contributions["pad"].tolist()))
    partner = next(f for f in fpn if tuple(f[:3]) == tuple(row[:3]) and f[3] == 11)
    other = next(f for f in fpn if tuple(f[:3]) == tuple(row[:3]) and f[3] == 45)
    a = row[5:] - row[5:].mean()
    assert np.corrcoef(a, partner[5:])[0, 1] > 0.1
    assert abs(np.corrcoef(a, other[5:])[0, 1]) < 0.1


def test_noise_only_traces_give_no_peak_above_40_after_baseline_removal():
    sim = Simulator(SimulationParams(events=5))
    for i in range(5):
        ev = sim.event(i)
        signal_pads = set(ev.truth.contributions["pad"].tolist())
        noise = ev.event.traces[[int(p) not in signal_pads for p in ev.event.traces[:, 4]]]
        assert len(noise) == 400
        cleaned = remove_baseline(noise[:, 5:])
        assert cleaned.max() < 40
        assert all(len(find_trace_peaks(t)) == 0 for t in cleaned)


def test_same_seed_same_events_other_seed_different():
    a = Simulator(SimulationParams(seed=11, events=3))
    b = Simulator(SimulationParams(seed=11, events=3))
    c = Simulator(SimulationParams(seed=12, events=3))
    for i in (2, 0):  # order does not matter: each event has its own generators
        ea, eb, ec = a.event(i), b.event(i), c.event(i)
        assert np.array_equal(ea.event.traces, eb.event.traces)
        assert np.array_equal(ea.fpn, eb.fpn)
        assert ea.event.timestamp == eb.event.timestamp
        assert np.array_equal(ea.truth.deposits, eb.truth.deposits)
        assert ea.event.id == a.params.first_event_id + i
        assert ea.event.traces.shape != ec.event.traces.shape or not np.array_equal(ea.event.traces, ec.event.traces)
    assert not np.array_equal(a.pedestals, c.pedestals)


def test_timestamps_follow_the_trigger_rate():
    sim = Simulator(SimulationParams(trigger_rate=50.0, preset="single-track"))
    stamps = [sim.event(i).event for i in range(4)]
    gaps = np.diff([e.timestamp for e in stamps])
    assert np.all(np.abs(gaps - 2_000_000) < 200_000)  # 20 ms at 100 MHz, jitter < 10 %
    assert all(e.timestamp_other != e.timestamp for e in stamps)


@pytest.mark.slow
def test_default_preset_is_the_reference_event_mix():
    """About 700 traces and 200 points per event on average (100 events; tolerances ±15 % and ±25 %).

    Points come from the project's pointcloud stage (peak_threshold 40 ADC, beam pads
    excluded), cross-checked against the reference peak finder of sim_peaks.py.
    """
    from conduit_stages.pointcloud.stage import PointcloudKernel, PointcloudParams

    sim = Simulator(SimulationParams(events=100, seed=3))
    cloud = PointcloudKernel(PointcloudParams(), sim.pads, sim.detector)
    beam = set(sim.pads.beam_pads().tolist())
    n_traces, n_points, n_reference = [], [], []
    for i in range(100):
        traces = sim.event(i).event.traces
        n_traces.append(len(traces))
        n_points.append(len(cloud(traces)))
        if i < 20:
            n_reference.append(count_points(traces, beam))
    assert np.mean(n_traces) == pytest.approx(700, rel=0.15)
    assert np.mean(n_points) == pytest.approx(200, rel=0.25)
    assert np.mean(n_reference) == pytest.approx(np.mean(n_points[:20]), rel=0.05)


def test_point_cloud_of_a_track_lies_on_its_truth_deposits(quiet_single_track):
    """Points lie on the true track: x, y within the diffusion spread, z unbiased (peaks at the bucket of z)."""
    from conduit_stages.pointcloud.stage import PointcloudKernel, PointcloudParams

    sim = Simulator(quiet_single_track)
    ev = sim.event(2)
    cloud = PointcloudKernel(PointcloudParams(), sim.pads, sim.detector)(ev.event.traces)
    dep = ev.truth.deposits
    assert len(cloud) > 30
    dz = []
    for x, y, z in cloud[:, :3]:
        near = (
            np.hypot(dep["x"] - x, dep["y"] - y) < 10.0
        )  # pads lit by diffusion (3σ_T ≈ 5 mm) around the track, big pads 5 mm wide
        assert near.any()
        dz.append(np.min(np.abs(dep["z"][near] - z)))
    assert np.median(dz) < 2.0


def test_detector_settings_change_drift_and_field():
    det = DetectorParams(micromegas_time_bucket=20.0, window_time_bucket=420.0, magnetic_field=2.0)
    sim = Simulator(SimulationParams(preset="single-track", transverse_diffusion=0.0, longitudinal_diffusion=0.0), det)
    pads, signal = sim.pad_signals(30.0, 40.0, 300.0, 0.01)
    peak_t, _ = _pulse_properties(signal[0])
    assert peak_t == pytest.approx(float(det.bucket_from_z(300.0)), abs=0.15)
    ev = sim.event(0)
    p = ev.truth.particles[0]
    assert p["brho"] == pytest.approx(0.3235, rel=1e-3)


@pytest.mark.parametrize(
    "preset,roles,names",
    [
        ("default", {"beam", "ejectile", "residual"}, None),
        ("elastic", {"beam", "ejectile", "residual"}, {"10Be", "d"}),
        ("dp", {"beam", "ejectile", "residual"}, {"10Be", "p", "11Be"}),
        ("protons", {"gun"}, {"p"}),
        ("alphas", {"gun"}, {"alpha"}),
        ("single-track", {"gun"}, {"p"}),
    ],
)
def test_every_preset_generates_its_particles(preset, roles, names):
    sim = Simulator(SimulationParams(preset=preset, events=3))
    for i in range(3):
        ev = sim.event(i)
        parts = ev.truth.particles
        assert {r.decode() for r in parts["role"]} == roles
        if names is not None:
            assert {n.decode() for n in parts["name"]} == names
        lo, hi = sim.vertex_range
        vertex = parts[parts["role"] != b"beam"]
        assert np.all((vertex["z"] >= lo) & (vertex["z"] <= hi))
        assert ev.event.n_traces > 0
    if preset == "single-track":
        p = sim.event(0).truth.particles[0]
        assert p["energy"] == 5.0 and p["polar"] == pytest.approx(math.radians(60.0))


def test_events_without_particles_and_bad_vertex_ranges():
    sim = Simulator(SimulationParams(preset="protons", gun_multiplicity=(0, 0), noise_hits=0.0, noise_pads=25))
    ev = sim.event(0)
    assert ev.event.n_traces == 25  # only the noise-only pads
    assert len(ev.truth.particles) == 0 and len(ev.truth.contributions) == 0
    with pytest.raises(ValueError, match=r"vertex_z \[-5.0, 2000.0\] mm lies outside the drift volume 0..1000 mm"):
        Simulator(SimulationParams(vertex_z=(-5.0, 2000.0)))
    with pytest.raises(ValueError, match=r"10Be at 1 MeV stops before the vertex range 89..1000 mm in 600 Torr D2"):
        Simulator(SimulationParams(beam_energy=1.0, events=1))
    with pytest.raises(ValueError, match="every reaction channel of preset 'dp' is below threshold"):
        Simulator(SimulationParams(preset="dp", beam_energy=9.0, pressure=100.0, vertex_z=(100.0, 110.0)))
