"""Alarms: judged from the engine's counters, raised and cleared once in the log, shown by the panel and sent to
the Rerun log through the rerun sink's log bridge."""

from __future__ import annotations

import logging

from conduit.engine.alarms import AlarmParams, AlarmWatch, Reading


def reading(now, received=0, incomplete=0, skipped=0, depth=0, failures=None, streams=None, disks=None):
    return Reading(now=now, received=received, incomplete=incomplete, skipped=skipped, queue_depth=depth,
                   queue_size=100, failures=failures or {}, streams=streams or {}, disks=disks or {})


def test_each_alarm_is_raised_once_and_cleared_when_the_problem_stops(caplog):
    watch = AlarmWatch(AlarmParams(window=10.0), clock=lambda: 1000.0)
    ok = {"cobo0": ("connected", 0.5), "cobo1": ("connected", 0.2), "cobo2": ("connected", 0.1)}
    with caplog.at_level(logging.INFO, logger="conduit.alarms"):
        assert watch.update(reading(0.0, streams=ok)) == []
        up = watch.update(reading(1.0, received=100, incomplete=20, skipped=30, depth=90,
                                  failures={"cluster.hdbscan": 2},
                                  streams={**ok, "cobo0": ("connected", 7.0), "cobo1": ("retrying", None)},
                                  disks={"/data": (1_000_000_000, 100_000_000_000)}))
        assert [(a.key, a.level) for a in up] == [  # errors first
            ("disk:/data", "error"), ("silent:cobo0", "error"), ("silent:cobo1", "error"),
            ("stage:cluster.hdbscan", "error"), ("incomplete", "warning"), ("queue", "warning"),
            ("skipping", "warning")]
        messages = {a.key: a.message for a in up}
        assert messages["silent:cobo0"] == "cobo0 silent for 7 s"
        assert messages["silent:cobo1"] == "cobo1 is retrying (not connected)"
        assert messages["incomplete"] == "20 % of the events of the last 1 s are incomplete (alarm above 5 %)"
        assert messages["queue"] == "engine queue 90/100 full (alarm above 80 %)"
        assert messages["disk:/data"] == "disk nearly full: 1.0 GB free (1.0 %) at /data"
        assert messages["stage:cluster.hdbscan"] == "stage cluster.hdbscan failed 2 times in the last 1 s"
        # Still up a second later: not logged again.
        watch.update(reading(2.0, received=200, incomplete=40, skipped=60, depth=90, failures={"cluster.hdbscan": 4},
                             streams={**ok, "cobo0": ("connected", 8.0), "cobo1": ("retrying", None)},
                             disks={"/data": (1_000_000_000, 100_000_000_000)}))
        # Everything fine again once the window has passed.
        assert watch.update(reading(13.0, received=1200, incomplete=40, skipped=60, failures={"cluster.hdbscan": 4},
                                    streams=ok, disks={"/data": (50e9, 100e9)})) == []
    raised = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALARM: ")]
    cleared = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cleared: ")]
    assert len(raised) == 7 and len(cleared) == 7
    assert {r.levelname for r in caplog.records if r.getMessage().startswith("ALARM: stage")} == {"ERROR"}


def test_every_cobo_silent_is_one_alarm():
    watch = AlarmWatch(clock=lambda: 0.0)
    silent = {f"cobo{c}": ("connected", 30.0) for c in range(11)}
    assert [(a.key, a.message) for a in watch.update(reading(0.0, streams=silent))] == [
        ("silent:all", "no CoBo has sent data for more than 5 s (is the DAQ running?)")]


def test_a_failing_stage_raises_an_alarm_in_the_panel_and_in_the_rerun_log(start_panel_run):
    from rrd_read import read_rrd

    run = start_panel_run(rate=50, extra="""
[[stage]]
use = "rerun"
mode = "save"
path = "out/run_{run:04d}.rrd"
""", args=("--set", "panelkit.mark.fail_ids=[30]"))
    status = run.wait_for(lambda s: s["alarms"], what="an alarm")
    assert [(a["key"], a["level"]) for a in status["alarms"]] == [("stage:panelkit.mark", "error")]
    assert status["alarms"][0]["message"].startswith("stage panelkit.mark failed 1 times in the last ")
    run.wait_for(lambda s: not s["alarms"], timeout=60, what="the alarm to clear")
    assert run.client().post("stop") == {"ok": True}
    assert run.wait_exit() == 0
    texts = [r["TextLog:text"][0] for r in read_rrd(run.dir / "out/run_0007.rrd")["/log"]]
    assert sum(t.startswith("conduit.alarms: ALARM: stage panelkit.mark failed 1 times") for t in texts) == 1
    assert sum(t.startswith("conduit.alarms: cleared: stage panelkit.mark failed") for t in texts) == 1
