"""Histograms with uniform bins, filled once per event, and the set that owns them and the gates.

The :class:`HistogramSet` is what the ``histogram`` sink fills; other sinks
see it through the shared :class:`conduit_physics.histograms.Histograms`
(:mod:`.shared`). Sinks run in different threads, so every access goes
through the set's lock (filling one event takes ~40 µs per histogram).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from conduit_physics.gates import Gate, as_level, evaluate_gate, gate_quantities
from conduit_physics.histograms import Axis, HistogramView
from conduit_physics.quantities import QUANTITIES, extract

from .spec import GateSpec, HistogramParams, HistogramSpec

__all__ = ["Histogram", "HistogramSet", "SMALL_FILL"]

#: Up to this many entries are binned with plain Python arithmetic (:meth:`Histogram.fill_values`).
SMALL_FILL = 32


class Histogram:
    """A 1-D or 2-D histogram of quantities, optionally gated. Not thread-safe on its own."""

    def __init__(self, name: str, x: Axis, y: Axis | None = None, gate: str | None = None):
        self.name = name
        self.x = x
        self.y = y
        self.gate = gate
        shape = (x.bins,) if y is None else (x.bins, y.bins)
        self.counts = np.zeros(shape, dtype=np.int64)
        #: Entries that landed in a bin.
        self.entries = 0
        #: Entries that passed the gate but fell outside the range (or were NaN).
        self.outside = 0

    @property
    def dimensions(self) -> int:
        return 1 if self.y is None else 2

    @property
    def quantities(self) -> tuple[str, ...]:
        return (self.x.quantity.name,) if self.y is None else (self.x.quantity.name, self.y.quantity.name)

    @property
    def is_track(self) -> bool:
        """True when filled once per track (an axis is a track quantity), else once per event."""
        return any(QUANTITIES[q].is_track for q in self.quantities)

    def fill(self, x: np.ndarray, y: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
        """Add entries at (x[, y]) where ``mask`` is True (vectorised)."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) <= SMALL_FILL:
            self.fill_values(x.tolist(), None if y is None else np.asarray(y, dtype=np.float64).tolist(),
                             None if mask is None else np.asarray(mask).tolist())
            return
        ix, ok = self.x.index(x)
        if y is not None and self.y is not None:
            iy, oky = self.y.index(np.asarray(y, dtype=np.float64))
            ok &= oky
        if mask is not None:
            ok &= mask
            considered = int(np.count_nonzero(mask))
        else:
            considered = len(x)
        n_ok = int(np.count_nonzero(ok))
        self.entries += n_ok
        self.outside += considered - n_ok
        if not n_ok:
            return
        if self.y is None:
            np.add.at(self.counts, ix[ok], 1)
        else:
            flat = self.counts.reshape(-1)
            np.add.at(flat, ix[ok] * self.y.bins + iy[ok], 1)

    def fill_values(self, xs: list[float], ys: list[float] | None = None, mask: list[bool] | None = None) -> None:
        """:meth:`fill` for a few entries given as Python lists: plain arithmetic, no array calls.

        An event has a handful of tracks, and numpy's per-call cost would be
        most of the work; the binning is :meth:`Axis.index`'s.
        """
        x = self.x
        x_scale = x.bins / (x.high - x.low)
        y = self.y if ys is not None else None
        y_scale = 0.0 if y is None else y.bins / (y.high - y.low)
        counts = self.counts
        for i, xv in enumerate(xs):
            if mask is not None and not mask[i]:
                continue
            sx = (xv - x.low) * x_scale
            if not (0.0 <= sx < x.bins):  # also NaN
                self.outside += 1
                continue
            if y is None:
                counts[int(sx)] += 1
            else:
                sy = (ys[i] - y.low) * y_scale  # type: ignore[index]
                if not (0.0 <= sy < y.bins):
                    self.outside += 1
                    continue
                counts[int(sx), int(sy)] += 1
            self.entries += 1

    def reset(self) -> None:
        self.counts[...] = 0
        self.entries = 0
        self.outside = 0

    def view(self) -> HistogramView:
        return HistogramView(self.name, self.x, self.y, self.gate, self.counts.copy(), self.entries, self.outside)


def _sized(values: list[float], size: int) -> list[float]:
    """An event quantity (one value) repeated for each track, or the track values themselves."""
    return values if len(values) == size else values * size


def _axis(name: str, bins: int | None, rng: tuple[float, float] | None, detector: Any) -> Axis:
    q = QUANTITIES[name]
    low, high = rng if rng is not None else q.default_range
    if rng is None and detector is not None and name in ("vertex_z", "center_z"):
        low, high = 0.0, float(detector.detector_length)
    return Axis(q, int(bins if bins is not None else q.default_bins), float(low), float(high))


