"""benchmarks/trace_seconds.py: the per-second trace of an online run (a benchmark tool; its bookkeeping tested here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py


def _load_trace_seconds():
    """The benchmark module, with benchmarks/ on sys.path only while it loads: left there, its simulate.py and
    _common.py would shadow the tests' `simulate` package and tests/panel/_common.py in later test files."""
    benchmarks = str(Path(__file__).resolve().parents[2] / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        import trace_seconds
    finally:
        sys.path.remove(benchmarks)
        sys.modules.pop("_common", None)
    return trace_seconds


trace_seconds = _load_trace_seconds()


def test_skips_are_put_in_the_second_in_which_the_conduit_read_them(tmp_path):
    """Event k in id order goes to the second in which the reads passed k; an event without a cloud was skipped."""
    path = tmp_path / "run_0001.h5"
    with h5py.File(path, "w") as f:
        for event_id in (10, 2, 3, 11, 7, 5):  # stored out of order: sorted by id, 2 3 5 7 10 11
            f.create_group(f"events/event_{event_id}")
        for event_id in (2, 7, 11):
            f.create_dataset(f"cloud/cloud_{event_id}", data=[0.0])
    skipped = trace_seconds.skipped_events(path)
    assert skipped == [False, True, True, False, True, False]
    rows = [{"read_events": 1.0}, {"read_events": 0.0}, {"read_events": 2.0}, {"read_events": 3.0}]
    assert trace_seconds.skipped_by_second(rows, skipped) == [0, 0, 2, 1]


def test_a_busy_process_shows_its_cpu_second_by_second(tmp_path):
    """Traced against real processes (a busy one as `conduit run`, a sleeping one as the DAQ): one line a second
    until the "run" ends, its CPU counted, the sleeper's near 0, the machine's states and the threads named."""
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 2.6\nwhile time.time() < end: pass"])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        out = tmp_path / "trace.jsonl"
        trace_seconds.trace(busy.pid, sleeper.pid, 40000, 200.0, out, 2.78)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    finally:
        busy.wait()
        sleeper.kill()
        sleeper.wait()
    assert 2 <= len(rows) <= 5
    full = [r for r in rows if r["main"] is not None and r["DAQ"] is not None]
    busy_ms = sum(r["main"]["user"] + r["main"]["sys"] for r in full)
    asleep_ms = sum(r["DAQ"]["user"] + r["DAQ"]["sys"] for r in full)
    assert busy_ms >= 100 and asleep_ms <= 30, (busy_ms, asleep_ms)  # a shared machine may give the busy one little
    assert all(set(r["machine"]) >= {"steal", "iowait", "softirq", "idle"} for r in rows)
    assert rows[0]["main_threads"][0][0] == "python" or rows[0]["main_threads"][0][0].startswith("python")
    assert trace_seconds._line([1.0, 3.0, 5.0], [0.0, 1.0, 2.0])[:2] == (1.0, 2.0)
