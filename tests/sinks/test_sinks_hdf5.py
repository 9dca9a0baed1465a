"""The hdf5 sink: exact merger 1.0 / Spyral layouts, estimates, crash safety, unwritable and full disks."""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conduit.artifacts import ESTIMATE_DTYPE
from conduit.config.pipeline import load_pipeline
from conduit.engine.runner import run_pipeline
from conduit.engine.summary import format_summary
from conduit.stage import StageContext, StopRun
from conduit_stages.hdf5_sink.journal import wait_for_writer
from conduit_stages.hdf5_sink.params import Hdf5Params
from conduit_stages.hdf5_sink.partfile import WriteError, consolidate, parts_dir_of
from conduit_stages.hdf5_sink.sink import Hdf5Sink

VENV_BIN = Path(sys.executable).parent

PIPE = """
[source]
kind = "sinkkit"
events = {events}
run = 3
frib = true
{source_extra}

[engine]
workers = 0

[[stage]]
use = "sinkkit.analyse"

[[stage]]
use = "histogram"

[[stage]]
use = "hdf5"
flush_interval = 0.001
{hdf5_extra}
"""


def run(write_pipeline, events=30, hdf5_extra="", source_extra=""):
    path = write_pipeline(PIPE.format(events=events, hdf5_extra=hdf5_extra, source_extra=source_extra))
    summary = run_pipeline(load_pipeline(path), handle_signals=False)
    return summary


CLOUD_ATTRS = {"orig_run", "orig_event", "ic_amplitude", "ic_integral", "ic_centroid", "ic_multiplicity"}


def check_pointcloud_layout(f: h5py.File, kit, ids) -> None:
    """Spyral's Pointcloud layout, exactly: group cloud, cloud_{event} float64 (N, 8), six attributes."""
    group = f["cloud"]
    assert set(group.attrs) == {"min_event", "max_event"}
    assert (group.attrs["min_event"], group.attrs["max_event"]) == (min(ids), max(ids))
    assert sorted(group) == sorted(f"cloud_{i}" for i in ids)
    for i in ids:
        ds = group[f"cloud_{i}"]
        assert isinstance(ds, h5py.Dataset) and ds.dtype == np.float64 and ds.ndim == 2 and ds.shape[1] == 8
        np.testing.assert_array_equal(ds[...], kit.make_event(i).artifacts["cloud"])
        assert set(ds.attrs) == CLOUD_ATTRS
        assert ds.attrs["orig_run"] == 3.0 and ds.attrs["orig_event"] == float(i)
        for key in ("ic_amplitude", "ic_integral", "ic_centroid", "ic_multiplicity"):
            assert ds.attrs[key] == -1.0 and ds.attrs[key].dtype == np.float64
        z = ds[:, 2]
        assert np.all(np.diff(z) >= 0)  # Spyral's cluster phase refuses clouds not sorted in z


def check_cluster_layout(f: h5py.File, kit, ids) -> None:
    group = f["cluster"]
    assert (group.attrs["min_event"], group.attrs["max_event"]) == (min(ids), max(ids))
    for i in ids:
        ev = kit.make_event(i)
        clusters, cloud = ev.artifacts["clusters"], ev.artifacts["cloud"]
        eg = group[f"event_{i}"]
        assert set(eg.attrs) == {"nclusters"} | CLOUD_ATTRS
        assert eg.attrs["nclusters"] == clusters.count == len(eg)
        for k in range(clusters.count):
            cg = eg[f"cluster_{k}"]
            assert cg.attrs["label"] == clusters.cluster_labels[k]
            assert cg.attrs["direction"] == clusters.directions[k]
            expected = cloud[clusters.labels == clusters.cluster_labels[k]][:, [0, 1, 2, 4, 7]]
            assert cg["cloud"].dtype == np.float64 and cg["cloud"].shape == (len(expected), 5)
            np.testing.assert_array_equal(cg["cloud"][...], expected)


def check_traces(f: h5py.File, kit, ids) -> None:
    events = f["events"]
    assert events.attrs["version"] == "libattpc_merger:1.0"
    assert (events.attrs["min_event"], events.attrs["max_event"]) == (min(ids), max(ids))
    assert events.attrs["min_event"].dtype == np.uint64
    for i in ids:
        ds = events[f"event_{i}"]["get_traces"]
        assert ds.dtype == np.int16 and ds.shape[1] == 517
        np.testing.assert_array_equal(ds[...], kit.make_traces(i))
        assert ds.attrs["id"] == i
        assert ds.attrs["timestamp"] == 1_000_000 + 12_345 * i
        assert ds.attrs["timestamp_other"] == 2 * (1_000_000 + 12_345 * i)
        frib = events[f"event_{i}"]["frib_physics"]
        assert frib["977"][0] == i % 4 and frib["1903"].shape == (64, 8)


