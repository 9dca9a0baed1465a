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

    @property
    def n_traces(self) -> int:
        return int(self.traces.shape[0])

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
