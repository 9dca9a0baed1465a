"""Loud, counted losses and failure semantics (issue 14, items 2 and 4).

What each stage dropped is counted by reason and shown (summary, status line, control panel, HDF5 run
file); a stage that produces nothing on every event is warned about once; a failed stage marks the
event and the stages needing its outputs are not run, counted; StopRun and ``on_stage_error = "stop"``
stop within a few events; a stage failing on every event, or a sink losing events at close, fails the
run.
"""

from __future__ import annotations

import logging
import re
import resource
import signal
import subprocess

import h5py
import numpy as np
import pytest
import trio

from conduit.engine.metrics import Metrics
from conduit.engine.outcomes import WARN_AFTER_EVENTS, StageOutcomes
from conduit.engine.runner import Engine, run_pipeline
from conduit.engine.status import format_status
from conduit.engine.summary import format_summary
from conduit.event import Event
from conduit_test_support import VENV_BIN, installed_testkit, pipeline_from_tables, read_collected

pipeline = pipeline_from_tables


@pytest.fixture
def kit(plugin_site):
    """The testkit plugin and the outcomes kit (stages that fail, stop, drop, give nothing), installed."""
    with installed_testkit(plugin_site, "conduit-outcomes-kit", "conduit_outcomes_kit", "outcomes") as site:
        yield site


FAILING_CHAIN = """
[[stage]]
use = "testkit.double"

[[stage]]
use = "outcomes.always_fails"

[[stage]]
use = "outcomes.needs_never"

[[stage]]
use = "outcomes.drop"
items = 5
keep_below = 2

[[stage]]
use = "testkit.collect"
path = "out.jsonl"
"""


# ------------------------------------------------------------------ item 4: a failed stage marks the event


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failed_stage_marks_the_event_and_the_stages_needing_it_are_not_run_counted(kit, tmp_path, workers):
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 12', FAILING_CHAIN, f"workers = {workers}")
    events: list[Event] = []
    summary = run_pipeline(p, handle_signals=False, on_event=events.append)
    assert [e.id for e in events] == list(range(12))
    for e in events:  # what a sink sees: the failure, the stage not run and why, the counts
        assert e.failures == {"outcomes.always_fails": "RuntimeError: this stage cannot work"}
        assert e.skipped_stages == {"outcomes.needs_never": "needs 'never': stage outcomes.always_fails failed"}
        assert e.failed and e.analysed
        assert e.counts == {"outcomes.drop": {"even_index": 2, "odd_index": 1}}  # items 2, 4 and 3 dropped
        assert e.artifacts["doubled"] == 2 * e.id and e.artifacts["kept"] == [0, 1]  # the others went on
        assert "never" not in e.artifacts and "after_never" not in e.artifacts
    assert summary.failed == {"outcomes.always_fails": 12}
    s = summary.stages
    assert s["outcomes.always_fails"] == {"events": 12, "failed": 12, "skipped": 0, "empty": 0, "counts": {}}
    assert s["outcomes.needs_never"] == {"events": 0, "failed": 0, "skipped": 12, "empty": 0, "counts": {}}
    assert s["outcomes.drop"] == {"events": 12, "failed": 0, "skipped": 0, "empty": 0,
                                  "counts": {"even_index": 24, "odd_index": 12}}
    assert summary.exit_code == 0  # the run goes on (on_stage_error = "continue"), nothing else asked
    text = format_summary(summary)
    assert "stage                           calls  failed  not run  nothing   mean ms    p99 ms" in text
    row = next(line for line in text.splitlines() if line.startswith("outcomes.needs_never"))
    assert row.split()[:5] == ["outcomes.needs_never", "0", "0", "12", "0"]
    assert "counted by stages: dropped or without a result, by reason" in text
    assert "  outcomes.drop: 36 (even_index 24, odd_index 12)" in text


def test_a_stage_failing_on_every_event_fails_the_run_when_asked(kit, tmp_path):
    stages = FAILING_CHAIN.replace('use = "outcomes.always_fails"', 'use = "outcomes.always_fails"', 1)
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 9', stages, "workers = 0\nfail_if_stage_always_fails = true")
    summary = run_pipeline(p, handle_signals=False)
    assert summary.exit_code == 1
    assert summary.error == ("stage outcomes.always_fails failed on every one of the 9 events it ran on "
                             "([engine] fail_if_stage_always_fails = true)")
    records, closed = read_collected(tmp_path / "out.jsonl")
    assert closed and len(records) == 9  # the run went on to the end all the same


