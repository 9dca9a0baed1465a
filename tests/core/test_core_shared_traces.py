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


def test_a_lent_slot_is_handed_without_copy_and_comes_back_only_when_unreferenced():
    """``TraceSlots.array`` lends a slot to a new array: ``holding`` hands that slot as it is; the slot is not
    reused while the array or any view of it lives (a sink keeping one row of it in a queue), and comes back
    when the last one goes."""
    slots = TraceSlots(max_lent=3)
    traces = slots.array(700, 517)
    traces[...] = np.arange(700 * 517, dtype=np.int64).reshape(700, 517).astype(np.int16)
    expected = traces.copy()
    with slots.holding(traces) as ref:
        assert slots.copies == 0 and slots.handed == 1
        np.testing.assert_array_equal(worker_view(ref), expected)
        lent_name = ref.name
    kept_row = traces[5]  # a view: keeps the slot
    del traces
    other = slots.array(700, 517)
    with slots.holding(other) as ref:
        assert ref.name != lent_name  # not reused: a view of the first array is alive
    del other
    reused = slots.array(700, 517)  # `other`'s slot, free again (the last freed is taken first... or any)
    np.testing.assert_array_equal(kept_row, expected[5])  # never overwritten while held
    del kept_row, reused
    names = set()
    arrays = []
    for _ in range(3):
        arrays.append(slots.array(700, 517))
        with slots.holding(arrays[-1]) as ref:
            names.add(ref.name)
    assert lent_name in names and len(names) == 3 and slots.segments == 3  # the first slot came back
    assert slots.array(700, 517) is None  # max_lent reached: the caller makes an ordinary array
    # A view that does not start at the slot's first byte is copied into a slot of its own.
    with slots.holding(arrays[0][1:]) as ref:
        assert ref.name not in names and slots.copies == 1
    slots.close()
    assert segments(os.getpid()) == set()  # unlinked at close, lent or not
    arrays[1][0, 0] = 7  # the mappings of lent slots stay valid until their arrays go
    assert slots.array(10, 517) is None
    del arrays


def test_lent_slots_after_close_leave_nothing_and_print_nothing(tmp_path):
    """A child process lends slots, closes them with arrays alive, frees the arrays, exits: nothing of its pid in
    /dev/shm, no 'Exception ignored' (a mapping closed while exported) and no resource-tracker complaint."""
    code = textwrap.dedent("""
        import gc, os
        import numpy as np
        from conduit.engine.shared_traces import TraceSlots
        slots = TraceSlots()
        arrays = [slots.array(600, 517) for _ in range(5)]
        for a in arrays:
            a[...] = 3
        row = arrays[2][7]
        slots.close()
        del arrays
        gc.collect()
        print(os.getpid(), int(row.sum()))
        del row
        gc.collect()
        # `a` (the last array) is still alive at exit: the interpreter frees it after or before `slots`
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    pid, total = (int(v) for v in out.stdout.split())
    assert total == 3 * 517
    assert segments(pid) == set()
    assert out.stderr == "", out.stderr


def test_a_frame_source_builds_traces_in_the_slots_and_every_event_keeps_its_bytes(plugin_site, tmp_path):
    """A graw run with two worker processes: the builder makes each event's traces in a lent slot, the workers
    read them there (their checksums), and every event the test keeps (more than MAX_LENT: the rest get
    ordinary arrays) still holds exactly its own traces at the end; no slot was reused under a living event."""
    from conduit.engine.shared_traces import MAX_LENT
    from conduit.get.frames import encode_event_frames
    from conduit.get.grawfiles import RunWriter
    from conduit.get.maps import load_electronics_map

    emap = load_electronics_map()
    rng = np.random.default_rng(3)
    n_events = MAX_LENT + 12
    sent = {}
    folder = tmp_path / "run_0001"
    with RunWriter(folder) as writer:
        for evt in range(n_events):
            pads = np.sort(rng.choice(emap.n_pads, 200 + 10 * evt, replace=False))
            traces = np.zeros((pads.size, 517), np.int16)
            traces[:, :4] = emap.hardware_of(pads)
            traces[:, 4] = pads
            traces[:, 5:] = rng.integers(0, 4096, (pads.size, 512))
            sent[evt] = traces[np.lexsort((traces[:, 3], traces[:, 2], traces[:, 1], traces[:, 0]))]
            for key, frame in encode_event_frames(traces, evt, asads=emap.asads).items():
                writer.write(*key, frame)
    p = pipeline_from_tables(tmp_path, f'kind = "graw"\npath = "{folder}"', CHECKSUM, "workers = 2")
    seen = []
    summary = run_pipeline(p, handle_signals=False, on_event=seen.append)
    assert summary.received == summary.analysed == n_events and summary.exit_code == 0
    lent = [e for e in seen if not e.traces.flags.owndata]
    assert len(lent) == MAX_LENT and len(seen) - len(lent) == 12  # kept alive: the later ones are ordinary
    for event in seen:
        t = event.traces
        np.testing.assert_array_equal(t[np.lexsort((t[:, 3], t[:, 2], t[:, 1], t[:, 0]))], sent[event.id])
        assert event.artifacts["checksum"] == (int(sent[event.id].astype(np.int64).sum()), list(sent[event.id].shape))
    assert segments(os.getpid()) == set()  # unlinked at the end of the run, lent or not
