"""Histograms and gates: exact counts inside and outside polygons, intervals, combinations, config errors."""

from __future__ import annotations

import math
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conduit.artifacts import ESTIMATE_DTYPE, Clusters
from conduit.config.pipeline import PipelineError, load_pipeline
from conduit.engine.runner import run_pipeline
from conduit.event import Event
from conduit.params import ParamError
from conduit_physics.gates import inside_polygon
from conduit_stages.histogram.hset import HistogramSet
from conduit_stages.histogram.spec import GateSpec, HistogramParams, HistogramSpec
from conduit_stages.histogram.store import read_histograms, write_histograms

VENV_BIN = Path(sys.executable).parent
PID_GATE = [[0.1, 5.0], [1.0, 5.0], [1.0, 12.0], [0.1, 12.0]]


def tracks_event(i: int, rows: list[tuple[float, float, float]], *, analysed: bool = True, clusters: int | None = None,
                 n_traces: int = 4) -> Event:
    """An event whose estimates have (brho, sqrt_dEdx, polar in degrees) = rows."""
    est = np.zeros(len(rows), dtype=ESTIMATE_DTYPE)
    for k, (brho, sq, polar_deg) in enumerate(rows):
        est[k]["event"] = i
        est[k]["brho"] = brho
        est[k]["sqrt_dEdx"] = sq
        est[k]["polar"] = math.radians(polar_deg)
    artifacts = {"estimates": est}
    if clusters is not None:
        artifacts["clusters"] = Clusters(np.zeros(0, np.int32), np.arange(clusters, dtype=np.int32),
                                         np.zeros(clusters, np.int8))
    return Event(id=i, traces=np.zeros((n_traces, 517), np.int16), artifacts=artifacts, analysed=analysed)


def pid_set(extra_hists=(), extra_gates=()) -> HistogramSet:
    params = HistogramParams.from_mapping({
        "defaults": False,
        "histograms": [
            {"name": "pid", "x": "brho", "x_bins": 10, "x_range": [0.0, 2.0],
             "y": "sqrt_dEdx", "y_bins": 20, "y_range": [0.0, 40.0]},
            {"name": "kin_p", "x": "polar", "x_bins": 18, "x_range": [0.0, 180.0],
             "y": "brho", "y_bins": 10, "y_range": [0.0, 2.0], "gate": "protons"},
            *extra_hists,
        ],
        "gates": [{"name": "protons", "histogram": "pid", "polygon": PID_GATE}, *extra_gates],
    })
    return HistogramSet.from_params(params)


def test_polygon_gate_fills_gated_histogram_with_exact_counts():
    hset = pid_set()
    inside = [(0.5, 8.0, 45.0), (0.95, 11.9, 100.0), (0.15, 5.1, 5.0)]
    outside = [(0.05, 8.0, 45.0), (1.2, 8.0, 45.0), (0.5, 4.0, 45.0), (0.5, 12.5, 45.0), (1.5, 30.0, 170.0)]
    hset.fill(tracks_event(1, inside[:2] + outside[:2]))
    hset.fill(tracks_event(2, [inside[2]] + outside[2:]))
    pid, kin = hset["pid"], hset["kin_p"]
    assert pid.entries == 8 and pid.counts.sum() == 8  # ungated: everything in range
    assert kin.entries == 3 and kin.counts.sum() == 3
    # Exact bins of the three protons in (polar deg, brho): 10-degree and 0.2 T·m bins.
    expected = np.zeros((18, 10), np.int64)
    for brho, _, polar in inside:
        expected[int(polar // 10), int(brho // 0.2)] += 1
    np.testing.assert_array_equal(kin.counts, expected)
    assert kin.outside == 0  # outside counts only entries that passed the gate but missed the range
    assert hset.events == 2


def test_concave_polygon_matches_a_direct_geometric_rule():
    # An L shape: the unit square [0,2]x[0,2] minus the quadrant x>1, y>1.
    L = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], float)
    rng = np.random.default_rng(4)
    pts = rng.uniform(-0.5, 2.5, size=(20000, 2))
    # Keep away from edges, where the rule may go either way.
    edge = np.isclose(pts % 1.0, 0.0, atol=1e-6).any(axis=1)
    pts = pts[~edge]
    x, y = pts[:, 0], pts[:, 1]
    truth = (x > 0) & (x < 2) & (y > 0) & (y < 2) & ~((x > 1) & (y > 1))
    np.testing.assert_array_equal(inside_polygon(x, y, L), truth)
    assert not inside_polygon(np.array([np.nan]), np.array([0.5]), L)[0]


