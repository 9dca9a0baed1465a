"""The hdf5 sink's writer process: same objects as before, nothing lost when it dies, waits when lossless;
its direct I/O (rawio): large datasets written to the disk, not through the page cache.

Real writer processes, real shared memory, real SIGKILL/SIGSTOP, real HDF5 files compared object by object.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conduit.config.pipeline import load_pipeline
from conduit.engine.runner import run_pipeline
from conduit.stage import StageContext, StopRun
from conduit_stages.hdf5_sink import h5direct, layout, rawio, writer
from conduit_stages.hdf5_sink.params import Hdf5Params
from conduit_stages.hdf5_sink.partfile import consolidate, parts_dir_of
from conduit_stages.hdf5_sink.sink import Hdf5Sink
from conduit_stages.hdf5_sink.store import STORE_NAME


def describe(obj, path: str = "/") -> dict[str, tuple]:
    """Every object under ``obj`` (links followed): its kind, and for datasets dtype, shape, layout, filters and
    values; for every object its attributes with their dtypes. An h5diff that also compares types."""
    out: dict[str, tuple] = {}
    attrs = tuple(sorted((k, v.dtype.str if hasattr(v, "dtype") else type(v).__name__, np.asarray(v).tolist())
                         for k, v in obj.attrs.items()))
    if isinstance(obj, h5py.Dataset):
        plist = obj.id.get_create_plist()
        out[path] = ("dataset", obj.dtype.str, obj.shape, plist.get_layout(), plist.get_nfilters(),
                     obj.compression, obj[...].tobytes(), attrs)
        return out
    out[path] = ("group", attrs)
    for name in obj:
        out.update(describe(obj[name], f"{path.rstrip('/')}/{name}"))
    return out


def varied_events(kit) -> list:
    """Events that exercise every branch of the attribute types: ids beyond 32 bits, incomplete, no run,
    an ion chamber, no traces, FRIB data, a cloud with ties."""
    events = [kit.make_event(i) for i in range(6)]
    events[1] = dataclasses.replace(events[1], complete=False, timestamp=2**40 + 7, timestamp_other=5)
    events[2] = dataclasses.replace(events[2], id=2**33 + 2, run=None)
    events[3].artifacts["ion_chamber"] = {"amplitude": 812.5, "integral": 4.0e4, "centroid": 101.25,
                                          "multiplicity": 1}
    events[4] = dataclasses.replace(events[4], traces=np.zeros((0, 517), np.int16))
    events[5].artifacts["frib"] = {"977": np.arange(12, dtype=np.uint16), "scaler": 3}
    return events


def test_direct_calls_make_the_same_objects_as_h5py(sinkkit, tmp_path):
    """h5direct (the writer's path) against layout's h5py path on the same events: every object, type, value."""
    import conduit_sinkkit as kit

    assert h5direct.available()
    events = varied_events(kit)
    files = {}
    for label, module in (("h5py", layout), ("direct", h5direct)):
        path = tmp_path / f"{label}.h5"
        with h5py.File(path, "w") as f:
            ev_g, cl_g = f.create_group("events"), f.create_group("cloud")
            for ev in events:
                module.write_traces(ev_g, ev, layout.event_name(ev.id))
                module.write_cloud(cl_g, ev, layout.cloud_name(ev.id))
        with h5py.File(path, "r") as f:
            files[label] = describe(f)
    assert len(files["h5py"]) == 1 + 2 + 2 * 6 + 6 + 2  # root, 2 groups, event groups + traces, clouds, frib
    assert files["direct"] == files["h5py"]


def record(tmp_path: Path, events, **params):
    """Record ``events`` with the hdf5 sink; the sink (closed)."""
    sink = Hdf5Sink(Hdf5Params(path="run.h5", histograms=False, **params), StageContext(run=3, base_dir=tmp_path))
    sink.open()
    sink.begin()
    for ev in events:
        sink.consume(ev)
    sink.close()
    return sink


def reference_file(path: Path, events) -> None:
    """The event objects as the sink wrote them before the writer process: layout's h5py writers, in one file."""
    with h5py.File(path, "w") as f:
        groups = {kind: f.create_group(kind) for kind in (layout.EVENTS, layout.CLOUD, layout.CLUSTER)}
        for ev in events:
            layout.write_traces(groups[layout.EVENTS], ev, layout.event_name(ev.id))
            layout.write_cloud(groups[layout.CLOUD], ev, layout.cloud_name(ev.id))
            layout.write_clusters(groups[layout.CLUSTER], ev, layout.event_name(ev.id))


def event_objects(path: Path) -> dict[str, tuple]:
    with h5py.File(path, "r") as f:
        return {k: v for kind in (layout.EVENTS, layout.CLOUD, layout.CLUSTER)
                for k, v in describe(f[kind], f"/{kind}").items() if k != f"/{kind}"}


@pytest.mark.parametrize("ring", [True, False], ids=["shared-memory", "socket"])
def test_recording_holds_the_same_objects_as_before(sinkkit, tmp_path, monkeypatch, caplog, ring):
    """Whole recordings (consolidated, and file + parts) against the pre-writer-process objects, with and without
    the shared-memory ring (events then go through the socket; said once)."""
    import conduit_sinkkit as kit

    if not ring:
        monkeypatch.setattr(writer, "_RING_DIR", tmp_path / "no-such-dir")
    events = varied_events(kit) + [kit.make_event(i) for i in range(6, 40)]
    reference_file(tmp_path / "reference.h5", events)
    expected = event_objects(tmp_path / "reference.h5")
    assert len(expected) == 2 * 40 + 40 + 40 + sum(ev.get("clusters").count for ev in events) * 2 + 2
    for consolidated in (True, False):
        d = tmp_path / f"c{int(consolidated)}"
        d.mkdir()
        with caplog.at_level(logging.WARNING):
            sink = record(d, events, flush_interval=0.001, consolidate=consolidated)
        assert sink.flushed_events == 40 and sink.unwritten() == 0
        assert (parts_dir_of(d / "run.h5").exists()) == (not consolidated)
        assert event_objects(d / "run.h5") == expected
        with h5py.File(d / "run.h5", "r") as f:
            assert f.attrs["events_flushed"] == 40
            assert f["events"].attrs["min_event"] == 0 and f["events"].attrs["max_event"] == 2**33 + 2
            assert f["estimates"].shape == (sum(len(ev.get("estimates")) for ev in events),)
    no_ring = [r for r in caplog.records if "no shared memory for the hdf5 writer" in r.getMessage()]
    assert len(no_ring) == (0 if ring else 2)  # once per recording


def test_an_event_larger_than_a_slot_goes_through_the_socket(sinkkit, tmp_path):
    import conduit_sinkkit as kit

    big = kit.make_event(1)
    big = dataclasses.replace(big, traces=np.arange(writer.SLOT_BYTES // 1034 * 517 + 517 * 3,
                                                    dtype=np.int16).reshape(-1, 517))
    assert big.traces.nbytes > writer.SLOT_BYTES
    events = [kit.make_event(0), big, kit.make_event(2)]
    reference_file(tmp_path / "reference.h5", events)
    record(tmp_path, events, flush_interval=3600)
    assert event_objects(tmp_path / "run.h5") == event_objects(tmp_path / "reference.h5")


def open_sink(tmp_path: Path, **params) -> Hdf5Sink:
    sink = Hdf5Sink(Hdf5Params(path="run.h5", histograms=False, **params), StageContext(run=3, base_dir=tmp_path))
    sink.open()
    sink.begin()
    return sink


def ids_in(path: Path) -> list[int]:
    with h5py.File(path, "r") as f:
        for name in f["events"]:
            f["events"][name]["get_traces"][...]  # every link resolves
        return sorted(int(name.split("_")[1]) for name in f["events"])


def test_a_killed_writer_stops_the_run_in_one_line_and_loses_nothing_silently(sinkkit, tmp_path, caplog):
    import conduit_sinkkit as kit

    sink = open_sink(tmp_path, flush_interval=3600)
    for i in range(10):
        sink.consume(kit.make_event(i))
    sink.flush()  # 10 committed
    for i in range(10, 17):
        sink.consume(kit.make_event(i))  # 7 handed over, not committed
    pid = sink.writer.pid
    os.kill(pid, signal.SIGKILL)
    with caplog.at_level(logging.ERROR):
        with pytest.raises(StopRun) as stopped:
            for i in range(17, 10_000):  # the next consume that notices
                sink.consume(kit.make_event(i))
                time.sleep(0.01)
    message = str(stopped.value)
    assert "\n" not in message
    handed = sink.received - 1  # the event that noticed the death was not handed over
    assert message == (f"the hdf5 writer process (pid {pid}) died (killed by SIGKILL): {handed - 10} events handed "
                       f"to it since its last commit are not written; every event committed before is kept in "
                       f"{tmp_path / 'run.h5'}")
    sink.close()
    assert sink.flushed_events == 10 and sink.unwritten() == sink.received - 10
    assert ids_in(tmp_path / "run.h5") == list(range(10))  # readable: master + parts, as after any kill
    kept = [r.getMessage() for r in caplog.records if "kept 10 flushed events (file + parts)" in r.getMessage()]
    assert len(kept) == 1
    assert consolidate(tmp_path / "run.h5") == 30  # traces, cloud, clusters of each of the 10 events
    assert ids_in(tmp_path / "run.h5") == list(range(10))


def test_a_writer_killed_while_idle_is_found_at_close(sinkkit, tmp_path):
    import conduit_sinkkit as kit

    sink = open_sink(tmp_path, flush_interval=3600)
    for i in range(4):
        sink.consume(kit.make_event(i))
    os.kill(sink.writer.pid, signal.SIGKILL)
    sink.writer.proc.wait()
    sink.close()
    assert sink.error.startswith(f"the hdf5 writer process (pid {sink.writer.pid}) died (killed by SIGKILL): "
                                 f"4 events handed to it since its last commit are not written")
    assert sink.unwritten() == 4 and sink.flushed_events == 0
    assert ids_in(tmp_path / "run.h5") == []


def test_lossless_waits_for_a_stalled_writer_and_records_every_event(sinkkit, tmp_path):
    import conduit_sinkkit as kit

    sink = open_sink(tmp_path, flush_interval=0.01)
    os.kill(sink.writer.pid, signal.SIGSTOP)  # the writer stalls (a slow disk)
    try:
        for i in range(writer.RING_SLOTS):
            sink.consume(kit.make_event(i))  # fill every slot
        assert not sink.writer.has_room()
        blocked = threading.Thread(target=sink.consume, args=(kit.make_event(writer.RING_SLOTS),))
        blocked.start()
        blocked.join(0.5)
        assert blocked.is_alive()  # waiting, not dropping
    finally:
        os.kill(sink.writer.pid, signal.SIGCONT)
    blocked.join(60)
    assert not blocked.is_alive()
    for i in range(writer.RING_SLOTS + 1, 3 * writer.RING_SLOTS):
        sink.consume(kit.make_event(i))
    sink.close()
    n = 3 * writer.RING_SLOTS
    assert sink.received == sink.flushed_events == n and sink.unwritten() == 0 and sink.dropped_full == 0
    assert ids_in(tmp_path / "run.h5") == list(range(n))


def test_lossy_drops_while_the_writer_is_stalled_and_counts_them(sinkkit, tmp_path, caplog):
    import conduit_sinkkit as kit

    sink = open_sink(tmp_path, flush_interval=0.01, lossless=False)
    assert not sink.is_lossless()
    os.kill(sink.writer.pid, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(writer.RING_SLOTS + 5):
                sink.consume(kit.make_event(i))
    finally:
        os.kill(sink.writer.pid, signal.SIGCONT)
    for i in range(writer.RING_SLOTS + 5, writer.RING_SLOTS + 8):
        sink.writer.wait_for_room()  # the writer caught up: nothing more is dropped
        sink.consume(kit.make_event(i))
    with caplog.at_level(logging.WARNING):
        sink.close()
    assert sink.dropped_full == 5 and sink.unwritten() == 5
    assert sink.flushed_events == writer.RING_SLOTS + 3
    assert ids_in(tmp_path / "run.h5") == list(range(writer.RING_SLOTS)) + list(
        range(writer.RING_SLOTS + 5, writer.RING_SLOTS + 8))
    said = [r.getMessage() for r in caplog.records if "hdf5 writer is behind" in r.getMessage()]
    assert len(said) == 1  # once, not per event
    total = [r.getMessage() for r in caplog.records if "5 events dropped while the hdf5 writer was behind" in
             r.getMessage()]
    assert len(total) == 1


def test_the_writer_ends_with_the_sink_and_leaves_no_shared_memory(sinkkit, tmp_path):
    import conduit_sinkkit as kit

    before = set(os.listdir("/dev/shm"))
    sink = open_sink(tmp_path)
    proc = sink.writer.proc
    assert sink.writer.ring is not None
    assert set(os.listdir("/dev/shm")) == before  # the ring's name is gone as soon as both processes map it
    sink.consume(kit.make_event(0))
    sink.close()
    assert proc.returncode == 0  # joined: it exited on its own after the last commit
    assert ids_in(tmp_path / "run.h5") == [0]
    # A sink that never began: the writer is ended, nothing is written.
    sink = Hdf5Sink(Hdf5Params(path="other.h5", histograms=False), StageContext(run=3, base_dir=tmp_path))
    sink.open()
    proc = sink.writer.proc
    sink.close()
    assert proc.returncode is not None
    assert not (tmp_path / "other.h5").exists()


def _writer_of(pid: int) -> int:
    """The pid of the hdf5 writer process started by process ``pid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"child_main" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no writer process under {pid}")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # exited (a zombie until its new parent reaps it)


def test_when_conduit_run_is_killed_its_writer_finishes_the_recording(sinkkit, write_pipeline, tmp_path):
    """(Until w25a the writer exited without publishing anything more; it now finishes the recording: every event
    it holds committed, the store consolidated into the file, its writer.lock released when done.)"""
    import subprocess
    import sys

    import conduit_sinkkit as kit

    pipe = write_pipeline("""
        [source]
        kind = "sinkkit"
        events = 0
        rate = 200

        [engine]
        workers = 0

        [[stage]]
        use = "sinkkit.analyse"

        [[stage]]
        use = "hdf5"
        flush_interval = 0.1
        """)
    conduit = Path(sys.executable).parent / "conduit"
    proc = subprocess.Popen([str(conduit), "run", "-v", str(pipe)], stderr=subprocess.PIPE, text=True)
    flushed = 0
    try:
        for line in proc.stderr:  # "DEBUG conduit.stage.hdf5: flushed N events to ... (T events flushed in total)"
            if "events flushed in total" in line:
                flushed = int(line.rsplit("(", 1)[1].split()[0])
                if flushed >= 20:
                    break
        writer_pid = _writer_of(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    out = tmp_path / "out" / "run_0003.h5"
    deadline = time.monotonic() + 120  # a liveness bound, not a speed figure
    while not _gone(writer_pid):
        assert time.monotonic() < deadline, f"the writer {writer_pid} did not finish its recording"
        time.sleep(0.05)
    ids = ids_in(out)
    n = len(ids)
    assert n >= flushed >= 20 and ids == list(range(n))
    assert not parts_dir_of(out).exists()  # consolidated by the writer: one self-contained file
    with h5py.File(out, "r") as f:
        assert f.attrs["events_flushed"] == n
        assert isinstance(f["events"].get("event_0", getlink=True), h5py.HardLink)
        assert sorted(f["cluster"]) == sorted(f"event_{i}" for i in ids)
        for i in (0, n // 2, n - 1):
            np.testing.assert_array_equal(f[f"events/event_{i}/get_traces"][...], kit.make_traces(i))
            np.testing.assert_array_equal(f[f"cloud/cloud_{i}"][...], kit.make_event(i).artifacts["cloud"])
    assert consolidate(out) == 0  # nothing left to do


# -- direct I/O of large datasets (rawio) ----------------------------------------------------------

ROWS = 700  # traces of an online event: 700 x 517 int16 = 724 KB, above rawio.THRESHOLD


def big_events(kit, n: int, rows: int = ROWS) -> list:
    """The kit's events with ``rows`` traces of varied values (and a row count that is not a block multiple)."""
    out = []
    for i in range(n):
        ev = kit.make_event(i)
        traces = (np.arange((rows + i) * 517, dtype=np.int64) * (i + 7) % 4001 - 2000).astype(np.int16)
        out.append(dataclasses.replace(ev, traces=traces.reshape(rows + i, 517)))
    return out


def trace_offsets(path: Path) -> list[int]:
    """Offsets in the store of every trace dataset of the part files of the recording at ``path``.

    A part's trace datasets are external storage of the bytes in the store (one range each).
    """
    offsets = []
    store = str((parts_dir_of(path) / STORE_NAME).resolve())
    for part in sorted(parts_dir_of(path).glob("part_*.h5")):
        with h5py.File(part, "r") as f:
            for name in f["events"]:
                (where, offset, size), = f["events"][name]["get_traces"].external
                assert where == store and size == f["events"][name]["get_traces"].nbytes
                offsets.append(offset)
    return offsets


def test_raw_writer_writes_whole_blocks_directly_and_the_tail_buffered(tmp_path):
    """Aligned source, unaligned source (copied to a page-aligned buffer), and a tail shorter than a block."""
    path = tmp_path / "raw.bin"
    path.write_bytes(b"")
    raw = rawio.RawWriter(path)
    aligned = np.frombuffer(__import__("mmap").mmap(-1, 3 * rawio.BLOCK), np.uint8)  # page-aligned memory
    aligned[:] = np.arange(aligned.size) % 251
    unaligned = (np.arange(2 * rawio.BLOCK + 1000, dtype=np.int64) % 253).astype(np.uint8)[1:]  # odd address
    assert unaligned.ctypes.data % rawio.BLOCK
    raw.write(aligned, 0)
    raw.write(unaligned, 5 * rawio.BLOCK)
    direct = raw.direct
    raw.close()
    data = path.read_bytes()
    assert len(data) == 5 * rawio.BLOCK + unaligned.size
    assert data[:aligned.size] == aligned.tobytes()
    assert data[aligned.size:5 * rawio.BLOCK] == bytes(2 * rawio.BLOCK)  # the hole between them
    assert data[5 * rawio.BLOCK:] == unaligned.tobytes()
    if direct:  # the file system took O_DIRECT: whole blocks direct, the tail (999 bytes) buffered
        assert (raw.direct_bytes, raw.buffered_bytes) == (3 * rawio.BLOCK + 2 * rawio.BLOCK, unaligned.size % 4096)
    else:
        assert raw.buffered_bytes == aligned.size + unaligned.size


def test_direct_datasets_are_the_same_objects_as_h5py_writes(sinkkit, tmp_path):
    """h5direct with a raw writer (the writer's path) against layout's h5py path: every object, type, value."""
    import conduit_sinkkit as kit

    events = big_events(kit, 5)
    files = {}
    for label in ("h5py", "direct"):
        path = tmp_path / f"{label}.h5"
        with h5py.File(path, "w", **(rawio.file_alignment() if label == "direct" else {})) as f:
            raw = rawio.RawWriter(path) if label == "direct" else None
            ev_g, cl_g = f.create_group("events"), f.create_group("cloud")
            for ev in events:
                if raw is None:
                    layout.write_traces(ev_g, ev, layout.event_name(ev.id))
                    layout.write_cloud(cl_g, ev, layout.cloud_name(ev.id))
                else:
                    h5direct.write_traces(ev_g, ev, layout.event_name(ev.id), raw=raw)
                    h5direct.write_cloud(cl_g, ev, layout.cloud_name(ev.id), raw=raw)
            if raw is not None:
                written = raw.direct_bytes + raw.buffered_bytes
                raw.close()
        with h5py.File(path, "r") as f:
            files[label] = describe(f)
            if label == "direct":
                offsets = [f["events"][n]["get_traces"].id.get_offset() for n in f["events"]]
                assert all(o % rawio.BLOCK == 0 for o in offsets)
    assert written == sum(ev.traces.nbytes for ev in events)  # the clouds (2.5 KB) stay with HDF5
    assert len(files["h5py"]) == 1 + 2 + 2 * 5 + 5
    assert files["direct"] == files["h5py"]


@pytest.mark.parametrize("write_thread", [False, True], ids=["one-thread", "write-thread"])
@pytest.mark.parametrize("ring", [True, False], ids=["shared-memory", "socket"])
def test_a_recording_of_online_sized_events_reads_back_identically(sinkkit, tmp_path, monkeypatch, ring,
                                                                    write_thread):
    """Events of 700+ traces through the sink (ring slots, or pickled through the socket: unaligned arrays),
    written by the writer's thread or a second one, consolidated and as file + parts: the same objects as
    h5py's writers, the traces at block offsets in the store, and the hdf5 replay source reads every event back
    with the same traces."""
    import conduit_sinkkit as kit

    if not ring:
        monkeypatch.setattr(writer, "_RING_DIR", tmp_path / "no-such-dir")
    events = big_events(kit, 30)
    reference_file(tmp_path / "reference.h5", events)
    expected = event_objects(tmp_path / "reference.h5")
    for consolidated in (False, True):
        d = tmp_path / f"c{int(consolidated)}"
        d.mkdir()
        sink = record(d, events, flush_interval=0.05, consolidate=consolidated, write_thread=write_thread)
        assert sink.flushed_events == 30 and sink.unwritten() == 0
        if not consolidated:
            offsets = trace_offsets(d / "run.h5")
            assert len(offsets) == 30 and all(o % rawio.BLOCK == 0 for o in offsets)
        assert event_objects(d / "run.h5") == expected
        text = f'[source]\nkind = "hdf5"\npath = "{d / "run.h5"}"\n[engine]\nworkers = 0\n'
        seen = []
        summary = run_pipeline(load_pipeline(d / "replay.toml", text=text), handle_signals=False,
                               on_event=seen.append)
        assert summary.error is None and len(seen) == 30
        for got, ev in zip(sorted(seen, key=lambda e: e.id), events):
            assert got.id == ev.id and np.array_equal(got.traces, ev.traces)


@pytest.mark.parametrize("write_thread", [False, True], ids=["one-thread", "write-thread"])
def test_a_full_file_system_gives_one_line_with_direct_writes(sinkkit, tmp_path, write_thread):
    """RLIMIT_FSIZE in a subprocess: the direct write fails with EFBIG, reported as one line naming the
    recording's parts directory; every event written whole before the failing one is committed and readable
    (the 4 flushed, and those of the failing batch before the event that crossed the limit)."""
    import subprocess
    import sys

    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8_000_000, 8_000_000))
