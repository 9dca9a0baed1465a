"""The engine's main-process paths: sinks fed in batches (a batch waits briefly for more events), inline
sinks called in the event loop, and an event only cloudpickle can send to a worker."""

from __future__ import annotations


import pytest
import trio

from conduit.engine.runner import Engine, run_pipeline
from conduit_test_support import installed_testkit, pipeline_from_tables

pipeline = pipeline_from_tables


@pytest.fixture
def kit(plugin_site):
    """The testkit plugin and the engine kit (sinks noting their thread, a source carrying a lambda)."""
    with installed_testkit(plugin_site, "conduit-engine-kit", "conduit_engine_kit", "enginekit") as site:
        yield site


SINKS = """
[[stage]]
use = "testkit.double"

[[stage]]
use = "enginekit.threads"
path = "threaded.txt"

[[stage]]
use = "enginekit.threads_inline"
path = "inline.txt"
"""


def _lines(path):
    return path.read_text().split("\n")[:-1]


def test_inline_and_threaded_sinks_get_every_event_in_order_and_the_reset_between_the_same_two(kit, tmp_path):
    """A live source at 1,000 events/s (events come one at a time, so the sinks' batches wait for more): both
    lossless sinks see all 300 events in order, the inline one in the main thread (the event loop), the other
    in a thread; a reset asked while event 100 is delivered reaches both right before the event it is due
    before, never inside a batch."""
    p = pipeline(tmp_path, 'kind = "counting_live"\nevents = 300\nrate = 1000', SINKS, "workers = 0")
    asked: list[int] = []

    def on_event(event):
        if event.id == 100:
            asked.append(engine.request_reset("test"))

    engine = Engine(p, handle_signals=False, on_event=on_event)
    summary = trio.run(engine.run)
    assert (summary.received, summary.delivered, summary.dropped, summary.error) == (300, 300, 0, None)
    assert summary.sink_dropped == {} and summary.not_written("enginekit.threads_inline") == 0
    (due,) = asked
    assert 100 < due < 300
    for name, where in (("threaded.txt", "thread"), ("inline.txt", "main")):
        lines = _lines(tmp_path / name)
        assert lines.index("reset") == due and len(lines) == 301
        assert [line for line in lines if line != "reset"] == [f"{i} {where}" for i in range(300)]
    assert summary.stage_ms["enginekit.threads"][0] == summary.stage_ms["enginekit.threads_inline"][0] == 300


def test_an_inline_sink_that_stops_gets_nothing_after_it_counted(kit, tmp_path):
    """StopRun from an inline sink on event 40: it kept 0..39, every later event delivered is counted as not
    passed to it, the threaded sink beside it still gets every event delivered, and the run ends in error."""
    stages = SINKS.replace('path = "inline.txt"', 'path = "inline.txt"\nstop_at = 40')
    p = pipeline(tmp_path, 'kind = "counting_live"\nevents = 300\nrate = 1000', stages, "workers = 0")
    summary = run_pipeline(p, handle_signals=False)
    assert _lines(tmp_path / "inline.txt") == [f"{i} main" for i in range(40)]
    assert len(_lines(tmp_path / "threaded.txt")) == summary.delivered > 40
    assert summary.failed == {"enginekit.threads_inline": 1}
    # A count of zero is left out of the summary (the run may end right after event 40 under load).
    dropped_after_stop = summary.delivered - 41
    assert summary.sink_dropped == ({"enginekit.threads_inline": dropped_after_stop} if dropped_after_stop else {})
    assert summary.error == "enginekit.threads_inline: stopped at event 40"


def test_events_only_cloudpickle_can_send_still_reach_the_workers(kit, tmp_path):
    """Every event carries a lambda (the C pickler refuses it): the engine falls back to trio-parallel's
    cloudpickle, and with 2 worker processes and policy wait every event is analysed with it."""
    p = pipeline(tmp_path, 'kind = "enginekit_fn"\nevents = 40\nrate = 400', """
[[stage]]
use = "enginekit.apply_fn"

[[stage]]
use = "enginekit.scaled"
""", 'workers = 2\npolicy = "wait"')
    summary = run_pipeline(p, handle_signals=False)
    assert (summary.received, summary.analysed, summary.failed, summary.error) == (40, 40, {}, None)
    assert _lines(tmp_path / "scaled.txt") == [f"{i} 1 {3 * i}" for i in range(40)]
