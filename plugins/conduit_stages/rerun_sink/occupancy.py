"""Pad-plane occupancy over the run: how often each pad was hit, with dead and hot pads counted.

A pad is hit in an event when its trace's peak rises at least ``threshold``
ADC above the trace's baseline (:func:`.kernels.peak_heights`): in partial
readout that is nearly every trace read, in full readout it rejects the
pedestal-only channels. Every event the sink receives is counted, drawn or
not.
"""

from __future__ import annotations

import numpy as np

from conduit.padplane import BEAM_PAD_RADIUS

__all__ = ["Occupancy", "DEAD_COLOR"]

#: Colour of pads never hit (once enough events were seen to call them dead).
DEAD_COLOR = (200, 40, 40)
#: Colour of pads not hit yet, before that.
UNSEEN_COLOR = (45, 45, 52)


class Occupancy:
    """Hit counts per pad (``hits[pad]``) over ``events`` events."""

    def __init__(self, n_pads: int, threshold: float, *, min_events: int = 50, hot_fraction: float = 0.5):
        self.hits = np.zeros(n_pads, dtype=np.int64)
        self._stamp = np.full(n_pads, -1, dtype=np.int64)  # last event that counted each pad
        self.events = 0
        self.threshold = float(threshold)
        self.min_events = int(min_events)
        self.hot_fraction = float(hot_fraction)
        self.version = 0

    def add(self, pad_ids: np.ndarray, amplitude: np.ndarray) -> None:
        """Count one event's hit pads, each once (ids outside the plane are ignored)."""
        from .kernels import count_hits

        count_hits(np.ascontiguousarray(pad_ids, dtype=np.int64), np.ascontiguousarray(amplitude, dtype=np.float64),
                   self.threshold, self.hits, self._stamp, self.events)
        self.events += 1
        self.version += 1

    def reset(self) -> None:
        self.hits[:] = 0
        self._stamp[:] = -1
        self.events = 0
        self.version += 1

    @property
    def fraction(self) -> np.ndarray:
        """Share of events in which each pad was hit (0..1)."""
        return self.hits / max(self.events, 1)

    def dead(self) -> np.ndarray:
        """Pads never hit, once at least ``min_events`` events were counted (else none)."""
        if self.events < self.min_events:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.hits == 0)

    def hot(self, radius: np.ndarray) -> np.ndarray:
        """Pads outside the beam region (``radius`` of each pad, mm) hit in more than ``hot_fraction`` of events."""
        if self.events < self.min_events:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero((self.fraction > self.hot_fraction) & (np.asarray(radius) >= BEAM_PAD_RADIUS))
