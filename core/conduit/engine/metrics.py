"""Counters and per-stage timings kept by the engine, and the snapshot sinks see."""

from __future__ import annotations

import dataclasses
import random
import time

import numpy as np

__all__ = ["StageTimes", "Metrics", "MetricsSnapshot"]


class StageTimes:
    """Durations of one stage (seconds) in bounded memory: the exact count and mean, and the p99 of a
    uniform sample of at most ``RESERVOIR`` durations (every duration while there are fewer).

    A long live run calls each stage millions of times; keeping every duration would grow
    the process by 8 bytes per call and stage.
    """

    RESERVOIR = 1 << 16

    def __init__(self) -> None:
        self._values = np.empty(1024, dtype=np.float64)
        self._kept = 0
        self._total = 0.0
        # Which durations the reservoir keeps (Algorithm R): the standard library's generator, ~0.7 us a draw
        # against ~4 us for a numpy Generator's scalar call (six draws per event once the reservoir is full).
        self._rng = random.Random(0)
        self.count = 0
        self.failures = 0
        #: Events the stage was not run on: an input it needs was not made (a failed stage ...).
        self.skipped = 0
        #: Events it ran on without raising and produced nothing (no rows, no clusters).
        self.empty = 0
        #: What it counted on those events, by reason (``TransformStage.count``: clusters dropped ...).
        self.counts: dict[str, int] = {}

    def add_counts(self, counts: dict[str, int]) -> None:
        for reason, n in counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n

    def report(self) -> dict[str, object]:
        """Plain data: ``events`` (calls), ``failed``, ``skipped``, ``empty``, ``counts`` by reason."""
        return {"events": self.count, "failed": self.failures, "skipped": self.skipped, "empty": self.empty,
                "counts": dict(self.counts)}

    def add(self, seconds: float) -> None:
        self.count += 1
        self._total += seconds
        if self._kept < self.RESERVOIR:
            if self._kept == len(self._values):
                self._values = np.concatenate([self._values, np.empty_like(self._values)])
            self._values[self._kept] = seconds
            self._kept += 1
        else:
            slot = self._rng.randrange(self.count)
            if slot < self.RESERVOIR:
                self._values[slot] = seconds

    @property
    def values(self) -> np.ndarray:
        """The durations kept: all of them, or a uniform sample of ``RESERVOIR`` once there are more."""
        return self._values[: self._kept]

    def mean_ms(self) -> float:
        return self._total / self.count * 1e3 if self.count else float("nan")

    def p99_ms(self) -> float:
        return float(np.percentile(self.values, 99) * 1e3) if self.count else float("nan")


@dataclasses.dataclass
class MetricsSnapshot:
    """What the engine reports about once a second (status line, Rerun time series)."""

    elapsed: float
    received: int
    analysed: int
    skipped: int
    failed: int
    delivered: int
    complete: int
    incomplete: int
    dropped: int
    in_flight: int
    queue_depth: int
    #: Events/s over the last interval.
    received_rate: float
    analysed_rate: float
    skipped_rate: float
    #: Bytes/s per source sub-stream (``cobo0`` ...).
    byte_rates: dict[str, float]
    source_status: dict[str, str]
    total: int | None
    #: The source's running totals (``frames``, ``bad_frames``, ``cobo3_errors`` ...), as in the summary.
    source_counters: dict[str, int] = dataclasses.field(default_factory=dict)
    #: True for the last snapshot of a run, sent to every sink just before it is closed.
    final: bool = False
    #: What was lost so far, by reason (frames: ``late_frames`` ...; events: ``queue_full_events``,
    #: ``sink_<name>_dropped``); see docs/ingestion.md, "What is lost and why".
    losses: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Events not analysed because analysis was paused (the control API), recorded all the same.
    paused: int = 0
    #: The skipped events by reason (:data:`conduit.engine.backlog.SKIP_REASONS`).
    skipped_by: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Events analysed after waiting in the backlog (``[engine] backlog``), and the most waiting at once.
    backlogged: int = 0
    backlog_peak: int = 0
    #: Per (cobo, asad) stream: ``frames`` received and frames lost by reason (``Source.asad_counters``).
    asad_counters: dict[tuple[int, int], dict[str, int]] = dataclasses.field(default_factory=dict)
    #: Per stage: ``events`` it ran on, ``failed``, ``skipped`` (an input missing), ``empty`` (produced
    #: nothing) and ``counts`` (what it dropped, by reason): :meth:`StageTimes.report`.
    stages: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)

    @property
    def complete_fraction(self) -> float:
        n = self.complete + self.incomplete
        return self.complete / n if n else float("nan")


