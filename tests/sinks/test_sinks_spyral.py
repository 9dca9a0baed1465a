"""layout = "spyral": a workspace Spyral's phases open as is (pinned here without Spyral installed).

The real chain (simulated events, pointcloud, cluster.hdbscan, estimate) writes
the workspace; the tests then read it the way Spyral 1.1.2's phases do
(conduit_stages.hdf5_sink.spyral lists what each reads): directory and file
names, group and dataset attribute names and dtypes, column order, strictly
increasing z in every cloud and cluster (scipy's smoothing spline, which Spyral
calls, accepts them), and the Estimation parquet's columns, dtypes and links
back to the cluster file. benchmarks/spyral_continue.py runs Spyral itself.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.interpolate
from conduit.config.pipeline import load_pipeline
from conduit.detector import DetectorParams
from conduit.engine.runner import run_pipeline
from conduit.padplane import load_pad_plane
from conduit_stages.hdf5_sink import spyral

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from spyral_continue import pipeline_toml  # noqa: E402  (the benchmark's pipeline: the same chain)

RUN = 7
EVENTS = 24

#: What Spyral's phases read, by object (attribute names exactly; dtypes as Spyral writes them).
CLOUD_GROUP_ATTRS = {"min_event": np.int64, "max_event": np.int64}
CLOUD_ATTRS = {"orig_run": np.int64, "orig_event": np.int64, "ic_amplitude": np.float64,
               "ic_integral": np.float64, "ic_centroid": np.float64, "ic_multiplicity": np.float64}
EVENT_ATTRS = {"nclusters": np.int64, **CLOUD_ATTRS}
CLUSTER_ATTRS = {"label": np.int64, "direction": np.int64}
PARQUET_COLUMNS = [
    ("event", "int64"), ("cluster_index", "int64"), ("cluster_label", "int64"), ("orig_run", "int64"),
    ("orig_event", "int64"), ("ic_amplitude", "double"), ("ic_centroid", "double"), ("ic_integral", "double"),
    ("ic_multiplicity", "double"), ("vertex_x", "double"), ("vertex_y", "double"), ("vertex_z", "double"),
    ("center_x", "double"), ("center_y", "double"), ("center_z", "double"), ("polar", "double"),
    ("azimuthal", "double"), ("brho", "double"), ("dEdx", "double"), ("sqrt_dEdx", "double"), ("dE", "double"),
    ("arclength", "double"), ("direction", "int64"),
]  # fmt: skip


def record(directory: Path, events: int = EVENTS, pointcloud: str = "", hdf5: str = "",
           path: str = "out/run_{run:04d}.h5"):  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    pipe = directory / "pipe.toml"
    pipe.write_text(pipeline_toml(events, 5, RUN, 0, pointcloud, hdf5, path))
    summary = run_pipeline(load_pipeline(pipe), handle_signals=False)
    assert summary.exit_code == 0, summary.error
    return summary


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(directory, run summary) of one recorded run: 24 simulated events, default stages."""
    directory = tmp_path_factory.mktemp("spyral")
    summary = record(directory)
    return directory, summary


def spyral_range(group: h5py.Group) -> range:
    """The event ids a Spyral phase probes: min_event .. max_event inclusive."""
    return range(int(group.attrs["min_event"]), int(group.attrs["max_event"]) + 1)


def check_attrs(obj, expected: dict) -> None:
    assert set(obj.attrs) == set(expected), obj.name
    for key, dtype in expected.items():
        assert np.asarray(obj.attrs[key]).dtype == dtype, (obj.name, key)


def test_directory_and_file_names(workspace):
    directory, summary = workspace
    ws = directory / "ws"
    names = {"Pointcloud": f"run_{RUN:04d}.h5", "Cluster": f"run_{RUN:04d}.h5",
             "Estimation": f"run_{RUN:04d}.parquet"}  # fmt: skip
    assert sorted(p.name for p in ws.iterdir()) == sorted(names)
    for phase, name in names.items():
        assert sorted(p.name for p in (ws / phase).iterdir()) == [name]  # consolidated: no parts left
    # Spyral's trace_path: the run file, named run_NNNN.h5, holds the traces (merger 1.0)
    run_file = directory / "out" / f"run_{RUN:04d}.h5"
    assert summary.outputs == [str(run_file)] + [str(ws / phase / name) for phase, name in names.items()]
    with h5py.File(run_file, "r") as f:
        assert f["events"].attrs["version"] == "libattpc_merger:1.0" and len(f["events"]) == EVENTS
    for phase in names:
        assert spyral.workspace_file(ws, phase, RUN) == ws / phase / names[phase]