def test_a_stage_failing_on_some_events_does_not_fail_the_run(kit, tmp_path):
    stages = """
    [[stage]]
    use = "testkit.double"

    [[stage]]
    use = "testkit.fail"
    fail_ids = [0, 1, 2, 3, 5]
    """
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 6', stages, "workers = 0\nfail_if_stage_always_fails = true")
    summary = run_pipeline(p, handle_signals=False)
    assert summary.failed == {"testkit.fail": 5} and summary.exit_code == 0 and summary.error is None


def test_a_worker_process_that_dies_marks_its_event_and_the_run_goes_on(kit, tmp_path):
    stages = """
    [[stage]]
    use = "outcomes.crash"
    at = 3

    [[stage]]
    use = "testkit.double"
    """
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 8', stages, "workers = 2\nmax_in_flight = 1")
    events: list[Event] = []
    summary = run_pipeline(p, handle_signals=False, on_event=events.append)
    assert [e.id for e in events] == list(range(8)) and summary.exit_code == 0
    assert summary.failed == {"engine.worker": 1} and summary.analysed == 7
    crashed = events[3]
    assert not crashed.analysed and list(crashed.failures) == ["engine.worker"] and crashed.failed
    assert all(e.analysed and not e.failed and e.artifacts["doubled"] == 2 * e.id for e in events if e.id != 3)


@pytest.mark.parametrize("workers, in_flight", [(1, 3), (2, 6)])
def test_events_queued_behind_a_dying_worker_are_analysed_by_its_successor(kit, tmp_path, caplog, workers,
                                                                          in_flight):
    """Jobs wait in a worker's pipe behind the one it runs: when the worker dies on event 5, only event 5
    fails; the events queued behind it, never started, go to another worker (or the replacement) and are
    analysed; the death is logged in one line naming the worker and how it ended."""
    stages = """
    [[stage]]
    use = "outcomes.crash"
    at = 5

    [[stage]]
    use = "testkit.double"
    """
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 16', stages,
                 f'workers = {workers}\nmax_in_flight = {in_flight}\npolicy = "wait"')
    events: list[Event] = []
    with caplog.at_level("ERROR", logger="conduit.engine"):
        summary = run_pipeline(p, handle_signals=False, on_event=events.append)
    assert [e.id for e in events] == list(range(16)) and summary.exit_code == 0
    assert summary.failed == {"engine.worker": 1} and summary.analysed == 15
    assert list(events[5].failures) == ["engine.worker"] and not events[5].analysed
    assert all(e.analysed and e.artifacts["doubled"] == 2 * e.id for e in events if e.id != 5)
    deaths = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert len(deaths) == 1 and "(exit status 3); a new one takes its place" in deaths[0]
    assert deaths[0].startswith("event 5: analysis worker failed: WorkerDied: analysis worker ")


# ------------------------------------------------------------------ item 4: stopping within a few events

SLOW_THEN_FAIL = """
[[stage]]
use = "testkit.slow"
seconds = 0.004

[[stage]]
use = "testkit.double"

[[stage]]
use = "testkit.fail"
fail_ids = [5]

[[stage]]
use = "testkit.collect"
path = "out.jsonl"
lossless = true
"""


def test_on_stage_error_stop_stops_within_a_few_events_with_a_full_queue(kit, tmp_path, caplog):
    """The source fills the 256-event queue long before event 5 is analysed: analysis stops at once (events in
    flight finish); what is queued is recorded without analysis, counted and said."""
    caplog.set_level(logging.INFO, logger="conduit")
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 5000', SLOW_THEN_FAIL,
                 'workers = 0\non_stage_error = "stop"\nmax_in_flight = 2')
    assert p.engine.queue_size == 256
    summary = run_pipeline(p, handle_signals=False)
    assert summary.exit_code == 1 and "stage testkit.fail failed on event 5" in summary.error
    assert summary.received > 100  # the queue was full when the stage failed ...
    assert 6 <= summary.analysed <= 6 + 1  # ... and no more than the other event in flight was analysed after it
    assert summary.halted == summary.received - summary.analysed
    records, closed = read_collected(tmp_path / "out.jsonl")
    assert closed and len(records) == summary.received == summary.delivered  # nothing received is lost
    assert sum(r["analysed"] for r in records) == summary.analysed
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped after an error")]
    in_flight = summary.analysed - 6
    assert said == [f"stopped after an error: {in_flight} events in flight finished their analysis, "
                    f"{summary.halted} events still queued were recorded without analysis"]
    assert f"events not analysed (stopped by an error) {summary.halted:>12}" in format_summary(summary)