def test_file_layout_round_trip(sinkkit, write_pipeline, tmp_path, caplog):
    import logging

    import conduit_sinkkit as kit

    caplog.set_level(logging.INFO, logger="conduit")
    summary = run(write_pipeline, events=30)
    assert summary.exit_code == 0, summary.error
    out = tmp_path / "out" / "run_0003.h5"
    assert summary.outputs == [str(out)]
    assert f"recorded {out} (30 events, 30 cloud, 30 cluster, 60 estimate rows)" in caplog.text
    assert not parts_dir_of(out).exists()  # consolidated
    with h5py.File(out, "r") as f:
        ids = list(range(30))
        check_traces(f, kit, ids)
        check_pointcloud_layout(f, kit, ids)
        check_cluster_layout(f, kit, ids)
        # Self-contained: no external links remain.
        assert isinstance(f["cloud"].get("cloud_3", getlink=True), h5py.HardLink)
        table = f["estimates"][...]
        expected = np.concatenate([kit.make_event(i).artifacts["estimates"] for i in ids])
        assert len(table) == 60
        for name in ESTIMATE_DTYPE.names:
            np.testing.assert_array_equal(table[name], expected[name])
        assert (table["run"] == 3).all() and (table["ic_amplitude"] == -1.0).all()
        assert f["histograms/pid"].attrs["entries"] == 60
        assert f.attrs["events_flushed"] == 30


