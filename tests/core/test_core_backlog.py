"""The analysis backlog (``[engine] backlog`` / ``backlog_ms``, policy skip): events that find every analysis
place taken wait a bounded time for one, oldest first; skipped, counted by reason, only when the backlog is full
or they waited too long. Counts are exact: a gate stage holds the first events' places until the test says."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from conduit.engine.backlog import FULL, WAITED, AnalysisBacklog
from conduit.engine.runner import Engine, run_pipeline
from conduit.engine.status import format_status
from conduit.engine.summary import format_summary
from conduit_test_support import installed_testkit, pipeline_from_tables, read_collected

pipeline = pipeline_from_tables


def _gated(release, then: str = "") -> str:
    return f"""
[[stage]]
use = "testkit.double"

[[stage]]
use = "testkit.gate"
release_file = "{release}"
{then}
[[stage]]
use = "testkit.collect"
path = "out_{{run}}.jsonl"
lossless = true
"""


# ------------------------------------------------------------------ the backlog alone (trio's mock clock)

def test_backlog_places_oldest_first_and_expires_exactly_at_its_bound():
    """Two places, a backlog of 3 events for 0.1 s: the 4th offer is refused (full); a place given back at
    t = 0.05 goes to the oldest; the two others expire at t = 0.1, together."""
    log: list[tuple[str, int, float]] = []

    async def main():
        places = trio.Semaphore(2)
        backlog = AnalysisBacklog(3, 0.1)
        assert backlog.enabled and not AnalysisBacklog(0, 0.1).enabled and not AnalysisBacklog(3, 0).enabled

        async def place(event, spec, waited):
            log.append(("placed", event, round(trio.current_time(), 6)))
            assert spec == f"spec{event}" and waited == pytest.approx(trio.current_time())

        async def expire(event):
            log.append(("expired", event, round(trio.current_time(), 6)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(backlog.feed, places, place, expire)
            places.acquire_nowait()
            places.acquire_nowait()  # both places taken
            assert [backlog.offer(i, f"spec{i}") for i in range(4)] == [True, True, True, False]
            assert len(backlog) == 3 and backlog.peak == 3
            await trio.sleep(0.05)
            places.release()
            await trio.sleep(0.2)
            backlog.close()
        assert len(backlog) == 0 and not backlog.offer(9, "spec9")  # closed

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert log == [("placed", 0, 0.05), ("expired", 1, 0.1), ("expired", 2, 0.1)]


def test_backlog_close_waits_for_every_waiting_event():
    """Closed with events waiting: feed() returns only once each is placed or expired."""
    seen: list[str] = []

    async def main():
        places = trio.Semaphore(0)
        backlog = AnalysisBacklog(2, 0.5)

        async def place(event, spec, waited):
            seen.append(f"placed {event}")

        async def expire(event):
            seen.append(f"expired {event}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(backlog.feed, places, place, expire)
            backlog.offer("a", None)
            backlog.offer("b", None)
            backlog.close()
            await trio.sleep(0.1)
            places.release()
        assert trio.current_time() == pytest.approx(0.5)  # "b" waited its whole bound

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == ["placed a", "expired b"]


# ------------------------------------------------------------------ in the engine

@pytest.mark.parametrize("workers, places", [(0, 1), (2, 8)])
def test_a_burst_beyond_places_and_backlog_is_skipped_exactly(plugin_site, tmp_path, workers, places):
    """200 events at once, every place held until all are dispatched, a backlog of 20 (bound far away):
    exactly 200 - 20 - places are skipped (reason: full), the 20 that waited are analysed after the held ones,
    every event is recorded once, in order."""
    release = tmp_path / "release"
    engine = f"workers = {workers}\nbacklog = 20\nbacklog_ms = 2000" + ("\nmax_in_flight = 1" if not workers else "")
    p = pipeline(tmp_path, f'kind = "counting_live"\nevents = 200\nrelease_file = "{release}"', _gated(release),
                 engine)
    summary = run_pipeline(p, handle_signals=False)
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed and [r["id"] for r in records] == list(range(200))
    assert (summary.received, summary.analysed, summary.skipped, summary.dropped) == (200, places + 20,
                                                                                      200 - places - 20, 0)
    assert summary.skipped_by == {FULL: 200 - places - 20}
    assert (summary.backlogged, summary.backlog_peak) == (20, 20)
    assert [r["id"] for r in records if r["analysed"]] == list(range(places + 20))
    text = format_summary(summary)
    assert _row(text, "every analysis place taken, backlog full") == 200 - places - 20
    assert _row(text, "events analysed after waiting (most 20)") == 20 and "waited backlog_ms" not in text


def _row(text: str, name: str) -> int:
    """The count on the summary's row ``name``."""
    (line,) = [line for line in text.splitlines() if line.strip().startswith(name)]
    return int(line.split()[-1])