def test_point_clouds_as_the_cluster_phase_reads_them(workspace):
    directory, _ = workspace
    pads, detector = load_pad_plane(None), DetectorParams()
    with h5py.File(directory / "ws" / "Pointcloud" / f"run_{RUN:04d}.h5", "r") as f:
        assert list(f) == ["cloud"]
        group = f["cloud"]
        check_attrs(group, CLOUD_GROUP_ATTRS)
        read = 0
        for idx in spyral_range(group):
            if f"cloud_{idx}" not in group:
                continue
            ds = group[f"cloud_{idx}"]
            check_attrs(ds, CLOUD_ATTRS)
            assert ds.attrs["orig_run"] == RUN and ds.attrs["orig_event"] == idx
            cloud = ds[...]
            assert cloud.dtype == np.float64 and cloud.ndim == 2 and cloud.shape[1] == 8
            # column order: x, y, z, amplitude, integral, pad, time, scale
            pad = cloud[:, 5].astype(np.int64)
            np.testing.assert_array_equal(cloud[:, 5], pad)
            np.testing.assert_array_equal(cloud[:, 0], pads.x[pad])
            np.testing.assert_array_equal(cloud[:, 1], pads.y[pad])
            np.testing.assert_array_equal(cloud[:, 7], pads.scale[pad])
            np.testing.assert_allclose(cloud[:, 2], detector.z_from_bucket(cloud[:, 6]), rtol=0, atol=1e-9)
            assert np.all(cloud[:, 3] > 40.0) and np.all(cloud[:, 4] > 0.0)
            # strictly increasing z: Spyral's sort check and its splines over z both pass
            assert np.all(np.diff(cloud[:, 2]) > 0)
            scipy.interpolate.make_smoothing_spline(cloud[:, 2], cloud[:, 0], lam=10.0)
            read += 1
    assert read == EVENTS


def test_clusters_as_the_estimation_phase_reads_them(workspace):
    directory, _ = workspace
    with h5py.File(directory / "ws" / "Cluster" / f"run_{RUN:04d}.h5", "r") as f, \
            h5py.File(directory / "ws" / "Pointcloud" / f"run_{RUN:04d}.h5", "r") as p:  # fmt: skip
        assert list(f) == ["cluster"]
        group = f["cluster"]
        check_attrs(group, CLOUD_GROUP_ATTRS)
        events = clusters = 0
        for idx in spyral_range(group):
            if f"event_{idx}" not in group:
                continue
            event = group[f"event_{idx}"]
            check_attrs(event, EVENT_ATTRS)
            events += 1
            cloud = p["cloud"][f"cloud_{idx}"][...]
            n = int(event.attrs["nclusters"])
            assert sorted(event) == sorted(f"cluster_{i}" for i in range(n))
            for cidx in range(n):
                cg = event[f"cluster_{cidx}"]
                check_attrs(cg, CLUSTER_ATTRS)
                assert cg.attrs["direction"] in (-1, 0, 1)
                data = cg["cloud"][...]
                assert data.dtype == np.float64 and data.shape[1] == 5
                # columns x, y, z, integral, scale: rows of the event's cloud
                rows = np.searchsorted(cloud[:, 2], data[:, 2])
                np.testing.assert_array_equal(data, cloud[rows][:, [0, 1, 2, 4, 7]])
                assert np.all(np.diff(data[:, 2]) > 0)
                if len(data) >= 5:  # Spyral's estimation splines (lam = smoothing_factor)
                    for col in (0, 1, 3):
                        scipy.interpolate.make_smoothing_spline(data[:, 2], data[:, col], lam=100.0)
                clusters += 1
        assert events == EVENTS
        assert clusters >= EVENTS  # at least one track per event of the reference mix


def test_estimates_where_the_solver_reads_them(workspace):
    directory, _ = workspace
    parquet = pq.read_table(directory / "ws" / "Estimation" / f"run_{RUN:04d}.parquet")
    assert [(field.name, str(field.type)) for field in parquet.schema] == PARQUET_COLUMNS
    rows = parquet.to_pydict()
    with h5py.File(directory / "out" / f"run_{RUN:04d}.h5", "r") as f:
        table = f["estimates"][...]
    assert len(rows["event"]) == len(table) >= EVENTS // 2
    for name, field, _ in spyral.ESTIMATION_COLUMNS:
        np.testing.assert_array_equal(rows[name], table[field], err_msg=name)
    assert rows["orig_run"] == [RUN] * len(table) and rows["orig_event"] == rows["event"]
    assert set(rows["direction"]) <= {0, 1}  # estimated tracks have a direction
    with h5py.File(directory / "ws" / "Cluster" / f"run_{RUN:04d}.h5", "r") as f:
        for event, cidx, label in zip(rows["event"], rows["cluster_index"], rows["cluster_label"]):
            assert f["cluster"][f"event_{event}"][f"cluster_{cidx}"].attrs["label"] == label


