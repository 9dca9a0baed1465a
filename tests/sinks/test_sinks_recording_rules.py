"""The recording rules: an existing recording is never deleted, one run per output path, killed runs tidied.

Real `conduit run` subprocesses, real SIGKILL and SIGINT, real HDF5 files read back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from conduit.config.pipeline import load_pipeline
from conduit.engine.runner import run_pipeline
from conduit_stages.hdf5_sink.journal import wait_for_writer
from sinks.test_sinks_hdf5_writer import _writer_of

VENV_BIN = Path(sys.executable).parent

PIPE = """
[source]
kind = "{kind}"
events = {events}
rate = {rate}

[engine]
workers = {workers}

[[stage]]
use = "sinkkit.analyse"
{stages}
[[stage]]
use = "hdf5"
flush_interval = 0.05
histograms = false
"""


def pipeline(write_pipeline, *, kind="sinkkit", events=30, rate=0, workers=0, stages="", name="pipe.toml",
             detector=""):
    return write_pipeline(PIPE.format(kind=kind, events=events, rate=rate, workers=workers, stages=stages)
                          + detector, name=name)


def record(path, **kwargs):
    summary = run_pipeline(load_pipeline(path), handle_signals=False, **kwargs)
    assert summary.exit_code == 0, summary.error
    return summary


def ids_in(path: Path) -> list[int]:
    with h5py.File(path, "r") as f:
        return sorted(int(name.split("_")[1]) for name in f["events"])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def conduit(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "conduit"), *map(str, args)], text=True, **kwargs)


def wait_for(stream, text: str, timeout: float = 120.0) -> list[str]:
    """Read lines until one contains ``text``; return every line read."""
    lines, deadline = [], time.monotonic() + timeout
    for line in stream:
        lines.append(line)
        if text in line:
            return lines
        assert time.monotonic() < deadline, f"no {text!r} in: {''.join(lines)}"
    raise AssertionError(f"stream ended without {text!r}: {''.join(lines)}")


def flushed_total(line: str) -> int:
    """N of the -v line "flushed K events to FILE (N events flushed in total)"."""
    return int(line.rsplit("(", 1)[1].split()[0])


def test_a_failing_run_leaves_the_previous_recording_untouched(sinkkit, write_pipeline, tmp_path):
    out = tmp_path / "out" / "run_0003.h5"
    record(pipeline(write_pipeline))
    before = digest(out)
    assert ids_in(out) == list(range(30))

    # A typo in the electronics map: found when the pipeline loads, before anything runs.
    (tmp_path / "map.csv").write_text("cobo,asad,aget,aget channel,pad\n0,0,0,0,1\n0,0,0,x,2\n")
    typo = pipeline(write_pipeline, detector='\n[detector]\nelectronics_map = "map.csv"\n', name="typo.toml")
    res = subprocess.run([str(VENV_BIN / "conduit"), "run", str(typo)], capture_output=True, text=True, timeout=120)
    line = typo.read_text().splitlines().index('electronics_map = "map.csv"') + 1
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"{typo}:{line}: detector.electronics_map: {tmp_path / 'map.csv'}:3: expected an integer, got 'x'",
        "1 problem found; nothing was run"]

    # An input that fails at start-up, once the sinks have opened (claimed the path, staged a master).
    missing = write_pipeline('[source]\nkind = "hdf5"\npath = "gone/run_0003.h5"\n[engine]\nworkers = 0\n'
                             '[[stage]]\nuse = "hdf5"\nhistograms = false\n', name="missing.toml")
    summary = run_pipeline(load_pipeline(missing), handle_signals=False)
    assert summary.exit_code == 1 and not summary.started and summary.outputs == []
    assert summary.error == f"source 'hdf5': {tmp_path / 'gone' / 'run_0003.h5'}: no such file"

    # A second sink on the same path: refused when it opens, after the first one opened.
    twice = write_pipeline(PIPE.format(kind="sinkkit", events=5, rate=0, workers=0, stages="")
                           + "\n[[stage]]\nuse = \"hdf5\"\n", name="twice.toml")
    summary = run_pipeline(load_pipeline(twice), handle_signals=False)
    assert summary.exit_code == 1 and summary.received == 0
    assert summary.error == (f"sink hdf5: cannot open: {out}: already being written by another stage of this "
                             "pipeline; give this run another output path or run number")

    assert digest(out) == before
    assert listing(out.parent) == ["run_0003.h5"]  # no temporary, part or lock file left behind


def test_sigkill_mid_run_then_a_new_run_keeps_every_recording(sinkkit, write_pipeline, tmp_path):
    """(Until w25a the killed run's recording stayed as file + parts for the next run to consolidate; now its writer
    process finishes it, and a next run started meanwhile waits for it. The writer is held stopped here so that
    the next run certainly meets it.)"""
    out = tmp_path / "out" / "run_0003.h5"
    record(pipeline(write_pipeline))
    first = digest(out)

    endless = pipeline(write_pipeline, events=0, rate=200, name="endless.toml")
    proc = conduit("run", "-v", endless, stderr=subprocess.PIPE)
    writer = None
    try:
        flushed = 0
        while flushed < 40:
            flushed = flushed_total(wait_for(proc.stderr, "events flushed in total")[-1])
        writer = _writer_of(proc.pid)
        os.kill(writer, signal.SIGSTOP)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    try:
        third = conduit("run", "-v", pipeline(write_pipeline, events=20, name="third.toml"), stderr=subprocess.PIPE,
                        stdout=subprocess.DEVNULL)
        lines = wait_for(third.stderr, "still finishes this recording; waiting for it")
        assert f"{out}: the hdf5 writer process (pid {writer}) of an earlier run still finishes" in lines[-1]
        # Nothing of the killed recording was touched while its writer works on it.
        assert {"run_0003.1.h5", "run_0003.h5", "run_0003.h5.parts"} <= set(listing(out.parent))
        assert digest(out.with_name("run_0003.1.h5")) == first
    finally:
        os.kill(writer, signal.SIGCONT)
    log = "".join(lines) + third.communicate(timeout=120)[1]
    assert third.returncode == 0, log
    assert f"{out}: took over the lock left by a run that ended without releasing it (pid {proc.pid} on " in log
    assert f"{out} already existed: kept it as run_0003.2.h5" in log
    assert "never consolidated" not in log  # the writer consolidated it
    assert listing(out.parent) == ["run_0003.1.h5", "run_0003.2.h5", "run_0003.h5"]
    assert digest(out.with_name("run_0003.1.h5")) == first
    killed = ids_in(out.with_name("run_0003.2.h5"))
    n = len(killed)
    assert n >= flushed and killed == list(range(n))
    with h5py.File(out.with_name("run_0003.2.h5"), "r") as f:  # self-contained
        assert isinstance(f["events"].get("event_0", getlink=True), h5py.HardLink)
        assert f.attrs["events_flushed"] == n
        assert len(f["cloud"]) == len(f["cluster"]) == n
    assert ids_in(out) == list(range(20))


def test_sigkill_during_start_up_touches_nothing(sinkkit, write_pipeline, tmp_path, caplog):
    out = tmp_path / "out" / "run_0003.h5"
    record(pipeline(write_pipeline))
    first = digest(out)
    slow = pipeline(write_pipeline, stages='[[stage]]\nuse = "sinkkit.slow_warm"\nseconds = 120\n',
                    name="slow.toml")
    proc = conduit("run", slow, stderr=subprocess.PIPE)
    try:
        wait_for(proc.stderr, "sinkkit.slow_warm: warming up for 120 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert digest(out) == first
    # The staged master of the run that never began, and its lock file: nothing else.
    assert listing(out.parent) == ["run_0003.h5", "run_0003.h5.lock", "run_0003.h5.tmp"]

    caplog.set_level(logging.INFO, logger="conduit")
    record(pipeline(write_pipeline, events=4, name="next.toml"))
    assert f"{out}: removed the temporaries an interrupted run left: run_0003.h5.tmp (" in caplog.text
    assert listing(out.parent) == ["run_0003.1.h5", "run_0003.h5"]
    assert digest(out.with_name("run_0003.1.h5")) == first and ids_in(out) == list(range(4))


def test_two_runs_on_one_path_the_second_refuses(sinkkit, write_pipeline, tmp_path):
    out = tmp_path / "out" / "run_0003.h5"
    endless = pipeline(write_pipeline, events=0, rate=100)
    first = conduit("run", endless, stderr=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not out.exists():  # published when the first run began
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.run([str(VENV_BIN / "conduit"), "run", str(endless)], capture_output=True, text=True,
                                timeout=120)
    finally:
        first.send_signal(signal.SIGINT)
        stdout, _ = first.communicate(timeout=120)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    errors = [line for line in second.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: sink hdf5: cannot open: {out}: already being written by another conduit "
                                f"run (pid {first.pid} on {socket.gethostname()} since ")
    assert errors[0].endswith("); give this run another output path or run number")
    # The first run was not disturbed: it recorded every event it received.
    assert first.returncode == 0
    received = int(next(line for line in stdout.splitlines() if line.startswith("events received")).split()[-1])
    assert received > 0 and ids_in(out) == list(range(received))
    assert listing(out.parent) == ["run_0003.h5"]


def test_a_live_run_needs_a_run_number_for_its_output_names(sinkkit, write_pipeline, tmp_path):
    live = pipeline(write_pipeline, kind="sinkkit_live_norun", events=5)
    summary = run_pipeline(load_pipeline(live), handle_signals=False)
    assert summary.exit_code == 1 and summary.received == 0 and not summary.started
    assert summary.error == ("sink hdf5: cannot open: out/run_{run:04d}.h5: the output name uses {run} but this "
                             "live run has no run number; give it with `conduit run --run N` (or source.run = N)")
    assert not (tmp_path / "out").exists()

    res = subprocess.run([str(VENV_BIN / "conduit"), "run", "--run", "42", str(live)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out" / "run_0042.h5"
    assert ids_in(out) == list(range(5))
    with h5py.File(out, "r") as f:
        assert f.attrs["run"] == 42
        assert all(f["cloud"][name].attrs["orig_run"] == 42.0 for name in f["cloud"])  # the analysed ones


def test_ctrl_c_during_start_up_exits_130_and_touches_nothing(sinkkit, write_pipeline, tmp_path):
    """As from a terminal: SIGINT to the whole process group, while a worker process is warming up."""
    out = tmp_path / "out" / "run_0003.h5"
    record(pipeline(write_pipeline))
    first = digest(out)
    slow = pipeline(write_pipeline, workers=1, stages='[[stage]]\nuse = "sinkkit.slow_warm"\nseconds = 120\n',
                    name="slow.toml")
    proc = conduit("run", slow, stderr=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    lines = wait_for(proc.stderr, "sinkkit.slow_warm: warming up for 120 s")
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    stderr = "".join(lines) + stderr
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert ("SIGINT during start-up: stopping; nothing is recorded and existing files are left as they were "
            "(again to exit at once)") in stderr
    assert stdout.strip() == "interrupted during start-up: nothing was run; existing outputs were left as they were"
    assert listing(out.parent) == ["run_0003.h5"] and digest(out) == first


def test_second_ctrl_c_during_consolidation_exits_at_once_and_the_next_run_completes_it(
        sinkkit, write_pipeline, tmp_path, caplog):
    out = tmp_path / "out" / "run_0003.h5"
    events = 1500  # 4,500 objects to copy: consolidation takes seconds
    proc = conduit("run", pipeline(write_pipeline, events=events), stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    lines = wait_for(proc.stderr, f"consolidating {out} (")
    proc.send_signal(signal.SIGINT)
    lines += wait_for(proc.stderr, "again to exit at once")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    stderr = "".join(lines) + stderr
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert (f"SIGINT: closing outputs while sink hdf5 closes (again to exit at once)") in stderr
    assert ("interrupted again: exiting now while sink hdf5 closes; an output left unfinished stays readable and "
            "is completed at the next run on its path (docs/outputs.md)") in stderr
    assert stdout == ""  # no summary: it exited at once
    # Its writer process finishes the recording (since w25a): it consolidates when the main process died before
    # its consolidation began, else makes the committed events into part files. Every event readable either way.
    wait_for_writer(out, timeout=120)
    left = listing(out.parent)
    half_copy = "run_0003.h5.consolidating" in left
    parts_left = "run_0003.h5.parts" in left
    assert sorted(set(left) - {"run_0003.h5.consolidating", "run_0003.h5.parts"}) == ["run_0003.h5",
                                                                                      "run_0003.h5.lock"]
    with h5py.File(out, "r") as f:
        # Three states, by where the second SIGINT fell: consolidated and tidied; consolidated with its parts
        # directory not yet (fully) removed (between the master's replacement and the rmtree); not consolidated.
        finished = isinstance(f["events"].get("event_0", getlink=True), h5py.HardLink)
        assert finished or isinstance(f["events"].get("event_0", getlink=True), h5py.ExternalLink)
    assert finished or parts_left
    assert ids_in(out) == list(range(events))

    caplog.set_level(logging.INFO, logger="conduit")
    record(pipeline(write_pipeline, events=3, name="next.toml"))
    removed = f"{out}: removed the temporaries an interrupted run left: run_0003.h5.consolidating ("
    assert (removed in caplog.text) == half_copy
    assert (f"consolidated it: {3 * events} objects from " in caplog.text) == (not finished)
    assert (f"{out}: removed run_0003.h5.parts/ that an interrupted run left after consolidating it"
            in caplog.text) == (finished and parts_left)
    assert listing(out.parent) == ["run_0003.1.h5", "run_0003.h5"]
    assert ids_in(out.with_name("run_0003.1.h5")) == list(range(events)) and ids_in(out) == list(range(3))


def test_parts_left_after_the_master_was_consolidated_are_removed_and_said(sinkkit, write_pipeline, tmp_path,
                                                                          caplog):
    """A second Ctrl-C between the master's replacement and the removal of its parts directory (seen in suites)."""
    out = tmp_path / "out" / "run_0003.h5"
    record(pipeline(write_pipeline, events=5))
    before = digest(out)
    leftover = out.parent / "run_0003.h5.parts"
    leftover.mkdir()
    (leftover / "journal.bin").write_bytes(b"\0" * 100)  # what rmtree had not reached yet
    caplog.set_level(logging.INFO, logger="conduit")
    record(pipeline(write_pipeline, events=3, name="next.toml"))
    assert f"{out}: removed run_0003.h5.parts/ that an interrupted run left after consolidating it" in caplog.text
    assert "never consolidated" not in caplog.text
    assert listing(out.parent) == ["run_0003.1.h5", "run_0003.h5"]
    assert digest(out.with_name("run_0003.1.h5")) == before and ids_in(out) == list(range(3))


