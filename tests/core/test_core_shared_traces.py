"""Trace matrices reach worker processes through shared memory, intact, and no segment outlives its pool."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conduit.engine.runner import run_pipeline
from conduit.engine.shared_traces import MIN_SEGMENT_BYTES, SEGMENT_PREFIX, TraceSlots, worker_view
from conduit_test_support import pipeline_from_tables

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm (Linux)")


def segments(pid: int | None = None) -> set[str]:
    """Names of this project's segments in /dev/shm (of one process when ``pid`` is given)."""
    prefix = SEGMENT_PREFIX + (f"{pid}-" if pid is not None else "")
    return {p.name for p in SHM.iterdir() if p.name.startswith(prefix)}


def test_slots_copy_reuse_grow_and_unlink():
    slots = TraceSlots()
    small = np.arange(10 * 517, dtype=np.int16).reshape(10, 517)
    with slots.holding(small) as ref:
        assert ref.shape == (10, 517) and segments(os.getpid()) == {ref.name}
        np.testing.assert_array_equal(worker_view(ref), small)  # as a worker reads it
        first = ref.name
    with slots.holding(small * 2) as ref:
        assert ref.name == first  # the free slot is reused
        np.testing.assert_array_equal(worker_view(ref), small * 2)
        with slots.holding(small) as second:  # a second event in flight takes a second slot
            assert second.name != first and slots.segments == 2
            other = second.name
    big = np.ones((MIN_SEGMENT_BYTES // (517 * 2) + 100, 517), dtype=np.int16)
    with slots.holding(big) as ref:
        # no free slot was big enough: the last freed one was replaced by a bigger segment, unlinked
        assert slots.segments == 2 and segments(os.getpid()) == {other, ref.name} and ref.name != first
        assert (SHM / ref.name).stat().st_size >= big.nbytes
        np.testing.assert_array_equal(worker_view(ref), big)
        held = ref.name
        slots.close()  # closing while an event is in flight: its slot goes when it is released
        assert segments(os.getpid()) == {held}
    assert segments(os.getpid()) == set()
    with pytest.raises(RuntimeError, match="closed"):
        with slots.holding(small):
            pass


CHECKSUM = """
[[stage]]
use = "testkit.checksum"

[[stage]]
use = "testkit.collect"
path = "out_{run}.jsonl"
lossless = true
"""


def test_worker_processes_read_the_traces_from_shared_memory(plugin_site, tmp_path):
    from conduit_testkit import expected_checksum

    # 600 to 2,400 traces per event (0.6 to 2.5 MB): the slots grow past their first size on the way
    p = pipeline_from_tables(tmp_path, 'kind = "counting"\nevents = 60\ntraces = 600\ngrow = 600', CHECKSUM,
                 "workers = 2\nmax_in_flight = 4")
    during: list[int] = []
    seen = []

    def on_event(event):
        seen.append(event)
        during.append(len(segments(os.getpid())))

    summary = run_pipeline(p, handle_signals=False, on_event=on_event)
    assert summary.received == summary.analysed == 60 and summary.exit_code == 0
    for event in seen:
        assert event.artifacts["checksum"] == expected_checksum(event.id, 600 + 600 * (event.id % 4))
        assert event.traces.shape[0] == 600 + 600 * (event.id % 4)  # the main process keeps its own copy
    assert 1 <= max(during) <= 4  # at most one slot per event in flight
    assert segments(os.getpid()) == set()  # every segment unlinked when the pool closed


def test_no_segment_is_left_after_a_run_in_a_fresh_process(plugin_site, tmp_path):
    """The whole run in a child process: afterwards nothing of its pid is in /dev/shm and the resource
    tracker reported no leak."""
    (tmp_path / "pipe.toml").write_text(
        f"[source]\nkind = \"counting\"\nevents = 30\ntraces = 700\n\n[engine]\nworkers = 2\n\n{CHECKSUM}")
    code = textwrap.dedent(f"""
        import os, sys
        from conduit.config.pipeline import load_pipeline
        from conduit.engine.runner import run_pipeline
        s = run_pipeline(load_pipeline({str(tmp_path / 'pipe.toml')!r}), handle_signals=False)
        print(os.getpid(), s.analysed)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    pid, analysed = (int(v) for v in out.stdout.split())
    assert analysed == 30
    assert segments(pid) == set()
    assert "leaked" not in out.stderr and "KeyError" not in out.stderr and "Traceback" not in out.stderr