sys.path.insert(0, {str(Path(__file__).parent)!r})
import conduit_sinkkit as kit
from test_sinks_hdf5_writer import big_events, open_sink
from conduit.stage import StopRun
sink = open_sink(__import__("pathlib").Path({str(tmp_path)!r}), flush_interval=3600, consolidate=False,
                 write_thread={write_thread!r})
try:
    for i, ev in enumerate(big_events(kit, 40)):
        sink.consume(ev)
        if i == 3:
            sink.flush()  # a part of 4 events (3 MB); the next part passes 8 MB at its 12th event
    sink.flush()
except (StopRun, OSError) as err:
    print("STOPPED", err)
print("FLUSHED", sink.flushed_events)
sink.close()
"""
    env = dict(os.environ, CONDUIT_PLUGINS="conduit_sinkkit",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    stopped = [ln for ln in res.stdout.splitlines() if ln.startswith("STOPPED")]
    assert len(stopped) == 1, res.stdout + res.stderr
    assert "file too large" in stopped[0] and "run.h5.parts/" in stopped[0] and "\n" not in stopped[0]
    flushed = int(next(ln for ln in res.stdout.splitlines() if ln.startswith("FLUSHED")).split()[1])
    assert ids_in(tmp_path / "run.h5") == list(range(flushed))
    # The events kept are exactly those written whole: the last one ends within the limit, the next one
    # (placed at the next block or later) would not have (until w26b a failed batch was lost whole: 4 kept).
    end = max(trace_offsets(tmp_path / "run.h5")) + (ROWS + flushed - 1) * 517 * 2
    assert end <= 8_000_000 < -(-end // rawio.BLOCK) * rawio.BLOCK + (ROWS + flushed) * 517 * 2
    assert flushed == 10


def test_closing_renames_the_store_without_copying_any_event(sinkkit, tmp_path, monkeypatch):
    """A normal close makes the writer's store the final file: the parts are never copied (the copy would fail
    here), the file is the same object by object, and nothing of the parts is left."""
    import conduit_sinkkit as kit
    from conduit_stages.hdf5_sink import partfile

    def no_copy(*args, **kwargs):
        raise AssertionError("the parts were copied")

    monkeypatch.setattr(partfile, "_copy_parts", no_copy)
    events = big_events(kit, 12)
    reference_file(tmp_path / "reference.h5", events)
    sink = record(tmp_path, events, flush_interval=0.05)
    assert sink.flushed_events == 12 and sink.consolidated == [tmp_path / "run.h5"]
    assert not parts_dir_of(tmp_path / "run.h5").exists()
    assert event_objects(tmp_path / "run.h5") == event_objects(tmp_path / "reference.h5")
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f.attrs["events_flushed"] == 12
        assert len(f["estimates"]) == sum(len(ev.artifacts["estimates"]) for ev in events)
        assert not f["events/event_3/get_traces"].external  # the bytes are in the file itself
    assert (tmp_path / "run.h5").stat().st_size < 1.2 * sum(ev.traces.nbytes for ev in events) + (4 << 20)


@pytest.mark.parametrize("damage", ["moved", "marker"])
def test_without_a_usable_store_consolidation_copies_the_parts(sinkkit, tmp_path, damage):
    """A recording left as file + parts whose master and parts were moved elsewhere (the parts' absolute
    external-storage names no longer exist), or whose store marker disagrees with the master: consolidation
    copies every part, taking the large datasets' bytes from the store, the same objects as written."""
    import shutil

    import conduit_sinkkit as kit
    from conduit_stages.hdf5_sink.store import COMPLETE_NAME

    events = big_events(kit, 9)
    reference_file(tmp_path / "reference.h5", events)
    first = tmp_path / "first"
    first.mkdir()
    record(first, events, flush_interval=0.05, consolidate=False)
    parts = parts_dir_of(first / "run.h5")
    assert STORE_NAME in os.listdir(parts) and COMPLETE_NAME not in os.listdir(parts)  # not consolidating
    path = first / "run.h5"
    if damage == "moved":
        path = tmp_path / "elsewhere" / "run.h5"
        shutil.move(first, path.parent)
    else:
        (parts / COMPLETE_NAME).write_text('{"events_flushed": 8}\n')  # one event short of the master's 9
    assert consolidate(path) == 9 * 3
    assert not parts_dir_of(path).exists()
    assert event_objects(path) == event_objects(tmp_path / "reference.h5")
    with h5py.File(path, "r") as f:
        assert not any(f["events"][name]["get_traces"].external for name in f["events"])