def test_an_unfinished_recording_that_cannot_be_consolidated_stops_the_run_untouched(
        sinkkit, write_pipeline, tmp_path):
    out = tmp_path / "out" / "run_0003.h5"
    write_pipeline(PIPE.format(kind="sinkkit", events=12, rate=0, workers=0, stages="")
                   + "consolidate = false\n", name="parts.toml")
    record(tmp_path / "parts.toml")
    parts = sorted((out.parent / "run_0003.h5.parts").iterdir())
    parts[0].write_bytes(b"damaged " * 1000)  # as if the disk had lost it
    master = digest(out)
    summary = run_pipeline(load_pipeline(pipeline(write_pipeline, events=3)), handle_signals=False)
    assert summary.exit_code == 1 and not summary.started
    assert summary.error.startswith(f"sink hdf5: cannot open: cannot consolidate {out}: ")
    assert summary.error.endswith(
        f": it is the unfinished recording of an earlier run; move run_0003.h5 and run_0003.h5.parts/ away "
        f"together, or consolidate them with `python -m conduit_stages.hdf5_sink.consolidate {out}`")
    # Nothing changed, nothing of the failed run is left (its lock released, no staged master).
    assert digest(out) == master and parts[0].read_bytes() == b"damaged " * 1000
    assert listing(out.parent) == ["run_0003.h5", "run_0003.h5.parts"]
    assert len(list((out.parent / "run_0003.h5.parts").iterdir())) == len(parts)