def test_stoprun_in_a_transform_stage_stops_the_run(kit, tmp_path):
    stages = """
    [[stage]]
    use = "testkit.slow"
    seconds = 0.004

    [[stage]]
    use = "outcomes.stop"
    at = 5

    [[stage]]
    use = "testkit.collect"
    path = "out.jsonl"
    lossless = true
    """
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 5000', stages, "workers = 2\nmax_in_flight = 2")
    events: list[Event] = []
    summary = run_pipeline(p, handle_signals=False, on_event=events.append)
    assert summary.exit_code == 1
    assert summary.error == "stage outcomes.stop: the calibration ran out at event 5"
    # Event 5 and at most one more in flight; with two processes, later events may finish before event 5's
    # result is back (on a busy machine the other worker may run through a few dozen 4 ms events while the
    # one holding event 5 waits for a CPU): some, never the 256-event queue.
    assert 6 <= summary.analysed <= 6 + 40 and summary.halted == summary.received - summary.analysed
    # The run stopped early (the source had 5000 events to give); how many were queued by then depends on the load.
    assert summary.received < 5000 and summary.halted >= 1
    assert events[5].failures == {"outcomes.stop": "StopRun: the calibration ran out at event 5"}
    assert not any(e.analysed for e in events[summary.analysed:])


# ------------------------------------------------------------------ item 2: counted, shown, warned

BLOB = """
[[stage]]
use = "pointcloud"

[[stage]]
use = "outcomes.one_blob"

[[stage]]
use = "estimate"

[[stage]]
use = "hdf5"
path = "run_{run:04d}.h5"
traces = false
flush_interval = 0.001
"""


def test_every_cluster_estimate_rejects_is_counted_shown_recorded_and_warned_about_once(kit, tmp_path, caplog):
    """A clusterer written from the artifact shapes alone (one cluster, direction NONE): estimate gives no track;
    every rejected cluster is counted by reason, in the summary, the status line, the panel's status and the
    HDF5 run file, and one warning says so."""
    caplog.set_level(logging.WARNING, logger="conduit")
    p = pipeline(tmp_path, 'kind = "simulate"\npreset = "dp"\nevents = 25\nseed = 3\nrun = 4', BLOB)
    engine = Engine(p, handle_signals=False)
    events: list[Event] = []
    engine.on_event = events.append
    summary = trio.run(engine.run)
    assert summary.exit_code == 0 and len(events) == 25
    # Each event's one cluster is rejected: 'too_few_points' below estimate's 30 points, else 'direction_none'.
    sizes = np.array([len(e.artifacts["cloud"]) for e in events])
    assert all(e.artifacts["clusters"].count == 1 and len(e.artifacts["estimates"]) == 0 for e in events)
    few = int((sizes < 30).sum())
    expected = {k: v for k, v in {"direction_none": 25 - few, "too_few_points": few}.items() if v}
    assert summary.stages["estimate"] == {"events": 25, "failed": 0, "skipped": 0, "empty": 25, "counts": expected}
    assert [e.counts for e in events] == [{"estimate": {"too_few_points" if n < 30 else "direction_none": 1}}
                                          for n in sizes]
    # the summary
    text = format_summary(summary)
    listed = ", ".join(f"{k} {v}" for k, v in sorted(expected.items(), key=lambda kv: -kv[1]))
    assert f"  estimate: 25 ({listed})" in text
    # the status line and the control panel's status (the engine's last snapshot)
    assert "estimate: " + ", ".join(f"{k} {v}" for k, v in sorted(expected.items(), key=lambda kv: -kv[1])) \
        in format_status(engine._snapshot(25, final=True))
    status = engine.control.status()
    estimate = next(s for s in status["stages"] if s["name"] == "estimate")
    assert (estimate["calls"], estimate["empty"], estimate["skipped"], estimate["counts"]) == (25, 25, 0, expected)
    from conduit_panel.commands.status import format_status as status_page  # `conduit status`

    page = status_page(status).splitlines()
    row = next(i for i, line in enumerate(page) if line.startswith("stage    estimate "))
    assert page[row].endswith("failures 0  not run 0  gave nothing 25") and page[row + 1].split() == \
        ["counted:", *", ".join(f"{k} {v}" for k, v in sorted(expected.items(), key=lambda kv: -kv[1])).split()]
    # the HDF5 run file
    from conduit_stages.hdf5_sink.losses import read_stage_attributes

    with h5py.File(tmp_path / "run_0004.h5", "r") as f:
        recorded = read_stage_attributes(f)
        assert len(f["estimates"]) == 0 and "stage_failures" not in f
    assert recorded["estimate"] == summary.stages["estimate"]
    # one warning, with the counts so far (at the first check after 20 events, or at the end) and where the
    # clusters came from
    warnings = [r.getMessage() for r in caplog.records if "produced nothing" in r.getMessage()]
    assert len(warnings) == 1
    n = int(re.search(r"on any of the (\d+) events", warnings[0]).group(1))
    assert WARN_AFTER_EVENTS <= n <= 25
    few = int((sizes[:n] < 30).sum())
    so_far = {k: v for k, v in {"direction_none": n - few, "too_few_points": few}.items() if v}
    listed = ", ".join(f"{k} {v}" for k, v in sorted(so_far.items(), key=lambda kv: -kv[1]))
    assert warnings == [f"stage estimate produced nothing on any of the {n} events it ran on; it counted {n}: "
                        f"{listed} (its input: cloud from pointcloud, clusters from outcomes.one_blob) "
                        "(docs/writing-a-plugin.md, 'Counting what you drop')"]