def test_interval_combinations_and_levels():
    hset = pid_set(
        extra_hists=[
            {"name": "polar", "x": "polar", "x_bins": 18, "x_range": [0.0, 180.0]},
            {"name": "mult_p", "x": "cluster_multiplicity", "gate": "protons"},
            {"name": "brho_fwd_p", "x": "brho", "x_bins": 10, "x_range": [0.0, 2.0], "gate": "fwd_protons"},
            {"name": "brho_not_p", "x": "brho", "x_bins": 10, "x_range": [0.0, 2.0], "gate": "not_protons"},
            {"name": "brho_either", "x": "brho", "x_bins": 10, "x_range": [0.0, 2.0], "gate": "either"},
            {"name": "brho_busy", "x": "brho", "x_bins": 10, "x_range": [0.0, 2.0], "gate": "busy"},
            {"name": "mult", "x": "cluster_multiplicity"},
        ],
        extra_gates=[
            {"name": "forward", "histogram": "polar", "interval": [0.0, 90.0]},
            {"name": "fwd_protons", "all_of": ["protons", "forward"]},
            {"name": "not_protons", "negate": "protons"},
            {"name": "either", "any_of": ["protons", "forward"]},
            {"name": "many", "histogram": "mult", "interval": [1.5, 100.0]},
            {"name": "busy", "all_of": ["many"]},
        ],
    )
    # event 1: a forward proton, a backward proton, a forward non-proton; 3 clusters
    hset.fill(tracks_event(1, [(0.5, 8.0, 30.0), (0.5, 8.0, 120.0), (1.5, 30.0, 60.0)], clusters=3))
    # event 2: one backward non-proton; 1 cluster
    hset.fill(tracks_event(2, [(1.5, 30.0, 150.0)], clusters=1))
    assert hset["brho_fwd_p"].entries == 1
    assert hset["brho_not_p"].entries == 2
    assert hset["brho_either"].entries == 3  # two protons + the forward non-proton
    # Event-level histogram gated on a track gate: counts the event if any track passes.
    np.testing.assert_array_equal(np.flatnonzero(hset["mult_p"].counts), [3])
    assert hset["mult_p"].entries == 1
    # Track histogram gated on an event gate (through a combination): every track of a busy event.
    assert hset["brho_busy"].entries == 3
    assert hset["mult"].entries == 2


def test_skipped_events_fill_only_raw_quantities_and_reset_clears():
    params = HistogramParams.from_mapping({"histograms": [{"name": "traces", "x": "n_traces", "x_bins": 10,
                                                           "x_range": [0, 10]}]})
    hset = HistogramSet.from_params(params)
    assert "pid" in hset and "vertex_z" in hset  # defaults kept alongside declared ones
    hset.fill(tracks_event(1, [(0.5, 8.0, 30.0)], analysed=False, n_traces=3))
    hset.fill(tracks_event(2, [(0.5, 8.0, 30.0)], analysed=True, n_traces=5))
    assert hset["traces"].counts[3] == 1 and hset["traces"].counts[5] == 1
    assert hset["pid"].entries == 1  # only the analysed event
    version = hset.version
    hset.reset()
    assert hset.version > version and hset.events == 0
    assert all(h.entries == 0 and h.counts.sum() == 0 for h in hset.histograms.values())


def test_default_ranges_use_the_detector_and_angles_are_degrees():
    from conduit.detector import DetectorParams

    hset = HistogramSet.from_params(HistogramParams(), DetectorParams(detector_length=800.0))
    assert (hset["vertex_z"].x.low, hset["vertex_z"].x.high) == (0.0, 800.0)
    assert hset["polar"].x.high == 180.0 and hset["polar"].x.quantity.unit == "deg"
    hset.fill(tracks_event(0, [(0.5, 8.0, 90.5)]))
    assert np.flatnonzero(hset["polar"].counts).tolist() == [90]


def test_spec_errors_are_reported_with_did_you_mean():
    with pytest.raises(ParamError) as err:
        HistogramParams.from_mapping({"histograms": [{"name": "a", "x": "brhoo"}]})
    assert "unknown quantity 'brhoo' (did you mean 'brho'?)" in str(err.value)
    with pytest.raises(ParamError) as err:
        HistogramParams.from_mapping({
            "histograms": [{"name": "h1", "x": "polar", "gate": "protns"}],
            "gates": [{"name": "protons", "histogram": "h1", "polygon": PID_GATE},
                      {"name": "loop", "all_of": ["loop2"]}, {"name": "loop2", "negate": "loop"}],
        })
    text = str(err.value)
    assert "polygon gate on 1-D histogram 'h1'; use interval" in text
    assert "unknown gate 'protns' (did you mean 'protons'?)" in text
    assert "gate 'loop' depends on itself" in text
    with pytest.raises(ParamError, match="needs exactly one of polygon"):
        GateSpec.from_mapping({"name": "g", "histogram": "pid", "polygon": PID_GATE, "interval": [0, 1]})
    with pytest.raises(ParamError, match="low must be below high"):
        HistogramSpec.from_mapping({"name": "g", "x": "brho", "x_range": [2.0, 1.0]})


