"""Start-up makes ready what the first events need (the trace slots, their pages), and the engine's timeline of
the first events: neither adds anything to what a run outputs or counts."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import trio

from conduit.engine.pool import ChainSpec, open_pool
from conduit.engine.runner import Engine, run_pipeline
from conduit.engine.shared_traces import MIN_SEGMENT_BYTES, SEGMENT_PREFIX, TraceSlots
from conduit.event import Event
from conduit_test_support import pipeline_from_tables

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm (Linux)")

#: What each event's traces sum to, as the worker saw them (``checksum``), and one JSON line per event.
STAGES = """
[[stage]]
use = "testkit.checksum"

[[stage]]
use = "testkit.double"

[[stage]]
use = "testkit.collect"
path = "events_{run}.jsonl"
lossless = true
"""


def own_segments() -> dict[str, os.stat_result]:
    """This process's trace-slot segments in /dev/shm, with their file status."""
    prefix = f"{SEGMENT_PREFIX}{os.getpid()}-"
    return {p.name: p.stat() for p in SHM.iterdir() if p.name.startswith(prefix)}


def test_prepared_slots_are_allocated_and_taken_by_the_first_events():
    slots = TraceSlots(max_lent=4)
    assert slots.prepare(3) == 3
    made = own_segments()
    assert len(made) == 3 and slots.segments == 3
    for status in made.values():  # memory allocated now, not a sparse file faulted in at the first event
        assert status.st_size == MIN_SEGMENT_BYTES and status.st_blocks * 512 >= MIN_SEGMENT_BYTES
    traces = slots.array(1300, 517)  # a default-mix event (~1.3 MB): built in a prepared slot
    assert traces is not None and set(own_segments()) == set(made)
    bigger = slots.array(MIN_SEGMENT_BYTES // (517 * 2) + 50, 517)  # too big for any: one is replaced
    assert bigger is not None and slots.segments == 3 and len(set(own_segments()) - set(made)) == 1
    del traces, bigger
    slots.close()
    assert own_segments() == {}


def test_slots_the_system_refuses_are_made_on_demand_with_one_warning(caplog):
    slots = TraceSlots()
    with caplog.at_level(logging.WARNING, logger="conduit.engine"):
        assert slots.prepare(2, 1 << 44) == 0  # 16 TiB: no /dev/shm has room for it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith("trace slots: 0 of 2 made ahead of the first event (")
    assert own_segments() == {}  # nothing half-made is left
    traces = slots.array(700, 517)  # and events still get slots
    assert traces is not None and slots.segments == 1
    del traces
    slots.close()


def test_the_pool_makes_its_slots_while_the_workers_warm_up_and_events_use_them(plugin_site, tmp_path):
    p = pipeline_from_tables(tmp_path, 'kind = "counting"\nevents = 1\ntraces = 10', STAGES, "workers = 1")
    engine = Engine(p, handle_signals=False)
    spec = ChainSpec.create([(s.cls, s.params) for s in p.transforms], engine.context)
    rng = np.random.default_rng(5)

    async def main() -> None:
        async with open_pool(spec, 1, niceness=0) as pool:
            await pool.warm_up(slots=3)
            made = own_segments()
            assert pool.slots.segments == len(made) == 3
            assert all(s.st_blocks * 512 >= MIN_SEGMENT_BYTES for s in made.values())
            for i in range(5):  # copied into a prepared slot each time: no segment made on demand
                traces = rng.integers(0, 4096, (900, 517)).astype(np.int16)
                event = Event(i, traces=traces)
                await pool.analyse(event)
                assert list(event.artifacts["checksum"]) == [int(traces.astype(np.int64).sum()), [900, 517]]
                assert set(own_segments()) == set(made)

    trio.run(main)
    assert own_segments() == {}


def test_a_run_with_the_timeline_counts_and_records_exactly_its_events(plugin_site, tmp_path):
    """Start-up's slots and the timeline add no event to any output or count: 40 events in, 40 received,
    analysed, recorded and noted, each once, and every answer carries its worker job's costs."""
    timeline = tmp_path / "timeline.json"
    p = pipeline_from_tables(tmp_path, 'kind = "counting"\nevents = 40\ntraces = 700', STAGES,
                             f'workers = 2\ntimeline = "{timeline}"')
    summary = run_pipeline(p, handle_signals=False)
    assert (summary.received, summary.analysed, summary.skipped, summary.delivered) == (40, 40, 0, 40)
    assert summary.exit_code == 0
    [out] = tmp_path.glob("events_*.jsonl")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records if isinstance(r, dict)) == list(range(40))
    assert all(r["analysed"] and r["doubled"] == 2 * r["id"] for r in records if isinstance(r, dict))
    data = json.loads(timeline.read_text())
    steps: dict[str, list] = {}
    for event, step, *rest in data["steps"]:
        steps.setdefault(step, []).append((event, *rest))
    for step in ("received", "sent", "answered", "sink testkit.collect"):
        assert sorted(row[0] for row in steps[step]) == list(range(40)), step
    pids = set()
    for _, when, cpu, faults, job in steps["answered"]:
        wall, job_cpu, job_faults, pid, began = job
        assert 0 <= job_cpu <= wall + 1e-3 and job_faults >= 0 and cpu > 0 and faults > 0
        assert began <= when  # the worker began the job before its answer was read
        pids.add(pid)
    assert len(pids) in (1, 2) and os.getpid() not in pids  # the workers' pids
    assert "skipped" not in steps
    assert all(len(row) == 4 and row[1] in (0, 1, 2) for row in data["gc"])
    assert data["trace_slots"]["segments"] >= 1
    assert own_segments() == {}
