"""The event: what sources build and stages enrich.

The trace matrix follows attpc_merger's layout: one int16 row per channel,
columns ``cobo, asad, aget, channel, pad`` then 512 samples (ADC counts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = [
    "Event",
    "COBO",
    "ASAD",
    "AGET",
    "CHANNEL",
    "PAD",
    "SAMPLES",
    "N_TIME_BUCKETS",
    "N_COLUMNS",
    "empty_traces",
]

COBO, ASAD, AGET, CHANNEL, PAD = 0, 1, 2, 3, 4
SAMPLES = slice(5, 517)
N_TIME_BUCKETS = 512
N_COLUMNS = 517

#: The artifact name under which every source provides the trace matrix.
TRACES = "traces"


def empty_traces(n: int = 0) -> np.ndarray:
    """A zeroed (n, 517) int16 trace matrix."""
    return np.zeros((n, N_COLUMNS), dtype=np.int16)


@dataclasses.dataclass
class Event:
    """One triggered event.

    ``id`` is the GET event index (trigger counter); ``timestamp`` is the
    MuTanT-clock time of the CoBos other than CoBo 10 and ``timestamp_other``
    CoBo 10's FRIB-synchronised time (both 100 MHz ticks). ``missing`` lists
    the (cobo, asad) pairs expected but not received when the event was
    emitted incomplete. ``artifacts`` holds what stages add (``cloud``,
    ``clusters``, ``estimates``, ...), keyed by artifact name.

    What happened to the analysis (set by the engine, read by sinks):
    ``failures`` names each stage that raised on this event (with
    ``"ExceptionType: message"``), ``skipped_stages`` each stage not run
    because an input it needs was not made (with why), and ``counts`` what
    stages counted on this event (items dropped by reason, see
    :meth:`count`).
    """

    id: int
    traces: np.ndarray = dataclasses.field(default_factory=empty_traces)
    timestamp: int = 0
    timestamp_other: int = 0
    complete: bool = True
    missing: tuple[tuple[int, int], ...] = ()
    run: int | None = None
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: False when the engine skipped analysis (live source, pool full).
    analysed: bool = False
    #: Position in the source's stream (0, 1, 2, ...), set by the engine.
    sequence: int = -1
    #: Stages that raised on this event: stage name -> ``"ExceptionType: message"``.
    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Stages not run on this event because an input was missing: stage name -> why
    #: (``"needs 'clusters': stage cluster.hdbscan failed"``).
    skipped_stages: dict[str, str] = dataclasses.field(default_factory=dict)
    #: What stages counted on this event: stage name -> reason -> count (:meth:`count`).
    counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    @property
    def n_traces(self) -> int:
        return int(self.traces.shape[0])

    @property
    def failed(self) -> bool:
        """True when a stage raised on this event or was not run because of that."""
        return bool(self.failures or self.skipped_stages)

    def count(self, stage: str, reason: str, n: int = 1) -> None:
        """Add ``n`` to what ``stage`` counted under ``reason`` on this event (``TransformStage.count``).

        The engine sums the counts of every event and shows them in the run
        summary, the status line, the control panel and the HDF5 run file.
        """
        if n:
            by_reason = self.counts.setdefault(stage, {})
            by_reason[reason] = by_reason.get(reason, 0) + int(n)

    def has(self, artifact: str) -> bool:
        """True when the artifact is present (``traces`` always is)."""
        return artifact == TRACES or artifact in self.artifacts

    def get(self, artifact: str, default: Any = None) -> Any:
        if artifact == TRACES:
            return self.traces
        return self.artifacts.get(artifact, default)

    def describe(self) -> str:
        state = "complete" if self.complete else f"incomplete, missing {len(self.missing)} AsAd(s)"
        return f"event {self.id} ({self.n_traces} traces, {state})"
