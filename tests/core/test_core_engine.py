"""The engine: wait and skip policies, failing stages, worker processes, signals."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time

import pytest

from conduit.engine.runner import run_pipeline
from conduit_test_support import VENV_BIN, read_collected, pipeline_from_tables


pipeline = pipeline_from_tables


COLLECT = """
[[stage]]
use = "testkit.double"

[[stage]]
use = "testkit.collect"
path = "out_{run}.jsonl"
lossless = true
"""


def test_wait_policy_delivers_every_event_in_order(plugin_site, tmp_path):
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 300', COLLECT, "workers = 0\nmax_in_flight = 8")
    seen = []
    summary = run_pipeline(p, handle_signals=False, on_event=lambda e: seen.append(e.id))
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed
    assert [r["id"] for r in records] == list(range(300)) == seen
    assert all(r["analysed"] and r["doubled"] == 2 * r["id"] and r["run"] == 7 for r in records)
    assert (summary.received, summary.analysed, summary.skipped, summary.delivered) == (300, 300, 0, 300)
    assert summary.exit_code == 0 and summary.outputs == [str(tmp_path / "out_7.jsonl")]
    assert summary.stage_ms["testkit.double"][0] == 300


def test_skip_policy_counts_exactly_and_never_blocks_the_source(plugin_site, tmp_path):
    """The analysis of event 0 is held (testkit.gate) until the live source has emitted every event and the
    engine has dispatched them all: with one analysis slot, exactly events 1..199 are skipped, none dropped."""
    release = tmp_path / "release"
    stages = COLLECT.replace('use = "testkit.double"',
                             f'use = "testkit.double"\n\n[[stage]]\nuse = "testkit.gate"\nrelease_file = "{release}"')
    p = pipeline(tmp_path, f'kind = "counting_live"\nevents = 200\nrelease_file = "{release}"', stages,
                 "workers = 0\nmax_in_flight = 1\nbacklog = 0")  # no backlog: skipped at once
    assert p.engine.policy == "auto"  # live source -> skip
    summary = run_pipeline(p, handle_signals=False)
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed and len(records) == 200  # the lossless sink saw every event, analysed or not
    assert (summary.received, summary.analysed, summary.skipped, summary.dropped) == (200, 1, 199, 0)
    analysed = [r for r in records if r["analysed"]]
    assert [r["id"] for r in analysed] == [0] and analysed[0]["doubled"] == 0
    assert all(r["doubled"] is None for r in records[1:])
    assert [r["id"] for r in records] == list(range(200))


def test_wait_policy_with_a_live_source_analyses_everything(plugin_site, tmp_path):
    stages = COLLECT.replace('use = "testkit.double"', 'use = "testkit.slow"\nseconds = 0.002\n\n[[stage]]\nuse = "testkit.double"')
    p = pipeline(tmp_path, 'kind = "counting_live"\nevents = 50\nrate = 2000', stages,
                 'workers = 0\npolicy = "wait"\nmax_in_flight = 1\nqueue_size = 100')
    summary = run_pipeline(p, handle_signals=False)
    assert (summary.received, summary.analysed, summary.skipped) == (50, 50, 0)


def test_failing_stage_is_counted_and_the_run_goes_on(plugin_site, tmp_path):
    stages = """
    [[stage]]
    use = "testkit.double"

    [[stage]]
    use = "testkit.fail"
    fail_ids = [3, 7, 11]

    [[stage]]
    use = "testkit.collect"
    path = "out.jsonl"
    """
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 20', stages)
    summary = run_pipeline(p, handle_signals=False)
    records, closed = read_collected(tmp_path / "out.jsonl")
    assert closed and len(records) == 20
    assert summary.failed == {"testkit.fail": 3} and summary.exit_code == 0
    by_id = {r["id"]: r for r in records}
    assert "checked" not in by_id[3]["artifacts"] and "checked" in by_id[4]["artifacts"]
    assert by_id[3]["doubled"] == 6  # earlier stages' results are kept


def test_on_stage_error_stop_ends_the_run_cleanly(plugin_site, tmp_path):
    stages = """
    [[stage]]
    use = "testkit.double"

    [[stage]]
    use = "testkit.fail"
    fail_ids = [5]

    [[stage]]
    use = "testkit.collect"
    path = "out.jsonl"
    """
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 10000', stages,
                 'workers = 0\non_stage_error = "stop"\nmax_in_flight = 1\nqueue_size = 1')
    summary = run_pipeline(p, handle_signals=False)
    records, closed = read_collected(tmp_path / "out.jsonl")
    assert closed
    assert summary.exit_code == 1 and "testkit.fail failed on event 5" in summary.error
    assert 6 <= summary.received < 100  # stopped soon after the failure, in-flight events finished
    assert len(records) == summary.delivered == summary.received


def test_max_events_and_worker_processes_give_the_same_results(plugin_site, tmp_path):
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 0', COLLECT, "workers = 2")
    seen = []
    summary = run_pipeline(p, handle_signals=False, max_events=40, on_event=seen.append)
    assert summary.received == 40 and summary.analysed == 40
    assert [e.id for e in seen] == list(range(40))
    assert all(e.artifacts["doubled"] == 2 * e.id for e in seen)
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed and [r["doubled"] for r in records] == [2 * i for i in range(40)]


def _wait_for(predicate, proc, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}: {proc.communicate()}")


def test_sigint_drains_closes_sinks_prints_summary_and_exits_zero(plugin_site, tmp_path):
    (tmp_path / "pipe.toml").write_text(textwrap.dedent("""
        [source]
        kind = "counting_live"
        events = 0
        rate = 200

        [engine]
        workers = 1

        [[stage]]
        use = "testkit.double"

        [[stage]]
        use = "testkit.collect"
        path = "out.jsonl"
        """))
    proc = subprocess.Popen([str(VENV_BIN / "conduit"), "run", "pipe.toml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_file = tmp_path / "out.jsonl"
    _wait_for(lambda: out_file.exists() and len(out_file.read_text().splitlines()) >= 20, proc, "events")
    proc.send_signal(signal.SIGUSR1)  # histogram reset reaches every sink
    _wait_for(lambda: '"reset"' in out_file.read_text(), proc, "the reset")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    records, closed = read_collected(out_file)
    assert closed
    assert "SIGINT: finishing events in flight" in stderr
    assert "run summary (interrupted)" in stdout
    received = int(next(l for l in stdout.splitlines() if l.startswith("events received")).split()[-1])
    assert received == len(records) >= 20


def test_a_failing_source_is_named_with_the_error_inside_its_nursery(plugin_site, tmp_path):
    """A source whose connection task fails: the summary names the error's type and text, not only
    "Exceptions from Trio nursery"; the events before it are delivered."""
    p = pipeline(tmp_path, 'kind = "counting"\nevents = 50\nfail_after = 20', COLLECT, "workers = 0")
    summary = run_pipeline(p, handle_signals=False)
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed and [r["id"] for r in records] == list(range(20))
    assert summary.exit_code == 1
    assert summary.error == "source 'counting': ConnectionResetError: [Errno 104] connection reset by peer"


def test_next_and_pass_on_take_and_give_without_waiting_when_they_can():
    """The engine's channel helpers: _next takes queued items in order without yielding to the other tasks
    (the receivers share the loop), waits when the channel is empty, and gives None at its end; _pass_on waits
    for room only when the channel is full."""
    import trio
    import trio.testing

    from conduit.engine.runner import _next, _pass_on

    async def main():
        send, recv = trio.open_memory_channel(2)
        await _pass_on(send, 1)
        await _pass_on(send, 2)
        steps = []

        async def third():
            await _pass_on(send, 3)  # full: waits for room
            steps.append("sent 3")
            await send.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert steps == []
            got = [await _next(recv)]  # room now; the sender is woken, not yet run
            got.append(await _next(recv))
            while (item := await _next(recv)) is not None:
                got.append(item)
        assert got == [1, 2, 3] and steps == ["sent 3"]

    trio.run(main)


@pytest.mark.parametrize("workers, in_flight", [(0, 2), (2, 8)])
def test_skip_policy_default_depth_is_four_events_per_worker(plugin_site, tmp_path, workers, in_flight):
    """``max_in_flight = 0``: four events per worker process are analysed or queued for it (two in its pipe,
    two waiting in the main process), two in-process; the rest of a burst that finds every place taken is
    skipped, counted exactly. Each worker's gate holds its first event until every event was dispatched."""
    release = tmp_path / "release"
    stages = COLLECT.replace('use = "testkit.double"',
                             f'use = "testkit.double"\n\n[[stage]]\nuse = "testkit.gate"\nrelease_file = "{release}"')
    p = pipeline(tmp_path, f'kind = "counting_live"\nevents = 200\nrelease_file = "{release}"', stages,
                 f"workers = {workers}\nbacklog = 0")  # the places alone (tests/core/test_core_backlog.py: with it)
    assert p.engine.max_in_flight == 0
    summary = run_pipeline(p, handle_signals=False)
    records, closed = read_collected(tmp_path / "out_7.jsonl")
    assert closed and [r["id"] for r in records] == list(range(200))
    assert (summary.received, summary.analysed, summary.skipped, summary.dropped) == (200, in_flight,
                                                                                      200 - in_flight, 0)
    assert [r["id"] for r in records if r["analysed"]] == list(range(in_flight))