def test_unconsolidated_file_reads_the_same_through_links(sinkkit, write_pipeline, tmp_path):
    import conduit_sinkkit as kit

    summary = run(write_pipeline, events=12, hdf5_extra="consolidate = false")
    assert summary.exit_code == 0, summary.error
    out = tmp_path / "out" / "run_0003.h5"
    parts = sorted(p.name for p in parts_dir_of(out).iterdir())
    # The part files, and the store holding the large datasets' bytes (not marked complete: not consolidated).
    assert parts[-1] == "store.h5" and len(parts) >= 3
    assert all(p.startswith("part_") and p.endswith(".h5") for p in parts[:-1])
    # Read from another working directory: links resolve relative to the master file.
    script = ("import h5py, sys; f = h5py.File(sys.argv[1], 'r'); "
              "print(len(f['events']), f['cloud']['cloud_11'].shape, f['events']['event_5']['get_traces'].shape)")
    res = subprocess.run([sys.executable, "-c", script, str(out)], cwd="/", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == "12"
    with h5py.File(out, "r") as f:
        assert isinstance(f["cloud"].get("cloud_3", getlink=True), h5py.ExternalLink)
        check_pointcloud_layout(f, kit, range(12))
        check_traces(f, kit, range(12))
    assert consolidate(out) == 12 * 3  # events (groups), clouds, cluster event groups
    assert not parts_dir_of(out).exists()
    with h5py.File(out, "r") as f:
        check_cluster_layout(f, kit, range(12))
        assert isinstance(f["events"].get("event_3", getlink=True), h5py.HardLink)


def test_spyral_workspace_layout(sinkkit, write_pipeline, tmp_path):
    import conduit_sinkkit as kit

    summary = run(write_pipeline, events=9, hdf5_extra='layout = "spyral"\nworkspace = "ws"')
    assert summary.exit_code == 0, summary.error
    point = tmp_path / "ws" / "Pointcloud" / "run_0003.h5"
    cluster = tmp_path / "ws" / "Cluster" / "run_0003.h5"
    parquet = tmp_path / "ws" / "Estimation" / "run_0003.parquet"
    assert summary.outputs == [str(tmp_path / "out" / "run_0003.h5"), str(point), str(cluster), str(parquet)]
    with h5py.File(point, "r") as f:
        assert set(f) == {"cloud"}
        check_pointcloud_layout(f, kit, range(9))
    with h5py.File(cluster, "r") as f:
        assert set(f) == {"cluster"}
        check_cluster_layout(f, kit, range(9))
    with h5py.File(tmp_path / "out" / "run_0003.h5", "r") as f:
        assert set(f) == {"events", "estimates", "histograms"}
        check_traces(f, kit, range(9))
    import pyarrow.parquet as pq

    table = pq.read_table(parquet).to_pydict()
    expected = np.concatenate([kit.make_event(i).artifacts["estimates"] for i in range(9)])
    assert table["event"] == expected["event"].tolist()
    np.testing.assert_allclose(table["brho"], expected["brho"])
    assert table["orig_run"] == [3] * len(expected)
    assert {"vertex_x", "center_z", "polar", "azimuthal", "sqrt_dEdx", "direction", "ic_multiplicity"} <= set(table)


def test_skipped_events_keep_their_traces(sinkkit, write_pipeline, tmp_path):
    """A live run that falls behind: every event recorded, clouds only for the analysed ones."""
    path = write_pipeline("""
        [source]
        kind = "sinkkit_live"
        events = 200
        rate = 2000

        [engine]
        workers = 0
        max_in_flight = 1

        [[stage]]
        use = "sinkkit.analyse"

        [[stage]]
        use = "hdf5"
        flush_interval = 0.05
        histograms = false
        """)
    summary = run_pipeline(load_pipeline(path), handle_signals=False)
    assert summary.exit_code == 0, summary.error
    with h5py.File(tmp_path / "out" / "run_0003.h5", "r") as f:
        assert len(f["events"]) == summary.received - summary.dropped
        assert len(f["cloud"]) == summary.analysed
        assert f["estimates"].shape[0] == sum(1 + int(n.split("_")[1]) % 3 for n in f["cloud"])


def test_unwritable_output_is_one_clear_line(sinkkit, write_pipeline, tmp_path):
    (tmp_path / "out").write_text("a file where the output directory should be")
    summary = run(write_pipeline, events=5)
    assert summary.exit_code == 1
    assert summary.error.count("\n") == 0
    assert f"cannot write {tmp_path / 'out' / 'run_0003.h5'}" in summary.error
    assert "sink hdf5: cannot open" in summary.error and summary.received == 0


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return res.returncode == 0


FULL = """
[source]
kind = "sinkkit"
events = 40
rate = 100
big_after = 12

[engine]
workers = 0

[[stage]]
use = "sinkkit.analyse"

[[stage]]
use = "hdf5"
path = "{path}"
flush_interval = 0.02
histograms = false
"""


def _check_kept(out: Path, min_events: int) -> int:
    with h5py.File(out, "r") as f:
        n = len(f["events"])
        for name in f["events"]:
            f["events"][name]["get_traces"][...]
        assert sorted(int(k.split("_")[1]) for k in f["events"]) == list(range(n))
    assert n >= min_events
    return n


def test_full_disk_stops_cleanly_and_keeps_flushed_events(sinkkit, write_pipeline, tmp_path, caplog):
    """A 2 MB tmpfs (loop-free, needs root); else RLIMIT_FSIZE on a subprocess (see the fallback below)."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "2m"):
        pytest.skip("cannot mount a tmpfs here; test_file_size_limit_stops_cleanly covers the error path")
    try:
        out = mnt / "run.h5"
        summary = run_pipeline(load_pipeline(write_pipeline(FULL.format(path=out))), handle_signals=False)
        assert summary.exit_code == 1
        assert summary.error.count("\n") == 0
        assert "no space left on device" in summary.error and str(mnt) in summary.error
        assert "every event flushed before is kept" in summary.error
        assert summary.received < 40  # the run stopped early
        kept = _check_kept(out, min_events=12)  # every small event came first and fits; the first big one not
        assert kept == 12
        reported = [r.getMessage() for r in caplog.records if "flushed events (file + parts)" in r.getMessage()]
        assert len(reported) == 1 and f"kept {kept} flushed events" in reported[0]
        # Every event received and not in the file is counted: the batch lost in the failed write, and
        # the events the engine no longer passed to the stopped sink.
        lost, dropped = summary.sink_lost["hdf5"], summary.sink_dropped.get("hdf5", 0)
        assert lost >= 1 and lost + dropped == summary.received - kept == summary.not_written("hdf5")
        why = f"{lost} lost in a failed write" + (f"; {dropped} not passed to it: sink behind or stopped"
                                                  if dropped else "")
        assert f"sink hdf5: {summary.received - kept} events not written ({why})" in format_summary(summary)
        assert parts_dir_of(out).exists()  # not consolidated: the disk is full
        assert not list(mnt.rglob("*.tmp"))  # half-written temporaries were removed
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_keeps_every_event_written_before_the_failing_one(sinkkit, write_pipeline, tmp_path, caplog):
    """A writer that commits late (here never before the disk is full: flush_interval 3600 s; in a suite, one
    that started late and got the small events and the first big one in one batch) keeps every event written
    whole before the one whose write failed: until w26b the whole batch was lost (kept 0 events)."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "2m"):
        pytest.skip("cannot mount a tmpfs here; test_a_full_file_system_gives_one_line_with_direct_writes covers it")
    try:
        out = mnt / "run.h5"
        pipe = FULL.format(path=out).replace("flush_interval = 0.02", "flush_interval = 3600")
        summary = run_pipeline(load_pipeline(write_pipeline(pipe)), handle_signals=False)
        # The failed write is told at the batch's commit time (here: the end), as before; its lost events fail
        # the run.
        assert summary.exit_code == 1 and summary.error == "sink hdf5: 28 events it took were lost in a failed write"
        assert any("no space left on device" in r.getMessage() for r in caplog.records)
        assert _check_kept(out, min_events=12) == 12  # events 0-11 (small); event 12 (2 MB) does not fit
        assert [r.getMessage() for r in caplog.records if "flushed events (file + parts)" in r.getMessage()
                ][0].startswith(f"{out}: kept 12 flushed events")
        assert summary.received == 40 and summary.not_written("hdf5") == 28
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("write_thread", [False, True], ids=["one-thread", "write-thread"])
def test_full_disk_in_one_batch_counts_exactly(sinkkit, tmp_path, write_thread):
    """The sink fed directly: 12 small events and 2 big ones in one batch on a 2 MB disk: 12 committed, the
    2 others counted as not written, whichever thread's write fails."""
    import conduit_sinkkit as kit

    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "2m"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        sink = Hdf5Sink(Hdf5Params(path="run.h5", histograms=False, flush_interval=3600, write_thread=write_thread),
                        StageContext(run=3, base_dir=mnt))
        sink.open()
        sink.begin()
        events = [kit.make_event(i) for i in range(12)]
        events += [dataclasses.replace(kit.make_event(i), traces=kit.make_traces(i, rows=2000)) for i in (12, 13)]
        with pytest.raises((StopRun, WriteError), match="no space left on device"):
            for event in events:
                sink.consume(event)
            sink.flush()
        sink.close()
        assert (sink.received, sink.flushed_events, sink.unwritten()) == (14, 12, 2)
        assert _check_kept(mnt / "run.h5", min_events=12) == 12
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_file_size_limit_stops_cleanly(sinkkit, write_pipeline, tmp_path):
    """RLIMIT_FSIZE (no mount needed): a part file larger than 1 MB fails with EFBIG."""
    out = tmp_path / "lim" / "run.h5"
    pipe = write_pipeline(FULL.format(path=out))

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    res = subprocess.run([str(VENV_BIN / "conduit"), "run", str(pipe)], capture_output=True, text=True,
                         preexec_fn=limit, timeout=120)
    assert res.returncode == 1, res.stderr
    error_lines = [ln for ln in res.stdout.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and "file too large" in error_lines[0] and str(out.parent) in error_lines[0]
    kept = _check_kept(out, min_events=6)
    assert f"kept {kept} flushed events" in res.stderr
    received = int(next(ln for ln in res.stdout.splitlines() if ln.startswith("events received")).split()[-1])
    not_written = [ln for ln in res.stdout.splitlines() if ln.startswith("sink hdf5: ")]
    assert len(not_written) == 1 and not_written[0].startswith(f"sink hdf5: {received - kept} events not written (")


def test_sigkill_leaves_a_readable_file_with_every_flushed_event(sinkkit, write_pipeline, tmp_path):
    pipe = write_pipeline("""
        [source]
        kind = "sinkkit"
        events = 0
        rate = 200
        frib = true

        [engine]
        workers = 0

        [[stage]]
        use = "sinkkit.analyse"

        [[stage]]
        use = "hdf5"
        flush_interval = 0.1
        """)
    proc = subprocess.Popen([str(VENV_BIN / "conduit"), "run", "-v", str(pipe)], stderr=subprocess.PIPE, text=True)
    flushed = 0
    deadline = time.monotonic() + 60
    try:
        for line in proc.stderr:  # "DEBUG conduit.stage.hdf5: flushed N events to ... (T events flushed in total)"
            if "events flushed in total" in line:
                flushed = int(line.rsplit("(", 1)[1].split()[0])
                if flushed >= 60:
                    break
            assert time.monotonic() < deadline, "no flushes reported"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    import conduit_sinkkit as kit

    out = tmp_path / "out" / "run_0003.h5"
    # The killed run's writer process finishes the recording (commits what it holds, consolidates) and then
    # releases the recording's writer.lock; a reader that cannot wait may open the file and find it incomplete.
    wait_for_writer(out, timeout=120)
    with h5py.File(out, "r") as f:
        n = len(f["events"])
        assert n >= flushed >= 60
        ids = list(range(n))
        check_traces(f, kit, ids)
        check_pointcloud_layout(f, kit, ids)
        assert f["estimates"].shape[0] == sum(1 + i % 3 for i in ids)
        assert f.attrs["events_flushed"] == n
    # The consolidation tool turns it into one file with the same content.
    res = subprocess.run([sys.executable, "-m", "conduit_stages.hdf5_sink.consolidate", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with h5py.File(out, "r") as f:
        check_cluster_layout(f, kit, list(range(n)))


@pytest.mark.parametrize("consolidated", [True, False])
def test_traces_round_trip_through_the_hdf5_source(sinkkit, write_pipeline, tmp_path, consolidated):
    """Written by the hdf5 sink, read back by conduit's own hdf5 source: identical events."""
    import conduit_sinkkit as kit

    path = write_pipeline(f"""
        [source]
        kind = "sinkkit"
        events = 25
        first = 100
        run = 7
        frib = true

        [engine]
        workers = 0

        [[stage]]
        use = "hdf5"
        path = "rec/run_{{run:04d}}.h5"
        flush_interval = 0.001
        consolidate = {str(consolidated).lower()}
        cloud = false
        clusters = false
        estimates = false
        histograms = false
        """, name="record.toml")
    summary = run_pipeline(load_pipeline(path), handle_signals=False)
    assert summary.exit_code == 0, summary.error
    recorded = tmp_path / "rec" / "run_0007.h5"
    assert parts_dir_of(recorded).exists() != consolidated

    replay = write_pipeline(f"""
        [source]
        kind = "hdf5"
        path = "{recorded}"

        [engine]
        workers = 0
        """, name="replay.toml")
    seen = []
    summary = run_pipeline(load_pipeline(replay), handle_signals=False, on_event=seen.append)
    assert summary.exit_code == 0, summary.error
    assert summary.source_counters["events"] == 25 and summary.source_counters["bad_events"] == 0
    assert [e.id for e in seen] == list(range(100, 125))
    for event in seen:
        original = kit.make_event(event.id, run=7)
        np.testing.assert_array_equal(event.traces, original.traces)
        assert event.traces.dtype == np.int16
        assert (event.timestamp, event.timestamp_other) == (original.timestamp, original.timestamp_other)
        assert event.run == 7
        frib = event.artifacts["frib"]
        assert frib["977"].tolist() == [event.id % 4]
        np.testing.assert_array_equal(frib["1903"], np.arange(512, dtype=np.uint16).reshape(64, 8) + event.id)


def test_estimate_rows_by_bytes_equal_rows_by_fields():
    """recorder.table_rows copies an estimate's bytes (the fast path) or assigns field by field (an estimate
    array that is not contiguous): the same rows, whatever the run, ion chamber and id."""
    from conduit.event import Event
    from conduit_stages.hdf5_sink.recorder import TABLE_DTYPE, table_rows

    rng = np.random.default_rng(5)
    for n, run, ic, event_id in ((1, 3, None, 7), (3, None, {"amplitude": 5.5, "multiplicity": 2}, 2**40 + 1),
                                 (7, 12, {"integral": 1e4, "centroid": 33.0}, 0)):
        est = np.zeros(n, ESTIMATE_DTYPE)
        for name in ESTIMATE_DTYPE.names:
            est[name] = (rng.normal(size=n) * 1000).astype(ESTIMATE_DTYPE[name])
        strided = np.zeros(2 * n, ESTIMATE_DTYPE)[::2]
        strided[...] = est
        artifacts = {} if ic is None else {"ion_chamber": ic}
        fast, slow = (table_rows(Event(id=event_id, traces=np.zeros((1, 517), np.int16), run=run,
                                       artifacts={"estimates": e, **artifacts})) for e in (est, strided))
        assert fast.dtype == slow.dtype == TABLE_DTYPE and fast.tobytes() == slow.tobytes()
        assert (fast["event"] == event_id).all() and (fast["run"] == (run if run is not None else -1)).all()
        assert (fast["vertex_x"] == est["vertex_x"]).all()
        assert fast["ic_amplitude"][0] == (ic or {}).get("amplitude", -1.0)
