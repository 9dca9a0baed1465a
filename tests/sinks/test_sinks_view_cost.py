"""The view's cheap per-event path keeps every count and compiles nothing while events flow.

The rerun sink counts every event it receives (pad occupancy, CoBo/AsAd
health) with compiled kernels, drawn or not, and logs nothing for an event
that is not drawn. These tests feed events made here, including awkward ones
(read-only trace matrices, pads off the plane, a pad read twice, CoBo numbers
past the compiled table, negative ids, empty events), and compare every count
with the numpy rule it stands for; and they prove, in a fresh interpreter,
that no kernel is compiled or loaded from numba's cache once the sink is open.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conduit.event import ASAD, COBO, PAD, SAMPLES, Event
from conduit.stage import StageContext
from conduit_stages.rerun_sink.params import RerunParams
from conduit_stages.rerun_sink.sink import RerunSink

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conduit_sinkkit as kit  # noqa: E402
from rrd_read import event_rows, latest_state, read_rrd  # noqa: E402

THRESHOLD = 30.0


def awkward_events(n_pads: int) -> list[Event]:
    """Sinkkit events, then events built to trip the compiled counting (see the module docstring)."""
    events = [kit.make_event(i) for i in range(12)]
    rng = np.random.default_rng(7)
    base = len(events)
    for k in range(10):
        traces = kit.make_traces(base + k).copy()
        rows = len(traces)
        traces[0, PAD] = traces[1, PAD]  # one pad read twice: counted once per event
        traces[2, PAD] = -1  # unmapped channel
        traces[3, PAD] = n_pads + 5 if n_pads + 5 < 32767 else 32767  # past the pad plane
        if k % 2:
            traces[4:, COBO] = 300 + k  # a CoBo number past the compiled (CoBo, AsAd) table
        if k % 3 == 0:
            traces[5, COBO] = -2  # negative key: never counted
        traces[:, SAMPLES] += rng.integers(-40, 40, size=(rows, 512)).astype(np.int16)
        if k % 2 == 0:
            traces.flags.writeable = False  # a frozen matrix is another argument type for numba
        events.append(Event(id=base + k, traces=traces, timestamp=1_000_000 + 12_345 * (base + k),
                            complete=k % 4 != 0, missing=((3, 2),) if k % 4 == 0 else (), run=3))
    events.append(Event(id=base + 10, traces=np.zeros((0, 517), dtype=np.int16), run=3))  # no trace at all
    return events


def expected_counts(events: list[Event], n_pads: int) -> tuple[np.ndarray, dict[tuple[int, int], int]]:
    """Occupancy and (CoBo, AsAd) counts by the numpy rules: a pad is hit when its largest sample is at least
    THRESHOLD above the median of every 32nd sample, once per event; a (CoBo, AsAd) has data when a row has it."""
    hits = np.zeros(n_pads, dtype=np.int64)
    pairs: dict[tuple[int, int], int] = {}
    for event in events:
        traces = event.traces
        if not len(traces):
            continue
        samples = traces[:, SAMPLES]
        height = samples.max(axis=1) - np.median(samples[:, ::32], axis=1)
        pads = traces[:, PAD].astype(np.int64)
        hit = np.unique(pads[(height >= THRESHOLD) & (pads >= 0) & (pads < n_pads)])
        hits[hit] += 1
        keys = traces[:, COBO].astype(np.int64) * 256 + traces[:, ASAD].astype(np.int64)
        for key in np.unique(keys[keys >= 0]).tolist():
            pairs[(key // 256, key % 256)] = pairs.get((key // 256, key % 256), 0) + 1
    return hits, pairs


@pytest.mark.parametrize("drawn", [True, False], ids=["every-event-drawn", "live-throttled"])
def test_every_received_event_is_counted_exactly_drawn_or_not(tmp_path, drawn):
    ctx = StageContext(run=3, base_dir=tmp_path, live=not drawn)
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", "occupancy_threshold": THRESHOLD,
                                               "max_display_rate": 0.01}), ctx)
    sink.open()
    sink.begin()
    events = awkward_events(sink.occupancy.hits.shape[0])
    for event in events:
        sink.consume(event)
    hits, pairs = expected_counts(events, sink.occupancy.hits.shape[0])
    np.testing.assert_array_equal(sink.occupancy.hits, hits)
    assert sink.occupancy.events == len(events) == 23
    assert sink.health.with_data == pairs
    assert any(c >= 256 for c, _ in pairs) and any(c < 256 for c, _ in pairs)  # both counting paths taken
    assert sink.health.events == 23 and sink.health.incomplete == 3 and sink.health.missing == {(3, 2): 3}
    assert sink.displayed == (23 if drawn else 1) and sink.consumed == 23
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    summaries = sorted(r["event"] for r in event_rows(rows, "/event/summary"))
    # Drawn: one header per event. Live: the first event is drawn, the second starts the stretch not drawn
    # (one marker); the other 21 log nothing.
    assert summaries == (list(range(23)) if drawn else [0, 1])


@pytest.mark.parametrize("apart", [False, True], ids=["drawn-here", "draw-process"])
def test_a_counted_event_not_drawn_sets_no_timeline_and_logs_nothing(tmp_path, monkeypatch, apart):
    """Nothing reaches Rerun for an event only counted; with a draw process, nothing is sent to it either."""
    from rerun import bindings

    ctx = StageContext(run=3, base_dir=tmp_path, live=True)
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", "max_display_rate": 1e-6,
                                               "histogram_interval": 1e9, "draw_process": apart}), ctx)
    sink.open()
    sink.begin()
    assert (sink.drawer is not None) == apart
    calls: list[str] = []
    # Every way the sink sets a timeline or logs a row reaches Rerun's binding through these.
    for name in ("reset_time", "set_time_sequence", "set_time_duration_nanos", "log_arrow_msg"):
        original = getattr(bindings, name)
        monkeypatch.setattr(bindings, name, lambda *a, _name=name, _original=original, **k: (
            calls.append(_name), _original(*a, **k))[1])
    sink.consume(kit.make_event(0))  # drawn (the first)
    sink.consume(kit.make_event(1))  # the marker of the stretch not drawn
    if apart:  # both went to the draw process
        assert sink.drawer.sent == 1 + 2  # its start, then the drawn event and the marker
    else:
        assert {"reset_time", "set_time_sequence", "set_time_duration_nanos", "log_arrow_msg"} <= set(calls)
    calls.clear()
    for i in range(2, 40):
        sink.consume(kit.make_event(i))
    assert calls == [] and sink.occupancy.events == 40
    assert not apart or sink.drawer.sent == 3
    sink.close()


_FRESH_PROCESS = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import numpy as np
from numba.core.registry import CPUDispatcher
import conduit_sinkkit as kit
from test_sinks_view_cost import awkward_events
from conduit.stage import StageContext
from conduit_stages.rerun_sink import kernels
from conduit_stages.rerun_sink.params import RerunParams
from conduit_stages.rerun_sink.sink import RerunSink

dispatchers = {name: f for name, f in vars(kernels).items() if isinstance(f, CPUDispatcher)}
state = lambda: {name: [str(s) for s in f.signatures] for name, f in dispatchers.items()}
untouched = state()
out = {"before_open": untouched}
for mode, live in (("drawn", False), ("throttled", True)):
    ctx = StageContext(run=3, base_dir=Path(sys.argv[1]) / mode, live=live)
    sink = RerunSink(RerunParams.from_mapping({"mode": "save", "max_display_rate": 2.0}), ctx)
    sink.open()
    opened = state()
    sink.begin()
    for event in awkward_events(sink.occupancy.hits.shape[0]):
        sink.consume(event)
    sink.close()
    out[mode] = {"opened": opened, "after_events": state(), "drawn": sink.displayed}
print(json.dumps(out))
"""