@dataclasses.dataclass
class Metrics:
    """Running totals of one run."""

    started: float = dataclasses.field(default_factory=time.monotonic)
    received: int = 0
    analysed: int = 0
    skipped: int = 0
    delivered: int = 0
    complete: int = 0
    incomplete: int = 0
    in_flight: int = 0
    paused: int = 0
    #: Events recorded without analysis because an error stopped the run (StopRun, on_stage_error = "stop").
    halted: int = 0
    #: The skipped events by reason (``skipped`` is their sum): :data:`conduit.engine.backlog.SKIP_REASONS`.
    skipped_by: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Events analysed after waiting in the backlog for a place (``[engine] backlog``).
    backlogged: int = 0
    #: Most events waiting in the backlog at once.
    backlog_peak: int = 0
    stage_times: dict[str, StageTimes] = dataclasses.field(default_factory=dict)
    sink_dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    _last: tuple[float, int, int, int] = (0.0, 0, 0, 0)
    _last_bytes: dict[str, int] = dataclasses.field(default_factory=dict)

    def skip(self, reason: str) -> None:
        """One more event skipped (not analysed, recorded all the same) for ``reason``."""
        self.skipped += 1
        self.skipped_by[reason] = self.skipped_by.get(reason, 0) + 1

    def times(self, stage: str) -> StageTimes:
        if stage not in self.stage_times:
            self.stage_times[stage] = StageTimes()
        return self.stage_times[stage]

    @property
    def failed(self) -> int:
        return sum(t.failures for t in self.stage_times.values())

    def stage_reports(self) -> dict[str, dict[str, object]]:
        """:meth:`StageTimes.report` of every stage (and sink) so far."""
        return {name: t.report() for name, t in list(self.stage_times.items())}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def restart_clock(self) -> None:
        """Count time (and rates) from now on."""
        self.started = time.monotonic()
        self._last = (0.0, self.received, self.analysed, self.skipped)

    def snapshot(self, *, queue_depth: int, source_status: dict[str, str], byte_counts: dict[str, int],
                 dropped: int, total: int | None, source_counters: dict[str, int] | None = None,
                 final: bool = False, losses: dict[str, int] | None = None,
                 asad_counters: dict[tuple[int, int], dict[str, int]] | None = None) -> MetricsSnapshot:
        """Totals plus rates since the previous snapshot."""
        now = self.elapsed()
        t0, r0, a0, s0 = self._last
        dt = max(now - t0, 1e-9)
        byte_rates = {k: (v - self._last_bytes.get(k, 0)) / dt for k, v in byte_counts.items()}
        snap = MetricsSnapshot(
            elapsed=now,
            received=self.received,
            analysed=self.analysed,
            skipped=self.skipped,
            failed=self.failed,
            delivered=self.delivered,
            complete=self.complete,
            incomplete=self.incomplete,
            dropped=dropped,
            in_flight=self.in_flight,
            queue_depth=queue_depth,
            received_rate=(self.received - r0) / dt,
            analysed_rate=(self.analysed - a0) / dt,
            skipped_rate=(self.skipped - s0) / dt,
            byte_rates=byte_rates,
            source_status=dict(source_status),
            total=total,
            source_counters=dict(source_counters or {}),
            final=final,
            losses=dict(losses or {}),
            paused=self.paused,
            skipped_by=dict(self.skipped_by),
            backlogged=self.backlogged,
            backlog_peak=self.backlog_peak,
            asad_counters=dict(asad_counters or {}),
            stages=self.stage_reports(),
        )
        self._last = (now, self.received, self.analysed, self.skipped)
        self._last_bytes = dict(byte_counts)
        return snap
