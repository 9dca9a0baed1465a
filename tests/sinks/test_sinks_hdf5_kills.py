"""The hdf5 sink's crash safety since each event's objects are made once (w25a): real `conduit run` processes,
real SIGKILLs of the main process, of the writer process and of both, exact counts, values against what was sent.

(SIGKILL of `conduit run` alone, and a next run started while its writer finishes, are in
test_sinks_hdf5_writer.py, test_sinks_hdf5.py and test_sinks_recording_rules.py.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conduit_stages.hdf5_sink.journal import JOURNAL_NAME, wait_for_writer
from conduit_stages.hdf5_sink.partfile import consolidate, parts_dir_of
from sinks.test_sinks_hdf5 import check_cluster_layout, check_pointcloud_layout, check_traces
from sinks.test_sinks_hdf5_writer import _gone, _writer_of, ids_in, open_sink

CONDUIT = Path(sys.executable).parent / "conduit"

ENDLESS = """
    [source]
    kind = "sinkkit"
    events = 0
    rate = 200
    run = 3
    frib = true

    [engine]
    workers = 0

    [[stage]]
    use = "sinkkit.analyse"

    [[stage]]
    use = "hdf5"
    flush_interval = 0.1
    """


def _run_until_flushed(pipe: Path, at_least: int) -> tuple[subprocess.Popen, int, int]:
    """Start `conduit run -v`; return (process, last flushed total logged >= at_least, writer pid)."""
    proc = subprocess.Popen([str(CONDUIT), "run", "-v", str(pipe)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    flushed = 0
    deadline = time.monotonic() + 120  # a liveness bound
    for line in proc.stderr:  # "DEBUG conduit.stage.hdf5: flushed N events to ... (T events flushed in total)"
        if "events flushed in total" in line:
            flushed = int(line.rsplit("(", 1)[1].split()[0])
            if flushed >= at_least:
                break
        assert time.monotonic() < deadline, "no flushes reported"
    return proc, flushed, _writer_of(proc.pid)


def _check_every_event(path: Path, n: int) -> None:
    """``path`` opens with plain h5py and holds events 0..n-1, values equal to what the kit sent."""
    import conduit_sinkkit as kit

    ids = list(range(n))
    with h5py.File(path, "r") as f:
        assert f.attrs["events_flushed"] == n
        assert sorted(f["events"]) == sorted(f"event_{i}" for i in ids)
        check_traces(f, kit, ids)
        check_pointcloud_layout(f, kit, ids)
        check_cluster_layout(f, kit, ids)
        assert f["estimates"].shape[0] == sum(1 + i % 3 for i in ids)


def test_a_writer_killed_mid_run_stops_the_run_and_the_file_holds_every_committed_event(
        sinkkit, write_pipeline, tmp_path):
    proc, flushed, writer = _run_until_flushed(write_pipeline(ENDLESS), 40)
    os.kill(writer, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    errors = [ln for ln in stdout.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"the hdf5 writer process (pid {writer}) died (killed by SIGKILL)" in errors[0]
    out = tmp_path / "out" / "run_0003.h5"
    with h5py.File(out, "r") as f:
        n = int(f.attrs["events_flushed"])
    assert n >= flushed >= 40
    assert not (parts_dir_of(out) / JOURNAL_NAME).exists()  # made into part files by the main process
    _check_every_event(out, n)  # through the part files' links
    assert consolidate(out) == 3 * n
    _check_every_event(out, n)


def test_both_processes_killed_the_next_consolidation_takes_every_event_from_the_journal(
        sinkkit, write_pipeline, tmp_path):
    """The one case where the file holds no event object until it is consolidated: the main process and its writer
    both killed (the writer first held stopped, so that it cannot finish the recording)."""
    proc, flushed, writer = _run_until_flushed(write_pipeline(ENDLESS), 40)
    os.kill(writer, signal.SIGSTOP)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(writer, signal.SIGKILL)
    while not _gone(writer):
        time.sleep(0.02)
    out = tmp_path / "out" / "run_0003.h5"
    with h5py.File(out, "r") as f:  # opens: the master, replaced atomically at every commit
        n = int(f.attrs["events_flushed"])
        assert len(f["events"]) == 0
    assert n >= flushed >= 40
    res = subprocess.run([sys.executable, "-m", "conduit_stages.hdf5_sink.consolidate", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{out}: {3 * n} objects copied" in res.stdout
    assert not parts_dir_of(out).exists()
    _check_every_event(out, n)


def test_the_journal_gives_whole_batches_up_to_the_events_the_master_counts(sinkkit, tmp_path):
    """A batch cut short ends the journal; a batch written but never published (the master not replaced) is left
    out; an interrupted linking is finished without doubling an object."""
    import conduit_sinkkit as kit

    sink = open_sink(tmp_path, flush_interval=3600)
    for start, stop in ((0, 10), (10, 15), (15, 18)):
        for i in range(start, stop):
            sink.consume(kit.make_event(i))
        sink.flush()
    os.kill(sink.writer.pid, signal.SIGKILL)  # the three batches stay in the journal
    sink.writer.proc.wait()
    saved = (parts_dir_of(tmp_path / "run.h5") / JOURNAL_NAME).read_bytes()

    def copy(name: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        shutil.copy(tmp_path / "run.h5", where / "run.h5")
        shutil.copytree(parts_dir_of(tmp_path / "run.h5"), parts_dir_of(where / "run.h5"))
        return where / "run.h5"

    cut = copy("cut")
    journal = parts_dir_of(cut) / JOURNAL_NAME
    os.truncate(journal, journal.stat().st_size - 10)  # the third batch cut short
    assert consolidate(cut) == 3 * 15
    assert ids_in(cut) == list(range(15))

    unpublished = copy("unpublished")
    with h5py.File(unpublished, "r+") as f:
        f.attrs["events_flushed"] = np.int64(12)  # as if the master had not been replaced after the 2nd batch
    assert consolidate(unpublished) == 3 * 12
    assert ids_in(unpublished) == list(range(12))

    sink.close()  # the main process makes the three batches into part files
    assert sink.flushed_events == 18 and ids_in(tmp_path / "run.h5") == list(range(18))
    (parts_dir_of(tmp_path / "run.h5") / JOURNAL_NAME).write_bytes(saved)  # as if interrupted
    from conduit_stages.hdf5_sink.journal import link_journal
    from conduit_stages.hdf5_sink.recorder import write_object

    assert link_journal(tmp_path / "run.h5", write_object) == 0  # every object already linked
    assert consolidate(tmp_path / "run.h5") == 3 * 18
    assert ids_in(tmp_path / "run.h5") == list(range(18))


def test_wait_for_writer_gives_up_with_one_line(tmp_path):
    """A writer lock held for longer than the timeout: one line naming the path and the lock file."""
    import fcntl

    path = tmp_path / "run.h5"
    parts = parts_dir_of(path)
    parts.mkdir()
    fd = os.open(parts / "writer.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        said = []
        with pytest.raises(OSError) as err:
            wait_for_writer(path, timeout=0.2, say=said.append)
        assert said == [f"{path}: the hdf5 writer process (pid 4242) of an earlier run still finishes this "
                        f"recording; waiting for it"]
        assert "\n" not in str(err.value) and str(parts / "writer.lock") in str(err.value)
    finally:
        os.close(fd)
    wait_for_writer(path, timeout=0.2)  # released: returns at once
