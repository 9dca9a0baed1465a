"""The online path under load and under Ctrl-C: simulated DAQ on loopback TCP, the real engine and sinks."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
import time

import h5py
import pytest

from conduit.config.pipeline import load_pipeline
from conduit.engine.runner import run_pipeline
from conduit_test_support import VENV_BIN


def write(tmp_path, text):
    path = tmp_path / "pipe.toml"
    path.write_text(textwrap.dedent(text))
    return path


def recorded_events(path) -> int:
    with h5py.File(path, "r") as f:
        return len(f["events"])


def test_faster_daq_than_analysis_skips_counts_and_still_records_every_event(plugin_site, tmp_path):
    path = write(tmp_path, """
        [source]
        kind = "simulate"
        loopback = true
        events = 60
        pool = 6                  # pre-generated: the DAQ sends as fast as the receivers read
        rate = 0.0
        run = 3

        [engine]
        workers = 1
        max_in_flight = 1         # analysis: one event at a time, 50 ms each

        [[stage]]
        use = "testkit.slow"
        seconds = 0.05

        [[stage]]
        use = "hdf5"
        path = "rec_{run:04d}.h5"
        cloud = false
        clusters = false
        estimates = false
        histograms = false
        lossless = true
        """)
    summary = run_pipeline(load_pipeline(path), handle_signals=False)
    counters = summary.source_counters
    assert summary.error is None
    # Receivers never stalled: every frame and byte the eleven DataExporters sent was read.
    assert counters["frames"] == counters["served_frames"] > 0
    socket_bytes = sum(v for k, v in counters.items() if re.fullmatch(r"cobo\d+_bytes", k))
    assert socket_bytes == counters["served_bytes"]  # length prefixes included on both sides
    assert counters["protocol_errors"] == 0 and counters["incomplete_events"] == 0
    # The engine skipped analysis of what it could not keep up with, and said so exactly.
    assert summary.received == 60 and summary.dropped == 0
    assert summary.analysed + summary.skipped == 60
    assert summary.skipped > 10 and summary.analysed >= 1
    # The lossless recorder wrote every event, analysed or not.
    assert recorded_events(tmp_path / "rec_0003.h5") == 60


def test_ctrl_c_under_heavy_load_prints_the_summary_closes_files_and_exits_zero(tmp_path):
    path = write(tmp_path, """
        [source]
        kind = "simulate"
        loopback = true
        events = 100000
        pool = 8
        rate = 0.0
        run = 5

        [engine]
        workers = 1

        [[stage]]
        use = "pointcloud"

        [[stage]]
        use = "hdf5"
        path = "heavy_{run:04d}.h5"
        clusters = false
        estimates = false
        histograms = false

        [[stage]]
        use = "rerun"
        mode = "save"
        path = "heavy_{run:04d}.rrd"
        """)
    proc = subprocess.Popen([str(VENV_BIN / "conduit"), "run", str(path), "-v"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr_lines = []
    deadline = time.monotonic() + 120
    # Wait until events are flowing and at least one batch has been flushed to disk.
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        stderr_lines.append(line)
        if "flushed" in line:
            break
    else:
        proc.kill()
        pytest.fail("no flush within two minutes:\n" + "".join(stderr_lines))
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=120)
    stderr = "".join(stderr_lines) + rest
    assert proc.returncode == 0, stderr[-3000:]
    assert "SIGINT: finishing events in flight" in stderr
    assert "run summary (interrupted)" in stdout
    received = int(re.search(r"events received\s+(\d+)", stdout).group(1))
    delivered = int(re.search(r"events delivered to sinks\s+(\d+)", stdout).group(1))
    assert received == delivered > 0
    # Files closed cleanly: the HDF5 file is consolidated and holds every delivered event, the .rrd verifies.
    assert not (tmp_path / "heavy_0005.h5.parts").exists()
    assert recorded_events(tmp_path / "heavy_0005.h5") == delivered
    # Written without a footer (its per-chunk index would grow the run's memory): verified without one.
    verify = subprocess.run([str(VENV_BIN / "rerun"), "rrd", "verify", "--check-footers", "false",
                             str(tmp_path / "heavy_0005.rrd")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
