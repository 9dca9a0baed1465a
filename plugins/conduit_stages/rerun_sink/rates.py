"""Rates against wall-clock time: events/s, the complete fraction and MB/s, from the engine's metrics.

Rerun's time-series view plots against whichever timeline is selected (the
``event`` timeline while stepping through events), so these plots are drawn as
figures whose x axis is the wall-clock time since the run started. The whole
run is kept (one row per metrics tick, ~1 s) and drawn with at most
``max_points`` points per line (averaged in equal time slices), so a figure
stays a few kB however long the run.
"""

from __future__ import annotations

import math

import numpy as np

from .plot2d import Axis, Figure, add_axes, add_legend, add_series, nice_upper, stacked_frames

__all__ = ["RateHistory", "EVENT_RATE_COLORS", "FRAME_HEIGHT", "FIGURE_HEIGHT"]

EVENT_RATE_COLORS = {"received": (90, 160, 255), "analysed": (80, 210, 120), "skipped": (240, 90, 80)}
FRACTION_COLOR = (235, 200, 80)
#: Height of each of the three stacked plots, and of the whole figure (view units; the canvas is 1000 wide).
FRAME_HEIGHT = 200.0
GAP = 110.0
FIGURE_HEIGHT = 3 * FRAME_HEIGHT + 2 * GAP
BYTES_COLOR = (190, 140, 255)


class RateHistory:
    """Rows of (time s, received/s, analysed/s, skipped/s, complete fraction, MB/s), one per metrics snapshot."""

    def __init__(self) -> None:
        self._rows: list[tuple[float, float, float, float, float, float]] = []
        self._last_counts: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, snapshot) -> None:
        """Record one :class:`conduit.engine.metrics.MetricsSnapshot` (fraction per interval, not cumulative)."""
        complete, incomplete = snapshot.complete, snapshot.incomplete
        if self._last_counts is None:
            d_complete, d_incomplete = complete, incomplete
        else:
            d_complete = complete - self._last_counts[0]
            d_incomplete = incomplete - self._last_counts[1]
        self._last_counts = (complete, incomplete)
        built = d_complete + d_incomplete
        fraction = d_complete / built if built > 0 else math.nan
        megabytes = sum(snapshot.byte_rates.values()) / 1e6
        self._rows.append((float(snapshot.elapsed), float(snapshot.received_rate), float(snapshot.analysed_rate),
                           float(snapshot.skipped_rate), fraction, megabytes))

    def table(self, max_points: int = 300) -> np.ndarray:
        """The rows as an (N, 6) array, averaged into at most ``max_points`` time slices (NaN-aware)."""
        rows = np.asarray(self._rows, dtype=np.float64).reshape(-1, 6)
        if len(rows) <= max_points:
            return rows
        edges = np.linspace(0, len(rows), max_points + 1).astype(np.int64)
        out = np.empty((max_points, 6))
        for k in range(max_points):
            chunk = rows[edges[k]:edges[k + 1]]
            finite = np.isfinite(chunk)
            sums = np.where(finite, chunk, 0.0).sum(axis=0)
            counts = finite.sum(axis=0)
            out[k] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)  # mean of the finite values
        return out

    def figure(self, max_points: int = 300) -> Figure:
        """Three stacked plots sharing the time axis: events/s, complete fraction (0..1), MB/s."""
        rows = self.table(max_points)
        t = rows[:, 0]
        span = float(t.max()) if len(t) else 1.0
        minutes = span > 600.0
        scale = 60.0 if minutes else 1.0
        time_axis = Axis(0.0, max(span / scale, 1.0), f"wall-clock time since start ({'min' if minutes else 's'})")
        top_rate = nice_upper(np.nanmax(rows[:, 1:4], initial=0.0))
        top_bytes = nice_upper(np.nanmax(rows[:, 5], initial=0.0))
        frames = stacked_frames([
            (time_axis, Axis(0.0, top_rate, "events/s")),
            (time_axis, Axis(0.0, 1.0, "complete events (fraction)", ticks=(0.0, 0.5, 1.0))),
            (time_axis, Axis(0.0, top_bytes, "data received (MB/s)")),
        ], FRAME_HEIGHT, GAP)
        fig = Figure()
        for k, frame in enumerate(frames):
            add_axes(fig, frame, prefix=f"axes{k}", x_labels=k == len(frames) - 1, y_target=3)
        x = t / scale
        for column, (name, color) in enumerate(EVENT_RATE_COLORS.items(), start=1):
            add_series(fig, frames[0], x, rows[:, column], color, f"events/{name}")
        add_legend(fig, frames[0], [(name, color) for name, color in EVENT_RATE_COLORS.items()], "events/legend")
        add_series(fig, frames[1], x, rows[:, 4], FRACTION_COLOR, "complete/line")
        add_series(fig, frames[2], x, rows[:, 5], BYTES_COLOR, "bytes/line")
        return fig

