"""The rerun sink's draw process: what it records equals what the sink draws itself; it can fall behind or die.

Recordings are read back with rerun's own reader. A drawn event travels as raw
array bytes (:func:`drawproc.encode`), checked here on awkward arrays.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conduit.artifacts import Clusters
from conduit.event import Event
from conduit.stage import StageContext
from conduit_stages.rerun_sink import drawproc, rrdfile
from conduit_stages.rerun_sink.params import RerunParams
from conduit_stages.rerun_sink.sink import RerunSink

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conduit_sinkkit as kit  # noqa: E402
from rrd_read import event_rows, latest_state, read_rrd  # noqa: E402


def _same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    elif isinstance(a, Clusters):
        for name in ("labels", "cluster_labels", "directions"):
            _same(getattr(a, name), getattr(b, name))
    else:
        assert a == b


def test_a_message_travels_as_its_arrays_bytes_and_comes_back_equal():
    """Structured, empty, strided, 0-d, big-endian and 3-D arrays and None come back equal and writable."""
    estimates = kit.make_event(4).artifacts["estimates"]
    traces = kit.make_traces(3)
    arrays = (estimates, np.zeros((0, 8)), traces[::3, 5:], np.array(7.5), np.arange(6, dtype=">i4"), None,
              np.arange(24, dtype=np.uint8).reshape(2, 3, 4), estimates[:0], np.zeros(3, dtype=bool))
    message = ("draw", {"event": 5, "run_time": 0.25}, 3, ("x", [1, 2], None))
    data = drawproc.encode(message, arrays)
    back, got = drawproc.decode(bytearray(data))
    assert back == message and len(got) == len(arrays)
    for a, b in zip(arrays, got):
        if a is None:
            assert b is None
            continue
        _same(np.ascontiguousarray(a), b)
        assert b.flags.writeable or b.size == 0


def test_a_drawn_event_read_by_the_draw_process_is_the_event_drawn():
    """What the view reads of an event (its id, time, completeness, traces count, cloud, clusters and
    estimates, the charges and the picked traces) crosses over unchanged; artifacts it does not need stay."""
    for i in range(6):
        event = kit.make_event(i, analysed=i % 3 != 2)
        event.artifacts["other"] = np.ones(3)
        if i == 4:
            event.complete, event.missing = False, ((3, 2), (4, 0))
        charges = (np.arange(event.n_traces, dtype=np.int64), np.linspace(0.0, 99.0, event.n_traces))
        picked = (event.traces[[2, 0]], ["strongest unsaturated", ""]) if i % 2 else None
        message, arrays = drawproc.decode(bytearray(drawproc.draw_message({"event": i}, 3, event, charges, picked)))
        got, got_charges, got_picked = drawproc.read_draw(message, arrays)
        assert (got.id, got.timestamp, got.complete, got.missing, got.n_traces) == (
            event.id, event.timestamp, event.complete, tuple(event.missing), event.n_traces)
        assert set(got.artifacts) == {k for k in ("cloud", "clusters", "estimates") if k in event.artifacts}
        for name, value in got.artifacts.items():
            _same(event.artifacts[name], value)
        _same(charges[0], got_charges[0])
        _same(charges[1], got_charges[1])
        if picked is None:
            assert got_picked is None
        else:
            _same(picked[0], got_picked[0])
            assert got_picked[1] == picked[1]


def _record(tmp_path: Path, name: str, apart: bool, plan: list[bool], **params) -> dict:
    ctx = StageContext(run=3, base_dir=tmp_path / name, live=False)
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", "refresh_events": 4, "draw_process": apart,
                                               **params}), ctx)
    sink.open()
    assert (sink.drawer is not None) == apart
    sink.begin()
    for i, analysed in enumerate(plan):
        if i != 5:  # event 5 never arrives: its marker
            sink.consume(kit.make_event(i, analysed=analysed))
    sink.close()
    path = tmp_path / name / "out" / "run_0003.rrd"
    assert not Path(drawproc.sidecar_path(path)).exists()  # appended, then removed
    return read_rrd(path)


def test_the_draw_process_records_what_the_sink_draws_itself(tmp_path):
    """Every per-event entity (cloud, clusters, tracks, pad plane, traces, captions, summary, markers of events
    not received) shows the same at every event, drawn apart or in the sink's process; one file, one stream."""
    plan = [True, True, False, True, True, True, False, True] * 2
    apart = _record(tmp_path, "apart", True, plan)
    here = _record(tmp_path, "here", False, plan)
    assert set(apart) == set(here)
    per_event = sorted(e for e in here if e.startswith("/event"))
    assert len(per_event) >= 10
    for entity in per_event:
        for i in range(len(plan)):
            assert latest_state(apart, entity, i) == latest_state(here, entity, i), (entity, i)
    summary = latest_state(apart, "/event/summary", 5)
    assert "event 5" in summary["TextDocument:text"][0] and "Not received" in summary["TextDocument:text"][0]
    assert sorted(r["event"] for r in event_rows(apart, "/event/cloud")) == [i for i, a in enumerate(plan)
                                                                               if a and i != 5]
    frames, problem = rrdfile.frames(tmp_path / "apart" / "out" / "run_0003.rrd")
    assert problem is None and rrdfile.ARROW_MSG in frames