def test_pipeline_errors_point_at_the_toml_line(sinkkit, write_pipeline):
    path = write_pipeline("""
        [source]
        kind = "sinkkit"

        [[stage]]
        use = "sinkkit.analyse"

        [[stage]]
        use = "histogram"

        [[stage.histograms]]
        name = "pid"
        x = "brho"
        y = "sqrt_dEdxx"

        [[stage.gates]]
        name = "protons"
        histogram = "pdi"
        polygon = [[0.1, 5.0], [1.0, 5.0], [1.0, 12.0]]
        """)
    with pytest.raises(PipelineError) as err:
        load_pipeline(path)
    lines = err.value.lines
    assert any(f"{path}:14: stage.2.histograms.0.y: unknown quantity 'sqrt_dEdxx' (did you mean 'sqrt_dEdx'?)" in ln
               for ln in lines), lines


def test_histogram_stage_requires_the_artifacts_it_reads(sinkkit, write_pipeline):
    path = write_pipeline("""
        [source]
        kind = "sinkkit"

        [[stage]]
        use = "histogram"
        """)
    with pytest.raises(PipelineError, match="requires artifact 'clusters'|requires artifact 'estimates'"):
        load_pipeline(path)


def test_pipeline_fills_and_saves_histograms_when_no_hdf5_stage(sinkkit, write_pipeline, tmp_path):
    import conduit_sinkkit as kit

    path = write_pipeline("""
        [source]
        kind = "sinkkit"
        events = 60
        run = 12

        [engine]
        workers = 0

        [[stage]]
        use = "sinkkit.analyse"

        [[stage]]
        use = "histogram"

        [[stage.histograms]]
        name = "pid"
        x = "brho"
        x_bins = 20
        x_range = [0.0, 2.0]
        y = "sqrt_dEdx"
        y_bins = 20
        y_range = [0.0, 20.0]

        [[stage.gates]]
        name = "protons"
        histogram = "pid"
        polygon = [[0.1, 5.0], [1.0, 5.0], [1.0, 12.0], [0.1, 12.0]]

        [[stage.histograms]]
        name = "kinematics_protons"
        x = "polar"
        y = "brho"
        gate = "protons"
        """)
    summary = run_pipeline(load_pipeline(path), handle_signals=False)
    assert summary.exit_code == 0, summary.error
    saved = tmp_path / "out" / "histograms_run_0012.h5"
    assert summary.outputs == [str(saved)]
    # The expectation, straight from the generator's formulas.
    n_inside = n_all = 0
    for i in range(60):
        for t in range(1 + i % 3):
            v = kit.estimate_values(i, t)
            n_all += 1
            n_inside += bool(inside_polygon(np.array([v["brho"]]), np.array([v["sqrt_dEdx"]]), np.array(PID_GATE))[0])
    with h5py.File(saved, "r") as f:
        hists = read_histograms(f["histograms"])
        assert f["histograms"].attrs["events"] == 60
        assert f["histograms/gates/protons/polygon"][...].tolist() == PID_GATE
    assert hists["pid"]["entries"] == n_all == hists["pid"]["counts"].sum()
    assert hists["kinematics_protons"]["entries"] == n_inside > 0
    assert hists["kinematics_protons"]["gate"] == "protons"
    assert hists["pid"]["x_edges"].tolist() == np.linspace(0, 2, 21).tolist()
    assert set(hists) >= {"pid", "kinematics_protons", "kinematics", "polar", "vertex_z", "cluster_multiplicity"}
    mult = hists["cluster_multiplicity"]["counts"]
    assert mult[1] == 20 and mult[2] == 20 and mult[3] == 20


def test_store_round_trip(tmp_path):
    hset = pid_set()
    hset.fill(tracks_event(1, [(0.5, 8.0, 30.0), (1.5, 30.0, 60.0)]))
    with h5py.File(tmp_path / "h.h5", "w") as f:
        write_histograms(f, hset)
        write_histograms(f, hset)  # rewriting replaces
    with h5py.File(tmp_path / "h.h5", "r") as f:
        back = read_histograms(f["histograms"])
        assert f["histograms/gates/protons"].attrs["kind"] == "polygon"
    np.testing.assert_array_equal(back["pid"]["counts"], hset["pid"].counts)
    assert back["pid"]["y"] == "sqrt_dEdx" and back["pid"]["dimensions"] == 2
    assert back["kin_p"]["entries"] == 1