def _run_until(p, condition, release):
    """Run ``p`` (handle_signals off); create ``release`` once ``condition(engine)`` holds. The summary."""
    engine = Engine(p, handle_signals=False)
    out = {}

    async def main():
        async def watch():
            while not condition(engine):
                await trio.sleep(0.002)
            release.touch()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            out["summary"] = await engine.run()
            nursery.cancel_scope.cancel()

    trio.run(main)
    return engine, out["summary"]


def test_events_that_waited_too_long_are_skipped_and_counted_apart(plugin_site, tmp_path):
    """The place stays held until the 20 waiting events have each waited their 30 ms: they are skipped
    (reason: waited), the rest of the burst skipped as full; all recorded once, in order, the reasons shown."""
    release = tmp_path / "release"
    p = pipeline(tmp_path, 'kind = "counting_live"\nevents = 200', _gated(release),
                 "workers = 0\nmax_in_flight = 1\nbacklog = 20\nbacklog_ms = 30")
    engine, summary = _run_until(p, lambda e: e.metrics.skipped_by.get(WAITED, 0) == 20, release)
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed and [r["id"] for r in records] == list(range(200))
    assert (summary.received, summary.analysed, summary.skipped) == (200, 1, 199)
    assert summary.skipped_by == {FULL: 179, WAITED: 20} and summary.backlogged == 0
    assert [r["id"] for r in records if r["analysed"]] == [0]
    text = format_summary(summary)
    assert _row(text, "every analysis place taken, backlog full") == 179
    assert _row(text, "waited backlog_ms, no place free") == 20
    assert "skipped 199 (20 waited too long)" in format_status(engine._snapshot(None))
    status = engine.control.status()
    assert status["events"]["skipped_by"] == {FULL: 179, WAITED: 20}
    assert (status["queue"]["backlog_size"], status["queue"]["backlog_ms"]) == (20, 30.0)


def test_max_events_counts_the_waiting_events_once(plugin_site, tmp_path):
    """``--max-events 50`` with a burst: 50 received, the 20 waiting ones analysed when the place frees, 29
    skipped; nothing after the 50th recorded."""
    release = tmp_path / "release"
    p = pipeline(tmp_path, 'kind = "counting_live"\nevents = 200', _gated(release),
                 "workers = 0\nmax_in_flight = 1\nbacklog = 20\nbacklog_ms = 2000\nmax_events = 50")
    _, summary = _run_until(p, lambda e: e.metrics.received == 50 and len(e._backlog) == 20, release)
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed and [r["id"] for r in records] == list(range(50))
    assert (summary.received, summary.analysed, summary.skipped, summary.backlogged) == (50, 21, 29, 20)


def test_an_error_that_stops_the_run_records_the_waiting_events_unanalysed(plugin_site, tmp_path):
    """Event 0 raises StopRun while 20 events wait: they are recorded without analysis, counted as halted (as
    the queued events are), not as skipped."""
    release = tmp_path / "release"
    stop = '\n[[stage]]\nuse = "outcomes.stop"\nat = 0\n'
    with installed_testkit(plugin_site, "conduit-outcomes-kit", "conduit_outcomes_kit", "outcomes"):
        p = pipeline(tmp_path, f'kind = "counting_live"\nevents = 200\nrelease_file = "{release}"',
                     _gated(release, stop), "workers = 0\nmax_in_flight = 1\nbacklog = 20\nbacklog_ms = 2000")
        summary = run_pipeline(p, handle_signals=False)
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed and [r["id"] for r in records] == list(range(200))
    assert summary.exit_code == 1 and summary.error == "stage outcomes.stop: the calibration ran out at event 0"
    assert (summary.analysed, summary.halted, summary.skipped, summary.backlogged) == (1, 20, 179, 0)
    assert summary.skipped_by == {FULL: 179}


def test_wait_policy_ignores_the_backlog(plugin_site, tmp_path):
    """``policy = "wait"``: every event analysed, nothing skipped, the backlog never used."""
    stages = '[[stage]]\nuse = "testkit.slow"\nseconds = 0.001\n\n[[stage]]\nuse = "testkit.double"\n'
    p = pipeline(tmp_path, 'kind = "counting_live"\nevents = 100', stages,
                 'workers = 0\npolicy = "wait"\nmax_in_flight = 1\nbacklog = 5\nbacklog_ms = 1')
    summary = run_pipeline(p, handle_signals=False)
    assert (summary.received, summary.analysed, summary.skipped, summary.backlogged) == (100, 100, 0, 0)