def test_a_live_view_whose_draw_process_is_behind_skips_drawing_and_says_so(tmp_path, caplog):
    """The draw process stopped (SIGSTOP): after WINDOW messages the sink draws nothing more (each skipped
    event counted), never blocks, and the panels and the end-of-run line say why."""
    caplog.set_level(logging.INFO, logger="conduit")
    ctx = StageContext(run=3, base_dir=tmp_path, live=True)
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", "max_display_rate": 1e6, "draw_process": True}), ctx)
    sink.open()
    sink.begin()
    pid = sink.drawer.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        for i in range(40):
            sink.consume(kit.make_event(i))
            time.sleep(0.001)  # past the display period
        assert time.monotonic() - start < 30
        assert sink.drawer.behind == drawproc.WINDOW + 1  # WINDOW drawn events, then one marker saying why
        assert sink.displayed == drawproc.WINDOW and sink.behind == 40 - sink.displayed
    finally:
        os.kill(pid, signal.SIGCONT)
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    assert sorted(r["event"] for r in event_rows(rows, "/event/cloud")) == list(range(drawproc.WINDOW))
    marker = latest_state(rows, "/event/summary", 39)["TextDocument:text"][0]
    assert "the draw process is behind" in marker and f"the panels show event {drawproc.WINDOW - 1}" in marker
    assert f"rerun: {drawproc.WINDOW} events drawn of 40 received ({sink.behind} not drawn: the draw " \
           "process was behind)" in caplog.text


def test_when_the_draw_process_dies_the_sink_says_so_and_draws_itself(tmp_path, caplog):
    """Killed mid-run: one warning naming it, later events drawn in the main process (after a clear of what it
    drew), the recording whole and readable."""
    ctx = StageContext(run=3, base_dir=tmp_path, live=False)
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", "draw_process": True}), ctx)
    sink.open()
    sink.begin()
    for i in range(4):
        sink.consume(kit.make_event(i))
    sink.drawer.flush()  # events 0-3 written out
    pid = sink.drawer.pid
    os.kill(pid, signal.SIGKILL)
    while sink.drawer.proc.poll() is None:
        time.sleep(0.01)
    for i in range(4, 8):  # the first drawn here has no cloud: the draw process's last one must not show
        sink.consume(kit.make_event(i, analysed=i != 4))
    assert sink.drawer is None
    sink.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "draw process" in w] == [
        f"the rerun draw process (pid {pid}) died (killed by SIGKILL); the live view draws its events in the main "
        "process from now on (what it had drawn and not yet written out is missing)"]
    path = tmp_path / "out" / "run_0003.rrd"
    assert rrdfile.unfinished(path) is None
    rows = read_rrd(path)
    drawn = sorted(r["event"] for r in event_rows(rows, "/event/cloud"))
    assert drawn[-3:] == [5, 6, 7] and latest_state(rows, "/event/cloud", 4) == {}  # 4 has no cloud: cleared
    assert latest_state(rows, "/event/cloud", 3) != {}  # what the draw process drew before it died