CLOSE_ORDER = """
[source]
kind = "sinkkit"
events = 30
run = 3
{source_extra}

[engine]
workers = 0

[[stage]]
use = "sinkkit.analyse"
{stages}
"""
HISTOGRAM = """
[[stage]]
use = "histogram"
defaults = false
path = "out/hist_{run}.h5"

[[stage.histograms]]
name = "brho"
x = "brho"
x_bins = 12
x_range = [0.0, 1.2]
"""
HDF5 = """
[[stage]]
use = "hdf5"
path = "out/run.h5"
flush_interval = 3600.0
max_batch_mb = 10000.0
"""
#: Tracks of events 0..29 (1 + i % 3 each): every one lands in the brho histogram (0.05 .. 1.15 T·m).
TRACKS_30 = sum(1 + i % 3 for i in range(30))


def _brho(path) -> tuple[int, int]:
    """(events, entries) of the brho histogram saved in ``path``."""
    with h5py.File(path, "r") as f:
        return int(f["histograms"].attrs["events"]), int(f["histograms/brho"].attrs["entries"])


@pytest.mark.parametrize("histogram_first", [True, False])
def test_hdf5_records_the_histograms_and_the_histogram_stage_writes_no_file(sinkkit, write_pipeline, tmp_path,
                                                                             histogram_first):
    stages = HISTOGRAM + HDF5 if histogram_first else HDF5 + HISTOGRAM
    summary = run_pipeline(load_pipeline(write_pipeline(CLOSE_ORDER.format(source_extra="", stages=stages))),
                           handle_signals=False)
    assert summary.exit_code == 0, summary.error
    assert _brho(tmp_path / "out" / "run.h5") == (30, TRACKS_30)
    assert not (tmp_path / "out" / "hist_3.h5").exists()
    assert summary.outputs == [str(tmp_path / "out" / "run.h5")]


@pytest.mark.parametrize("histogram_first", [True, False])
def test_histograms_are_saved_when_the_hdf5_sink_fails_while_closing(sinkkit, write_pipeline, tmp_path,
                                                                    histogram_first):
    """Nothing is flushed before the end (flush_interval 3600 s); the final flush of ~40 MB of traces fails with
    EFBIG under a 1 MB file-size limit, so the recording has no histograms: whichever sink closes first, the
    histogram stage saves them to its own (small) file."""
    stages = HISTOGRAM + HDF5 if histogram_first else HDF5 + HISTOGRAM
    pipe = write_pipeline(CLOSE_ORDER.format(source_extra="big_after = 10", stages=stages))

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    res = subprocess.run([str(VENV_BIN / "conduit"), "run", str(pipe)], capture_output=True, text=True,
                         preexec_fn=limit, timeout=300)
    assert "run.h5.parts/store.h5: file too large" in res.stderr, res.stdout + res.stderr  # w25a: no part file
    # Events 0-9 (small) were written whole before the first big one failed: kept (w26b); the 20 others lost.
    assert "sink hdf5: 20 events not written (20 lost in a failed write)" in res.stdout
    assert "histograms: not saved by hdf5; saving them to their own file" in res.stderr
    saved = tmp_path / "out" / "hist_3.h5"
    assert _brho(saved) == (30, TRACKS_30)
    assert str(saved) in res.stdout  # listed among the outputs


def test_few_entries_are_binned_exactly_as_the_vectorised_path():
    """Events fill a few entries with plain arithmetic; the result equals numpy's binning entry for entry."""
    from conduit_physics.histograms import Axis
    from conduit_physics.quantities import QUANTITIES
    from conduit_stages.histogram.hset import Histogram

    rng = np.random.default_rng(3)
    x_axis = Axis(QUANTITIES["brho"], 37, -0.5, 2.2)
    y_axis = Axis(QUANTITIES["sqrt_dEdx"], 23, 0.0, 150.0)
    for y in (None, y_axis):
        few = Histogram("few", x_axis, y)
        bulk = Histogram("bulk", x_axis, y)
        xs_all, ys_all, masks = [], [], []
        for _ in range(400):
            n = int(rng.integers(0, 5))
            xs = rng.uniform(-1.0, 3.0, n)
            xs[rng.random(n) < 0.1] = np.nan
            xs[rng.random(n) < 0.05] = 2.2  # the upper edge is outside, as numpy's [low, high)
            ys = rng.uniform(-20.0, 170.0, n)
            mask = rng.random(n) < 0.8
            few.fill_values(xs.tolist(), None if y is None else ys.tolist(), mask.tolist())
            xs_all.append(xs)
            ys_all.append(ys)
            masks.append(mask)
        xs, ys, mask = (np.concatenate(a) for a in (xs_all, ys_all, masks))
        bulk.fill(xs, None if y is None else ys, mask)
        assert len(xs) > 40 and bulk.entries > 100 and bulk.outside > 20
        np.testing.assert_array_equal(few.counts, bulk.counts)
        assert (few.entries, few.outside) == (bulk.entries, bulk.outside)