def test_no_kernel_is_compiled_or_loaded_while_events_flow(tmp_path):
    """In a fresh interpreter (nothing compiled yet): open() compiles or loads every kernel for every argument
    type, and consuming drawn and undrawn events, read-only matrices and empty events adds no signature."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".numba-cache"))
    run = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(tmp_path), str(HERE)], capture_output=True,
                         text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(not signatures for signatures in result["before_open"].values())  # a fresh process
    for mode in ("drawn", "throttled"):
        opened, after = result[mode]["opened"], result[mode]["after_events"]
        assert set(opened) >= {"_peak_heights", "count_hits", "count_pairs", "join_texts", "ramp_rgba"}
        assert all(opened[name] for name in opened), opened  # every kernel ready once open
        assert after == opened, {k: set(after[k]) - set(opened[k]) for k in after}
    assert result["drawn"]["drawn"] == 23


def _latest(rows, entity: str, event: int) -> dict | None:
    """What the viewer shows of ``entity`` at ``event``: its newest row at or before it, unless a recursive clear
    of /event came after that row (a clear and the rows of the same event: the rows were logged after it)."""
    data = [r for r in event_rows(rows, entity) if r["event"] <= event]
    clears = [r["event"] for r in event_rows(rows, "/event")
              if r.get("Clear:is_recursive") == [True] and r["event"] <= event]
    if not data or (clears and clears[-1] > data[-1]["event"]):
        return None
    return data[-1]


def test_a_drawn_event_clears_what_the_previous_one_drew_and_it_does_not(tmp_path):
    """Tracks, clusters and cloud of an event never show at a later drawn event that has none; the recursive
    clear is logged only then."""
    ctx = StageContext(run=3, base_dir=tmp_path, live=False)
    sink = RerunSink(RerunParams.from_mapping({"mode": "save"}), ctx)
    sink.open()
    sink.begin()
    plan = {0: True, 1: True, 2: False, 3: True, 4: False, 5: False, 6: True}  # analysed (cloud, tracks) or not
    for i, analysed in plan.items():
        sink.consume(kit.make_event(i, analysed=analysed))
    sink.close()
    rows = read_rrd(tmp_path / "out" / "run_0003.rrd")
    clears = sorted(r["event"] for r in event_rows(rows, "/event") if r.get("Clear:is_recursive") == [True])
    assert clears == [2, 4]  # after an analysed event; 3, 5 and 6 draw all that the event before drew
    for i, analysed in plan.items():
        for entity in ("/event/cloud", "/event/clusters", "/event/tracks"):
            shown = _latest(rows, entity, i)
            assert (shown is not None and shown["event"] == i) if analysed else shown is None, (entity, i)
        # the track numbers (after the 3-D caption, in its entity) likewise
        numbers = latest_state(rows, "/event/caption", i)["Points3D:labels"][1:]
        assert numbers == ([f"#{k}" for k in range(len(kit.make_event(i).artifacts["estimates"]))] if analysed
                           else []), i
        for entity in ("/event/summary", "/event/caption", "/event/pads/hits", "/event/pads/frame",
                       "/event/traces/plot"):
            assert _latest(rows, entity, i)["event"] == i, (entity, i)
        # The 3-D colour bar's numbers are logged when the colour scale changes, and again after a clear
        assert _latest(rows, "/event/colorbar/labels", i) is not None, i


def test_constants_logged_once_leave_the_viewer_showing_exactly_what_complete_rows_show(tmp_path, monkeypatch):
    """Components made once (radii, flags, draw orders, anchors) are sent to an entity once and again only after
    a clear: at every event, every entity's latest-at state equals that of a recording whose rows are complete.
    The lean recording is drawn by the draw process (and its rows appended to the recording), the complete one
    in the sink's own process."""
    from conduit_stages.rerun_sink import arrow

    plan = [True, True, False, True, True, False, False, True] * 3  # analysed or not: clears come and go
    recordings = {}
    send_row = arrow.send_row
    for complete in (False, True):
        ctx = StageContext(run=3, base_dir=tmp_path / str(complete), live=False)
        sink = RerunSink(RerunParams.from_mapping({"mode": "save", "refresh_events": 5,
                                                   "draw_process": not complete}), ctx)
        if complete:  # every row carries every component
            monkeypatch.setattr(arrow, "send_row", lambda native, path, row, held, static=False: send_row(
                native, path, row, None, static))
        sink.open()
        sink.begin()
        for i, analysed in enumerate(plan):
            sink.consume(kit.make_event(i, analysed=analysed))
        sink.close()
        recordings[complete] = read_rrd(tmp_path / str(complete) / "out" / "run_0003.rrd")
    lean, full = recordings[False], recordings[True]
    assert set(lean) == set(full)
    per_event = sorted(e for e in full if e.startswith("/event/"))
    assert len(per_event) >= 9  # (the track numbers are in the 3-D caption's entity)
    for entity in per_event:
        for i in range(len(plan)):
            assert latest_state(lean, entity, i) == latest_state(full, entity, i), (entity, i)
    # and fewer components went out: e.g. a caption's anchor, radius, colour and flag once, its text each event
    lean_caption, full_caption = event_rows(lean, "/event/caption"), event_rows(full, "/event/caption")
    assert len(lean_caption) == len(full_caption) == len(plan)
    assert sum(len([k for k in r if ":" in k and r[k] is not None]) for r in lean_caption) < \
        sum(len([k for k in r if ":" in k and r[k] is not None]) for r in full_caption)
