"""pointcloud: baseline equal to the FFT description, peaks equal to scipy.signal.find_peaks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from conduit.artifacts import AMPLITUDE, INTEGRAL, PAD_ID, SCALE, TIME, X, Y, Z
from conduit.detector import DetectorParams
from conduit.event import Event
from conduit.params import ParamError
from conduit.stage import StageContext
from conduit_stages.pointcloud.stage import PointcloudKernel, PointcloudParams, PointcloudStage
from stages_synth import KINDS, trace_zoo

FIND_PEAKS = dict(distance=50.0, prominence=20.0, width=(1.0, 50.0), rel_height=0.95)
THRESHOLD = 40.0


def reference_corrected(
    traces: np.ndarray, window_scale: float = 20.0, integer: bool = False, integer_fill: bool = False
) -> np.ndarray:
    """Spyral's baseline removal written straight from its description, with numpy's FFT.

    ``integer_fill``: the fill value is truncated, as it is when Spyral writes
    it into its int16 copy of the traces.
    """
    x = traces[:, 5:].astype(np.float64)
    x[:, 0] = x[:, 1]
    x[:, -1] = x[:, -2]
    masked = x.copy()
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    signal = (x - mean) > 1.5 * std
    for i in range(len(x)):
        fill = x[i, ~signal[i]].mean()
        masked[i, signal[i]] = np.trunc(fill) if integer_fill else fill
    k = np.fft.ifftshift(np.arange(-256, 256))
    response = np.sinc(k / window_scale)
    baseline = np.fft.ifft(np.fft.fft(masked, axis=1) * response, axis=1).real
    out = x - baseline
    return np.trunc(out) if integer else out


def reference_peaks(c: np.ndarray):
    """scipy.signal.find_peaks with Spyral's arguments, then the strict amplitude cut."""
    peaks, props = scipy.signal.find_peaks(c, **FIND_PEAKS)
    keep = c[peaks] > THRESHOLD
    peaks = peaks[keep]
    props = {k: v[keep] for k, v in props.items()}
    integrals = np.array(
        [np.abs(c[int(np.floor(l)) : int(np.ceil(r))]).sum() for l, r in zip(props["left_ips"], props["right_ips"])]
    )
    return peaks, props, integrals


@pytest.fixture(scope="module")
def zoo(pads):
    rng = np.random.default_rng(7)
    allowed = np.flatnonzero(pads.radius > 25.0)
    return trace_zoo(rng, 30, allowed)


def make_kernel(pads, **overrides) -> PointcloudKernel:
    params = PointcloudParams.from_mapping(overrides)
    return PointcloudKernel(params, pads, DetectorParams())


@pytest.mark.parametrize("window_scale", [20.0, 7.3])
def test_baseline_equals_numpy_fft_description(pads, zoo, window_scale):
    traces, _ = zoo
    kernel = make_kernel(pads, baseline_window_scale=window_scale)
    mine = kernel.baseline_corrected(traces)
    ref = reference_corrected(traces, window_scale)
    assert mine.shape == (len(traces), 512)
    assert np.max(np.abs(mine - ref)) < 1e-9
    # an odd number of traces exercises a half-filled lane
    odd = kernel.baseline_corrected(traces[:37])
    assert np.max(np.abs(odd - ref[:37])) < 1e-9


def test_integer_fill_truncates_the_fill_value(pads, zoo):
    traces, _ = zoo
    mine = make_kernel(pads, integer_fill=True).baseline_corrected(traces)
    ref = reference_corrected(traces, integer_fill=True)
    assert np.max(np.abs(mine - ref)) < 1e-9
    # and it is a different baseline from the exact mean wherever something was masked
    assert np.max(np.abs(mine - reference_corrected(traces))) > 0.01


def test_integer_samples_truncate_like_spyral(pads, zoo):
    traces, _ = zoo
    mine = make_kernel(pads, integer_samples=True).baseline_corrected(traces)
    ref = reference_corrected(traces, integer=True)
    # truncation can only differ where the float result is within rounding of an integer
    assert np.mean(mine == ref) > 0.99999
    assert np.all(mine == np.trunc(mine))