class HistogramSet:
    """Named histograms and gates, filled per event under one lock.

    ``version`` increases on every change, so a viewer can tell whether to
    send the histograms again; ``events`` counts the events filled.
    """

    def __init__(self, histograms: Iterable[Histogram], gates: Iterable[Gate] = ()):
        self.histograms: dict[str, Histogram] = {h.name: h for h in histograms}
        self.gates: dict[str, Gate] = {g.name: g for g in gates}
        self.lock = threading.Lock()
        self.version = 0
        self.events = 0
        self._index()

    def _index(self) -> None:
        """What each histogram needs (its quantities and its gate's), and whether it fills without analysis."""
        self._needed: dict[str, tuple[str, ...]] = {}
        self._raw_only: dict[str, bool] = {}
        for h in self.histograms.values():
            needed = set(h.quantities)
            if h.gate is not None:
                needed |= gate_quantities(h.gate, self.gates)
            self._needed[h.name] = tuple(sorted(needed))
            self._raw_only[h.name] = not any(QUANTITIES[q].needs_analysis for q in needed)
        self._all_needed = tuple(sorted({q for qs in self._needed.values() for q in qs}))

    def set_gates(self, specs: Iterable[GateSpec]) -> None:
        """Replace the gates (validated specs) from the next event on; counts so far are kept (as SpecTcl does)."""
        axes = {name: h.quantities for name, h in self.histograms.items()}
        with self.lock:
            self.gates = {g.name: g for g in (spec.resolve(axes) for spec in specs)}
            self._index()
            self.version += 1

    @classmethod
    def from_specs(
        cls, histograms: Iterable[HistogramSpec], gates: Iterable[Gate] = (), detector: Any = None
    ) -> HistogramSet:
        """Build from validated specs and resolved gates (``detector`` gives vertex_z its default range)."""
        built = []
        for spec in histograms:
            x = _axis(spec.x, spec.x_bins, spec.x_range, detector)
            y = None if spec.y is None else _axis(spec.y, spec.y_bins, spec.y_range, detector)
            built.append(Histogram(spec.name, x, y, spec.gate))
        return cls(built, gates)

    @classmethod
    def from_params(cls, params: HistogramParams, detector: Any = None) -> HistogramSet:
        return cls.from_specs(params.all_histograms(), params.declared_gates().values(), detector)

    def __getitem__(self, name: str) -> Histogram:
        return self.histograms[name]

    def __contains__(self, name: str) -> bool:
        return name in self.histograms

    def __len__(self) -> int:
        return len(self.histograms)

    def fill(self, event: Any) -> None:
        """Fill every histogram from one event.

        An event whose analysis was skipped (``event.analysed`` False) only
        fills histograms of raw quantities (``n_traces``), so that skipped
        events do not bias the physics histograms.
        """
        values = extract(event, self._all_needed)
        estimates = event.get("estimates")
        n_tracks = 0 if estimates is None else len(estimates)
        for name in self._all_needed:  # a missing track quantity means "no tracks"
            if QUANTITIES[name].is_track and name not in values:
                values[name] = np.zeros(0)
        analysed = bool(getattr(event, "analysed", True))
        lists = {name: v.tolist() for name, v in values.items()}
        with self.lock:
            memo: dict = {}
            for h in self.histograms.values():
                if not analysed and not self._raw_only[h.name]:
                    continue
                if any(q not in values for q in h.quantities):
                    continue  # an event quantity whose artifact is absent
                track = h.is_track
                size = n_tracks if track else 1
                if size == 0:
                    continue
                mask = None
                if h.gate is not None:
                    level = as_level(evaluate_gate(h.gate, self.gates, values, n_tracks, memo), track, n_tracks)
                    mask = np.broadcast_to(level, (size,)).tolist()
                xs = _sized(lists[h.quantities[0]], size)
                ys = None if h.y is None else _sized(lists[h.quantities[1]], size)
                if size <= SMALL_FILL:
                    h.fill_values(xs, ys, mask)
                else:
                    h.fill(np.asarray(xs), None if ys is None else np.asarray(ys),
                           None if mask is None else np.asarray(mask))
            self.events += 1
            self.version += 1

    def reset(self) -> None:
        """Zero every histogram (SIGUSR1, or a new run)."""
        with self.lock:
            for h in self.histograms.values():
                h.reset()
            self.events = 0
            self.version += 1

    def snapshot(self) -> list[HistogramView]:
        """Copies of every histogram, taken under the lock."""
        with self.lock:
            return [h.view() for h in self.histograms.values()]