def test_the_warning_comes_once_then_at_most_every_interval_and_only_for_the_first_empty_stage(caplog):
    caplog.set_level(logging.WARNING, logger="conduit")
    now = [0.0]
    metrics = Metrics()
    outcomes = StageOutcomes(metrics, [("cluster.mine", ("cloud",), ("clusters",)),
                                       ("estimate", ("cloud", "clusters"), ("estimates",)),
                                       ("kinematics", ("estimates",), ("kinematics",))], clock=lambda: now[0])

    def events(n: int, **empty: bool) -> None:
        for name in ("cluster.mine", "estimate", "kinematics"):
            t = metrics.times(name)
            for _ in range(n):
                t.add(0.001)
                t.empty += bool(empty.get(name.replace(".", "_")))

    def warned() -> list[str]:
        out = [r.getMessage().split(" produced")[0] for r in caplog.records]
        caplog.clear()
        return out

    events(WARN_AFTER_EVENTS - 1, cluster_mine=True, estimate=True, kinematics=True)
    outcomes.check()
    assert warned() == []  # too early to tell
    events(1, cluster_mine=True, estimate=True, kinematics=True)
    outcomes.check()
    assert warned() == ["stage cluster.mine"]  # the stages after it give nothing because of it: not news
    outcomes.check()
    now[0] += 299.0
    outcomes.check()
    assert warned() == []
    now[0] += 1.0
    outcomes.check()
    assert warned() == ["stage cluster.mine"]  # once per interval while it lasts
    outcomes.check(final=True)
    assert warned() == []  # already said
    # a stage dropping what it got is news even after an empty one
    metrics.times("estimate").add_counts({"direction_none": 3})
    now[0] += 300.0
    outcomes.check()
    assert warned() == ["stage cluster.mine", "stage estimate"]
    # once a stage gives something, no more warnings about it
    events(1, cluster_mine=False, estimate=True, kinematics=True)
    now[0] += 300.0
    outcomes.check()
    assert warned() == ["stage estimate"]


# ------------------------------------------------------------------ item 4: failure marks in HDF5


def test_failure_marks_and_stage_counts_are_recorded_in_the_hdf5_run_file(kit, tmp_path):
    stages = FAILING_CHAIN.replace('use = "testkit.collect"\npath = "out.jsonl"',
                                   'use = "hdf5"\npath = "run_{run}.h5"\nflush_interval = 0.001')
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 7', stages, "workers = 0")
    summary = run_pipeline(p, handle_signals=False)
    assert summary.exit_code == 0
    from conduit_stages.hdf5_sink.losses import read_stage_attributes

    with h5py.File(tmp_path / "run_7.h5", "r") as f:
        rows = f["stage_failures"][...]
        recorded = read_stage_attributes(f)
        assert len(f["events"]) == 7
    as_text = [(int(r["event"]), r["stage"].decode(), r["outcome"].decode(), r["error"].decode()) for r in rows]
    assert as_text == [row for i in range(7) for row in (
        (i, "outcomes.always_fails", "failed", "RuntimeError: this stage cannot work"),
        (i, "outcomes.needs_never", "not run", "needs 'never': stage outcomes.always_fails failed"))]
    for name in ("outcomes.always_fails", "outcomes.needs_never", "outcomes.drop"):
        assert recorded[name] == summary.stages[name]
    assert recorded["outcomes.drop"]["counts"] == {"even_index": 14, "odd_index": 7}


