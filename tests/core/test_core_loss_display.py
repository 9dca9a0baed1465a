"""Losses by reason on the status line and in the run summary."""

from __future__ import annotations

from conduit.engine.metrics import MetricsSnapshot
from conduit.engine.runner import RunSummary
from conduit.engine.status import format_losses, format_status
from conduit.engine.summary import format_summary


def snapshot(losses, dropped=0):
    return MetricsSnapshot(elapsed=3.0, received=100, analysed=100, skipped=0, failed=0, delivered=100, complete=90,
                           incomplete=10, dropped=dropped, in_flight=0, queue_depth=2, received_rate=33.0,
                           analysed_rate=33.0, skipped_rate=0.0, byte_rates={},
                           source_status={"cobo3": "silent", "cobo4": "connected"}, total=None, losses=losses)


def test_status_line_shows_the_total_and_the_largest_reasons():
    losses = {"late_frames": 12, "quarantined_ahead": 5, "duplicate_frames": 0, "queue_full_events": 2,
              "sink_hdf5_dropped": 1}
    assert format_losses(losses) == "lost 20 (late 12, ahead 5, queue-full 2, ...)"
    assert format_losses({"sink_hdf5_dropped": 3}) == "lost 3 (hdf5 sink 3)"
    assert format_losses({"late_frames": 0}) == ""
    line = format_status(snapshot(losses, dropped=2))
    assert "lost 20 (late 12, ahead 5, queue-full 2, ...)" in line and "dropped" not in line
    assert "cobo3:silent" in line
    assert "lost" not in format_status(snapshot({}))


def test_summary_lists_every_loss_by_reason():
    summary = RunSummary(received=100, analysed=100, skipped=0, delivered=100, dropped=0, complete=90,
                         incomplete=10, failed={}, stage_ms={}, wall_seconds=1.0, startup_seconds=0.1,
                         source_counters={}, outputs=[], interrupted=False, error=None, sink_dropped={},
                         losses={"late_frames": 12, "restart_frames": 400, "bad_frames": 0})
    text = format_summary(summary)
    assert "lost, by reason (docs/ingestion.md)" in text
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("lost, by reason"))
    assert lines[at].split()[-1] == "412"
    assert lines[at + 1].split() == ["restart_frames", "400"] and lines[at + 2].split() == ["late_frames", "12"]
    assert "bad_frames" not in text
    clean = format_summary(RunSummary(**{**summary.__dict__, "losses": {"late_frames": 0}}))
    assert any(line.split() == ["lost", "0"] for line in clean.splitlines())
