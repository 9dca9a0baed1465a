"""Alarms: what a shift crew must notice, judged once per engine tick from the run's counters.

Each alarm has a stable key (``silent:cobo3``), a level (``warning`` yellow,
``error`` red) and a one-line message. Raising and clearing are logged once
(logger ``conduit.alarms``, WARNING / ERROR when raised, INFO when cleared), so
an alarm reaches the terminal log and, through the rerun sink's log bridge,
the Rerun viewer's log view, without flooding either. The control panel shows
the alarms that are up with their colours.

Rates (incomplete fraction, skipping, stage failures) are judged over the last
``window`` seconds, so an alarm clears by itself once the problem stops.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time

from ..params import Params, param

__all__ = ["AlarmParams", "Alarm", "AlarmWatch", "Reading"]

log = logging.getLogger("conduit.alarms")

#: Stream states of a connected stream (the exporter source reports trouble as "silent" or "behind").
_CONNECTED = ("connected", "", "silent", "behind")


class AlarmParams(Params):
    """The ``[alarms]`` table: thresholds of the alarms the status line, the log and the control panel show."""

    cobo_silent: float = param(5.0, "a CoBo stream connected but without data, or down, for longer than this (s)",
                               gt=0)
    incomplete_percent: float = param(
        5.0, "incomplete events above this share of the events of the last window (%)", ge=0, le=100)
    skipped_percent: float = param(
        20.0, "analysis skipping more than this share of the events of the last window (%)", ge=0, le=100)
    queue_percent: float = param(80.0, "the engine queue fuller than this (%)", gt=0, le=100)
    disk_free_percent: float = param(5.0, "free space on an output's file system below this (%)", ge=0, le=100)
    disk_free_gb: float = param(2.0, "free space on an output's file system below this (GB)", ge=0)
    window: float = param(10.0, "seconds over which rates (incomplete, skipped, stage failures) are judged", gt=0)


@dataclasses.dataclass
class Alarm:
    """One alarm that is up."""

    key: str
    level: str  # "warning" | "error"
    message: str
    since: float  # unix time it was raised

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Reading:
    """What the watch needs from one engine tick."""

    now: float  # monotonic s
    received: int
    incomplete: int
    skipped: int
    queue_depth: int
    queue_size: int
    failures: dict[str, int]  # stage -> failures so far
    #: stream -> (state, seconds since its last data, or None when it never sent any)
    streams: dict[str, tuple[str, float | None]]
    #: directory -> (free bytes, total bytes)
    disks: dict[str, tuple[int, int]]
    live: bool = True


class AlarmWatch:
    """Judges readings against :class:`AlarmParams`; keeps the alarms that are up."""

    def __init__(self, params: AlarmParams | None = None, *, clock=time.time):
        self.params = params or AlarmParams()
        self.clock = clock
        self.up: dict[str, Alarm] = {}
        self._history: collections.deque[Reading] = collections.deque()

    def update(self, reading: Reading) -> list[Alarm]:
        """Judge one reading; log what was raised or cleared; return the alarms up, most severe first."""
        self._history.append(reading)
        while len(self._history) > 2 and reading.now - self._history[1].now >= self.params.window:
            self._history.popleft()
        found = {a.key: a for a in self._judge(reading, self._history[0])}
        for key in [k for k in self.up if k not in found]:
            log.info("cleared: %s", self.up.pop(key).message)
        for key, alarm in found.items():
            if key in self.up:
                self.up[key].message, self.up[key].level = alarm.message, alarm.level
            else:
                self.up[key] = alarm
                log.log(logging.ERROR if alarm.level == "error" else logging.WARNING, "ALARM: %s", alarm.message)
        return self.alarms()

    def alarms(self) -> list[Alarm]:
        return sorted(self.up.values(), key=lambda a: (a.level != "error", a.since, a.key))

    def _judge(self, r: Reading, old: Reading) -> list[Alarm]:
        p, now = self.params, self.clock()
        out: list[Alarm] = []

        def alarm(key: str, level: str, message: str) -> None:
            out.append(Alarm(key, level, message, now))

        # The exporter source says "silent" / "behind" for a connected CoBo in trouble; silence is judged here.
        quiet = {name: (state, age) for name, (state, age) in r.streams.items()
                 if state not in _CONNECTED or age is None or age > p.cobo_silent}
        if r.live and r.streams and len(quiet) == len(r.streams) > 1:
            alarm("silent:all", "error", f"no CoBo has sent data for more than {p.cobo_silent:g} s "
                                         "(is the DAQ running?)")
        elif r.live:
            for name, (state, age) in quiet.items():
                if state not in _CONNECTED:
                    alarm(f"silent:{name}", "error", f"{name} is {state} (not connected)")
                elif age is None:
                    alarm(f"silent:{name}", "error", f"{name} is connected but has sent nothing")
                else:
                    alarm(f"silent:{name}", "error", f"{name} silent for {age:.0f} s")
            for name, (state, _) in r.streams.items():
                if state == "behind" and name not in quiet:
                    alarm(f"behind:{name}", "warning", f"{name} is behind the other CoBos (a slow or trickling "
                                                       "DataExporter): its events come out incomplete")
        events = r.received - old.received
        span = max(r.now - old.now, 1e-9)
        if events > 0:
            incomplete = 100.0 * (r.incomplete - old.incomplete) / events
            if incomplete > p.incomplete_percent:
                alarm("incomplete", "warning", f"{incomplete:.0f} % of the events of the last {span:.0f} s are "
                                               f"incomplete (alarm above {p.incomplete_percent:g} %)")
            skipped = 100.0 * (r.skipped - old.skipped) / events
            if skipped > p.skipped_percent:
                alarm("skipping", "warning", f"analysis is skipping {skipped:.0f} % of the events (alarm above "
                                             f"{p.skipped_percent:g} %): the analysis cannot keep up")
        if r.queue_size and 100.0 * r.queue_depth / r.queue_size > p.queue_percent:
            alarm("queue", "warning", f"engine queue {r.queue_depth}/{r.queue_size} full "
                                      f"(alarm above {p.queue_percent:g} %)")
        for directory, (free, total) in r.disks.items():
            if total and (100.0 * free / total < p.disk_free_percent or free < p.disk_free_gb * 1e9):
                alarm(f"disk:{directory}", "error", f"disk nearly full: {free / 1e9:.1f} GB free "
                                                    f"({100.0 * free / total:.1f} %) at {directory}")
        for stage, failures in r.failures.items():
            new = failures - old.failures.get(stage, 0)
            if new > 0:
                alarm(f"stage:{stage}", "error", f"stage {stage} failed {new} times in the last {span:.0f} s")
        return out