# ------------------------------------------------------------------ a sink losing events at close


def test_a_sink_losing_events_in_its_final_write_fails_the_run(kit, tmp_path):
    """The hdf5 sink flushes only at close (long interval, large batches); its store's writes pass the file size
    limit (RLIMIT_FSIZE) at the 5th event: the 4 written whole before are kept (w26b), the 8 others are lost,
    counted as sink_hdf5_lost at the final commit, and the run must not exit 0."""
    stages = """
    [[stage]]
    use = "testkit.double"

    [[stage]]
    use = "hdf5"
    path = "lost/run_{run}.h5"
    flush_interval = 3600
    max_batch_mb = 1000
    """
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 12\ntraces = 200', stages, "workers = 0")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    res = subprocess.run([str(VENV_BIN / "conduit"), "run", str(p.path)], capture_output=True, text=True,
                         preexec_fn=limit, timeout=300, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    errors = [line for line in res.stdout.splitlines() if line.startswith("error:")]
    assert errors == ["error: sink hdf5: 8 events it took were lost in a failed write"]
    assert "sink hdf5: 8 events not written (8 lost in a failed write)" in res.stdout
    assert "file too large" in res.stderr


def test_a_sinks_time_is_its_threads_cpu_time_not_the_wall_time_of_the_call(kit, tmp_path):
    """A sink that waits 0.1 s per event (sleeping: no CPU) is charged its thread's CPU time, far below the wait:
    the summary's sink rows are what the sink costs, not the time it spent waiting (for the GIL, the disk)."""
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 4', """
[[stage]]
use = "testkit.collect"
path = "out.jsonl"
lossless = true
delay = 0.1
""", "workers = 0")
    summary = run_pipeline(p, handle_signals=False)
    calls, mean_ms, _ = summary.stage_ms["testkit.collect"]
    assert calls == 4 and summary.delivered == 4
    assert 0 <= mean_ms < 50  # 100 ms asleep per call, not counted
    assert "sinks, CPU time of the sink's own thread" in format_summary(summary)


def test_a_sink_stopping_in_the_middle_of_a_batch_gets_nothing_after_it_counted(kit, tmp_path):
    """The sink is slow on event 0, so the next events wait in its queue and reach it several per call; it raises
    StopRun on event 3: it consumed exactly 0, 1, 2; every later event delivered is counted as not passed to it."""
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 40', """
[[stage]]
use = "outcomes.slow_stop_sink"
at = 3
path = "consumed.txt"
""", "workers = 0")
    summary = run_pipeline(p, handle_signals=False)
    assert (tmp_path / "consumed.txt").read_text().split() == ["0", "1", "2"]
    assert summary.failed == {"outcomes.slow_stop_sink": 1}
    assert summary.stage_ms["outcomes.slow_stop_sink"][0] == 4  # 0, 1, 2 and the one that stopped it
    assert summary.sink_dropped == {"outcomes.slow_stop_sink": summary.delivered - 4} and summary.delivered > 4
    assert summary.error == "outcomes.slow_stop_sink: the disk is full at event 3"


def test_consume_all_stops_at_the_first_stoprun_and_times_each_event():
    from conduit.engine.runner import _consume_all
    from conduit.stage import StopRun

    seen = []

    class Sink:
        def consume(self, event):
            seen.append(event)
            if event == 2:
                raise ValueError("bad event")
            if event == 4:
                raise StopRun("cannot go on")

    results = _consume_all(Sink(), [1, 2, 3, 4, 5, 6])
    assert seen == [1, 2, 3, 4]
    assert [type(err).__name__ if err else None for _, err in results] == [None, "ValueError", None, "StopRun"]
    assert all(seconds >= 0 for seconds, _ in results)