def test_parquet_is_rewritten_from_the_run_file_after_a_crash(workspace, tmp_path):
    directory, _ = workspace
    run_file = directory / "out" / f"run_{RUN:04d}.h5"
    cli = [sys.executable, "-m", "conduit_stages.hdf5_sink.spyral"]
    res = subprocess.run(cli + [str(run_file), str(tmp_path / "ws")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    again = tmp_path / "ws" / "Estimation" / f"run_{RUN:04d}.parquet"  # run number from the run file
    assert res.stdout.strip().startswith(f"wrote {again} (")
    assert pq.read_table(again).equals(pq.read_table(directory / "ws" / "Estimation" / again.name))
    # a file without an estimates table: one line naming it, exit 1
    bare = tmp_path / "bare.h5"
    h5py.File(bare, "w").close()
    res = subprocess.run(cli + [str(bare), str(tmp_path / "ws2")], capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip() == f"error: {bare}: no /estimates table (was the hdf5 sink's 'estimates' off?)"


def test_without_tie_jitter_every_tied_cloud_is_counted_and_named(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="conduit")
    record(tmp_path, events=6, pointcloud="tie_jitter = 0.0")
    point = tmp_path / "ws" / "Pointcloud" / f"run_{RUN:04d}.h5"
    with h5py.File(point, "r") as f:
        tied = [name for name, ds in f["cloud"].items() if np.any(np.diff(ds[:, 2]) == 0)]
    assert len(tied) == 6  # whole time buckets: every cloud of the mix has ties
    warnings = [r.getMessage() for r in caplog.records if "equal z" in r.getMessage()]
    first = min(int(name.split("_")[1]) for name in tied)
    assert warnings == [
        f"{point}: the cloud of event {first} has points with equal z, which Spyral's ClusterPhase fails on "
        "(more are counted, not logged)",
        f"{point}: 6 of 6 clouds have points with equal z; Spyral's ClusterPhase fails on them (set the "
        "pointcloud stage's tie_jitter > 0)",
    ]


def test_a_run_file_spyral_cannot_find_is_named_at_start(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="conduit")
    record(tmp_path, events=2, path="out/myrun.h5", hdf5="estimates = false")
    run_file = tmp_path / "out" / "myrun.h5"
    assert [r.getMessage() for r in caplog.records if "trace_path" in r.getMessage()] == [
        f"{run_file}: Spyral's Pipeline only processes a run when its trace_path holds run_{RUN:04d}.h5 "
        "(even to run later phases): name the hdf5 sink's path '.../run_{run:04d}.h5'"
    ]
    assert not (tmp_path / "ws" / "Estimation").exists()
    assert (tmp_path / "ws" / "Cluster" / f"run_{RUN:04d}.h5").exists()


def test_unconsolidated_workspace_reads_the_same(tmp_path):
    """Before consolidation (a crash, or consolidate = false) Spyral's reads resolve the external links."""
    record(tmp_path, events=5, hdf5="consolidate = false\nflush_interval = 0.001")
    point = tmp_path / "ws" / "Pointcloud" / f"run_{RUN:04d}.h5"
    assert (point.parent / (point.name + ".parts")).is_dir()
    script = textwrap.dedent("""
        import sys, h5py, numpy as np
        f = h5py.File(sys.argv[1], "r")
        g = f["cloud"]
        ids = [i for i in range(int(g.attrs["min_event"]), int(g.attrs["max_event"]) + 1) if f"cloud_{i}" in g]
        print(len(ids), all(bool(np.all(np.diff(g[f"cloud_{i}"][:, 2]) > 0)) for i in ids))
    """)
    res = subprocess.run([sys.executable, "-c", script, str(point)], cwd="/", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["5", "True"]


def test_without_pyarrow_the_run_stops_before_any_event(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if pyarrow were missing
    tmp_path.mkdir(exist_ok=True)
    pipe = tmp_path / "pipe.toml"
    pipe.write_text(pipeline_toml(3, 5, RUN))
    summary = run_pipeline(load_pipeline(pipe), handle_signals=False)
    assert summary.exit_code != 0
    assert "layout 'spyral' writes Estimation/*.parquet, which needs pyarrow" in summary.error
    assert "pip install 'attpc-conduit[spyral]', or set estimates = false" in summary.error
    assert not (tmp_path / "ws").exists()