@pytest.mark.parametrize("integer", [False, True])
def test_peaks_equal_scipy_find_peaks(pads, zoo, integer, stable_argsort):
    from conduit_stages.pointcloud import kernels

    traces, kinds = zoo
    kernel = make_kernel(pads, integer_samples=integer)
    corrected = kernel.baseline_corrected(traces)
    seen = {k: 0 for k in ("plateau_peak", "two_peaks", "no_peak", "saturated_peak", "width_interpolated")}
    for c, kind in zip(corrected, kinds):
        ref, props, ref_integrals = reference_peaks(c)
        pos, prom, lip, rip, integrals = kernels.trace_peaks(c, THRESHOLD, 50.0, 20.0, 1.0, 50.0, 0.95)
        np.testing.assert_array_equal(pos, ref, err_msg=kind)
        np.testing.assert_allclose(c[pos], c[ref], rtol=1e-6)
        np.testing.assert_allclose(prom, props["prominences"], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(lip, props["left_ips"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(rip, props["right_ips"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(integrals, ref_integrals, rtol=1e-12)
        if len(ref) == 0:
            seen["no_peak"] += 1
        if len(ref) >= 2:
            seen["two_peaks"] += 1
        if kind == "saturated" and len(ref):
            seen["saturated_peak"] += 1
        if len(ref) and np.any(c[ref - 1] == c[ref]) | np.any(c[ref + 1] == c[ref]):
            seen["plateau_peak"] += 1
        if len(ref) and np.any(props["left_ips"] != np.floor(props["left_ips"])):
            seen["width_interpolated"] += 1
    # the zoo really exercised the interesting cases
    assert seen["no_peak"] >= 60 and seen["two_peaks"] >= 20 and seen["saturated_peak"] >= 20
    assert seen["width_interpolated"] >= 100
    if integer:  # float baselines make plateaus unequal; integer traces keep them
        assert seen["plateau_peak"] >= 10


@pytest.mark.filterwarnings("ignore:some peaks have a:RuntimeWarning")
@pytest.mark.parametrize("seed", range(4))
def test_peak_semantics_on_quantised_signals(seed, stable_argsort):
    """Plateaus, ties, edges and all four conditions on coarse integer signals (many ties)."""
    from conduit_stages.pointcloud import kernels

    rng = np.random.default_rng(seed)
    checked = plateaus = 0
    for _ in range(300):
        n = int(rng.integers(3, 512))
        c = np.cumsum(rng.integers(-2, 3, n)).astype(np.float64) * rng.choice([1.0, 7.0, 25.0])
        if rng.random() < 0.3:
            c = np.round(c / 50.0) * 50.0  # long plateaus
        distance = float(rng.choice([1.0, 2.5, 10.0, 50.0]))
        prominence = float(rng.choice([0.0, 5.0, 20.0]))
        wmin, wmax = sorted(rng.choice([0.0, 1.0, 3.0, 8.0, 50.0, 600.0], 2))
        rel = float(rng.choice([0.0, 0.5, 0.95, 1.0]))
        threshold = float(rng.choice([-1e9, np.median(c)]))
        ref, props = scipy.signal.find_peaks(
            c, distance=distance, prominence=prominence, width=(wmin, wmax), rel_height=rel
        )
        keep = c[ref] > threshold
        pos, prom, lip, rip, _ = kernels.trace_peaks(c, threshold, distance, prominence, wmin, wmax, rel)
        np.testing.assert_array_equal(pos, ref[keep])
        np.testing.assert_allclose(prom, props["prominences"][keep])
        np.testing.assert_allclose(lip, props["left_ips"][keep])
        np.testing.assert_allclose(rip, props["right_ips"][keep])
        checked += len(pos)
        plateaus += int(np.sum(c[np.clip(pos + 1, 0, n - 1)] == c[pos]))
    assert checked > 500 and plateaus > 50


def test_distance_rule_tie_goes_to_the_later_peak(stable_argsort):
    from conduit_stages.pointcloud import kernels

    c = np.zeros(512)
    for p in (100, 130):  # equal heights 30 TB apart, both wide enough
        c[p - 3 : p + 4] = [20, 50, 80, 100, 80, 50, 20]
    pos, *_ = kernels.trace_peaks(c, THRESHOLD, 50.0, 20.0, 1.0, 50.0, 0.95)
    ref, _ = scipy.signal.find_peaks(c, **FIND_PEAKS)
    assert list(pos) == list(ref) == [130]


@pytest.mark.parametrize("integer", [False, True])
def test_event_points_equal_reference_pipeline(pads, zoo, integer, stable_argsort):
    traces, kinds = zoo
    kernel = make_kernel(pads, integer_samples=integer)
    cloud = kernel(traces)
    corrected = reference_corrected(traces, integer=False)
    if integer:
        corrected = kernel.baseline_corrected(traces)  # truncation at exact-integer ties follows the kernel
    expected = []
    dropped = {"many": 0, "noise": 0}
    for row, c, kind in zip(traces, corrected, kinds):
        peaks, _, integrals = reference_peaks(c)
        if len(peaks) == 0 or len(peaks) > 5:
            if kind in dropped:
                dropped[kind] += 1
            continue
        pad = int(row[4])
        for p, integral in zip(peaks, integrals):
            expected.append((pad, float(p), c[p], integral))
    expected.sort()
    got = sorted(zip(cloud[:, PAD_ID].astype(int), cloud[:, TIME], cloud[:, AMPLITUDE], cloud[:, INTEGRAL]))
    assert len(got) == len(expected) > 200
    for g, e in zip(got, expected):
        assert g[0] == e[0] and e[1] <= g[1] < e[1] + 0.001  # whole bucket + Spyral's tie jitter
        assert g[2] == pytest.approx(e[2], rel=1e-6)
        assert g[3] == pytest.approx(e[3], rel=1e-6)
    assert dropped["noise"] == 30 and dropped["many"] >= 25
    # the exact quiet-trace shortcut skipped most noise traces without changing anything
    assert kernel.last_filtered <= len(traces) - 45
    # geometry and z
    pad_ids = cloud[:, PAD_ID].astype(int)
    np.testing.assert_array_equal(cloud[:, X], pads.x[pad_ids])
    np.testing.assert_array_equal(cloud[:, Y], pads.y[pad_ids])
    np.testing.assert_array_equal(cloud[:, SCALE], pads.scale[pad_ids])
    np.testing.assert_allclose(cloud[:, Z], DetectorParams().z_from_bucket(cloud[:, TIME]), rtol=1e-15)
    assert np.all(np.diff(cloud[:, Z]) > 0)


def test_beam_pads_and_excluded_pads_give_no_points(pads):
    rng = np.random.default_rng(3)
    beam = pads.beam_pads(19.8)
    assert len(beam) == 122
    traces, _ = trace_zoo(rng, 5, beam)
    traces[:, 5 + 250 : 5 + 253] += np.int16(800)  # a clear peak on every trace
    assert len(make_kernel(pads)(traces)) == 0
    assert len(make_kernel(pads, beam_pad_radius=0.0)(traces)) >= len(traces)
    traces[:, 4] = 3000
    assert len(make_kernel(pads, excluded_pads=[3000])(traces)) == 0
    traces[:, 4] = -1  # unknown pads are skipped, not an error
    assert len(make_kernel(pads)(traces)) == 0
    traces[:, 4] = 12000
    assert len(make_kernel(pads)(traces)) == 0


def _one_peak_traces(pads, centre: float, n: int = 4) -> np.ndarray:
    t = np.arange(512)
    traces = np.zeros((n, 517), dtype=np.int16)
    traces[:, 4] = np.flatnonzero(pads.radius > 50)[:n]
    traces[:, 5:] = np.round(400 + 900 * np.exp(-0.5 * ((t - centre) / 3.0) ** 2)).astype(np.int16)
    return traces


def test_time_correction_and_gain_files(pads, tmp_path):
    n_pads = pads.n_pads
    tcorr = np.round(np.linspace(-1.5, 1.5, n_pads), 6)
    (tmp_path / "tcorr.csv").write_bytes(("tcorr\r" + "\r".join(f"{v}" for v in tcorr) + "\r").encode())
    gain = np.full(n_pads, 1.3)
    (tmp_path / "gain.csv").write_text("sizegain\n" + "\n".join("1.3" for _ in gain) + "\n")
    traces = _one_peak_traces(pads, 200.0)
    plain = make_kernel(pads)(traces)
    params = PointcloudParams.from_mapping({"time_correction": "tcorr.csv", "gain": "gain.csv"})
    kernel = PointcloudKernel(params, pads, DetectorParams(), base_dir=tmp_path)
    corrected = kernel(traces)
    order = np.argsort(plain[:, PAD_ID])
    order2 = np.argsort(corrected[:, PAD_ID])
    pad_ids = plain[order, PAD_ID].astype(int)
    np.testing.assert_allclose(corrected[order2, TIME], plain[order, TIME] + tcorr[pad_ids])
    np.testing.assert_allclose(corrected[order2, AMPLITUDE], plain[order, AMPLITUDE] * 1.3)
    np.testing.assert_allclose(corrected[order2, INTEGRAL], plain[order, INTEGRAL] * 1.3)
    np.testing.assert_allclose(corrected[order2, Z], DetectorParams().z_from_bucket(corrected[order2, TIME]))


def test_bad_pad_files_name_file_and_line(pads, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("tcorr\n0.1\nfoo\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: expected a number"):
        PointcloudKernel(PointcloudParams(time_correction=bad), pads, DetectorParams())
    short = tmp_path / "short.csv"
    short.write_text("tcorr\n0.1\n0.2\n")
    with pytest.raises(ValueError, match=r"short.csv: time correction file has 2 pad rows, the pad plane has 10240"):
        PointcloudKernel(PointcloudParams(time_correction=short), pads, DetectorParams())
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("0.5\n" * 10241)
    with pytest.raises(ValueError, match=r"headerless.csv:1: the first line must be a header"):
        PointcloudKernel(PointcloudParams(gain=headerless), pads, DetectorParams())
    with pytest.raises(FileNotFoundError, match=r"missing.csv: gain file not found"):
        PointcloudKernel(PointcloudParams(gain=tmp_path / "missing.csv"), pads, DetectorParams())


def test_parabolic_centroid_is_deterministic_and_sub_bucket(pads):
    traces = _one_peak_traces(pads, 200.3)
    index = make_kernel(pads, tie_jitter=0.0)(traces)
    parabolic = make_kernel(pads, centroid="parabolic", tie_jitter=0.0)(traces)
    assert np.all(index[:, TIME] == 200.0)
    assert np.all(np.abs(parabolic[:, TIME] - 200.3) < 0.05)
    np.testing.assert_array_equal(parabolic, make_kernel(pads, centroid="parabolic", tie_jitter=0.0)(traces))


def test_params_are_validated():
    with pytest.raises(ParamError) as err:
        PointcloudParams.from_mapping({"peak_max_width": 0.5, "peak_treshold": 3, "centroid": "middle"})
    text = str(err.value)
    assert "peak_treshold" in text and "did you mean 'peak_threshold'" in text
    assert "centroid" in text
    with pytest.raises(ParamError, match="peak_max_width: must be >= peak_min_width"):
        PointcloudParams.from_mapping({"peak_max_width": 0.5})


def test_stage_runs_from_registry_and_handles_empty_and_bad_events(pads):
    from conduit.plugins import get_registry

    cls = get_registry().stages["pointcloud"]
    assert cls is PointcloudStage
    stage = cls(PointcloudParams(), StageContext())
    stage.warm_up()
    event = Event(id=1, traces=_one_peak_traces(pads, 300.0))
    stage.process(event)
    cloud = event.artifacts["cloud"]
    assert cloud.shape == (4, 8) and cloud.dtype == np.float64
    empty = Event(id=2)
    stage.process(empty)
    assert empty.artifacts["cloud"].shape == (0, 8)
    with pytest.raises(ValueError, match=r"shape \(n, 517\)"):
        stage.process(Event(id=3, traces=np.zeros((4, 100), dtype=np.int16)))


def test_the_zoo_holds_the_hard_cases_the_comparisons_rely_on(zoo):
    """The reference comparisons above only mean something if the zoo really holds saturated, flat-topped,
    constant and pulse-free traces, many of each: check the samples themselves, not the kinds' names."""
    traces, kinds = zoo
    samples = traces[:, 5:].astype(np.int64)
    of = {kind: samples[[k == kind for k in kinds]] for kind in KINDS}
    assert all(len(rows) == 30 for rows in of.values())

    def flat_top(row) -> bool:  # the maximum held on at least two neighbouring samples
        top = np.flatnonzero(row == row.max())
        return bool(np.any(np.diff(top) == 1))

    assert all(row.max() == 4095 and flat_top(row) for row in of["saturated"])
    assert all(flat_top(row) for row in of["plateau"])
    assert all(np.all(row == row[0]) for row in of["constant"])
    noise_height = [row.max() - np.median(row) for row in of["noise"]]
    pulse_height = [row.max() - np.median(row) for row in of["single"]]
    assert max(noise_height) < 40 < np.median(pulse_height)


def real_frame_traces() -> np.ndarray:
    """The real GRAW frame's 17 channels (CoBo 4, AsAd 0; 16 of them FPN channels) as (n, 517) rows.

    Pad ids from the electronics map; the FPN channels have none (-1).
    """
    from pathlib import Path

    from conduit.get.frames import decode_frame
    from conduit.get.maps import load_electronics_map

    path = Path(__file__).resolve().parents[1] / "data" / "partial_readout_frame.graw"
    frame = decode_frame(path.read_bytes(), source=str(path))
    aget, channel = frame.channels[:, 0].astype(int), frame.channels[:, 1].astype(int)
    pads = load_electronics_map(None).pad_of(
        np.full(len(aget), frame.header.cobo), np.full(len(aget), frame.header.asad), aget, channel
    )
    traces = np.zeros((len(aget), 517), dtype=np.int16)
    traces[:, 0] = frame.header.cobo
    traces[:, 1] = frame.header.asad
    traces[:, 2] = aget
    traces[:, 3] = channel
    traces[:, 4] = pads
    traces[:, 5:] = frame.traces
    return traces


def test_real_frame_baseline_and_peaks(pads, stable_argsort):
    """Real GET samples (noisy first bucket, pedestals ~300-380 ADC): same baseline and peaks as the references."""
    from conduit_stages.pointcloud import kernels

    traces = real_frame_traces()
    assert len(traces) == 17 and np.all(traces[:, 5:] > 0) and np.sum(traces[:, 4] >= 0) == 1
    assert np.any(traces[:, 5] != traces[:, 6])  # the edge the fix is for
    compared = 0
    for integer in (False, True):
        kernel = make_kernel(pads, integer_samples=integer, integer_fill=integer)
        corrected = kernel.baseline_corrected(traces)
        ref = reference_corrected(traces, integer_fill=integer)
        if integer:
            np.testing.assert_array_equal(corrected, np.trunc(ref))
        else:
            assert np.max(np.abs(corrected - ref)) < 1e-9
        for c in corrected:  # low thresholds so that the real noise makes peaks to compare
            for threshold in (5.0, 15.0):
                ref_peaks, _ = scipy.signal.find_peaks(c, distance=10, prominence=5, width=(1, 50), rel_height=0.95)
                ref_peaks = ref_peaks[c[ref_peaks] > threshold]
                pos, *_ = kernels.trace_peaks(c, threshold, 10.0, 5.0, 1.0, 50.0, 0.95)
                np.testing.assert_array_equal(pos, ref_peaks)
                compared += len(pos)
    assert compared > 50
    # the stage on the real frame: only the pad channel can give points (FPN rows have no pad)
    cloud = make_kernel(pads, peak_threshold=5.0, peak_prominence=5.0)(traces)
    assert cloud.shape[1] == 8 and np.all(np.diff(cloud[:, Z]) >= 0)
    assert set(cloud[:, PAD_ID].astype(int)) <= {6080}


def test_warm_up_compiles_every_kernel_an_event_uses(pads, zoo):
    """After warm_up, an event with many points compiles nothing more (no JIT in a worker's first event)."""
    from conduit_stages.pointcloud import kernels

    stage = PointcloudStage(PointcloudParams(), StageContext())
    stage.warm_up()
    used = ("event_cloud",)  # the stage's one kernel call per event (event_points, jitter, z, sort inside)
    before = {name: list(getattr(kernels, name).signatures) for name in used}
    assert all(len(signatures) == 1 for signatures in before.values())
    event = Event(id=5, traces=zoo[0])
    stage.process(event)
    assert len(event.artifacts["cloud"]) > 10
    assert {name: list(getattr(kernels, name).signatures) for name in used} == before


@pytest.mark.parametrize("overrides", [{}, {"tie_jitter": 0.0}, {"centroid": "parabolic", "jitter_seed": 3}])
def test_one_kernel_call_gives_the_cloud_of_the_separate_steps_byte_for_byte(pads, zoo, overrides):
    """The stage's one compiled call (points, jitter, z, sort) gives exactly what the steps give one by one:
    the points, the tie jitter, the detector's own z_from_bucket (numpy) and the stable sort by z."""
    from conduit_stages.pointcloud import kernels

    traces, _ = zoo
    kernel = make_kernel(pads, **overrides)
    detector = DetectorParams(window_time_bucket=547.25, micromegas_time_bucket=9.5, detector_length=998.0)
    kernel = PointcloudKernel(kernel.params, pads, detector)
    for event_id in (0, 17, 2**40 + 3):
        cloud = kernel.unsorted(traces)
        jitter = kernel.params.tie_jitter
        if jitter > 0:
            kernels.jitter_times(cloud, TIME, jitter, kernel.params.jitter_seed, event_id)
        cloud[:, Z] = detector.z_from_bucket(cloud[:, TIME])
        expected = kernels.rows_sorted_by(cloud, Z, jitter > 0)
        got = kernel(traces, event_id)
        assert len(got) > 10
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()
