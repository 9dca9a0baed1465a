"""Per-stage timings stay exact for the mean and bounded in memory on long runs."""

from __future__ import annotations

import numpy as np

from conduit.engine.metrics import StageTimes


def test_exact_mean_and_bounded_memory(monkeypatch):
    monkeypatch.setattr(StageTimes, "RESERVOIR", 1000)
    times = StageTimes()
    durations = np.random.default_rng(1).exponential(0.002, 50_000)
    for d in durations:
        times.add(float(d))
    assert times.count == 50_000
    assert abs(times.mean_ms() - durations.mean() * 1e3) < 1e-9
    assert len(times.values) == 1000 and times._values.size == 1024  # nothing grows past the reservoir
    assert abs(times.p99_ms() - np.percentile(durations, 99) * 1e3) < 0.25 * np.percentile(durations, 99) * 1e3


def test_short_runs_keep_every_duration():
    times = StageTimes()
    for d in (0.001, 0.003, 0.002):
        times.add(d)
    assert sorted(times.values.tolist()) == [0.001, 0.002, 0.003] and abs(times.mean_ms() - 2.0) < 1e-12
