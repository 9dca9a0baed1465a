"""Histograms as other stages see them: the shared object the ``histogram`` sink publishes.

The ``histogram`` sink fills the run's histograms; the ``rerun`` sink draws
them and the ``hdf5`` sink saves them into its recording. They share them
through :class:`Histograms`, looked up by type among the run's shared objects
(:mod:`conduit.shared`), never through the histogram sink's internals::

    from conduit_physics.histograms import Histograms

    histograms = self.context.shared.get(Histograms)  # None without a histogram stage
    if histograms is not None and histograms.version != self.drawn_version:
        for view in histograms.snapshot():         # HistogramView: copies, safe to keep
            draw(view.name, view.x.edges, view.counts)

Saving is coordinated so that no order of closing loses them: a sink that
records the histograms in its own file publishes itself as a
:class:`HistogramRecorder` (in ``open()``, before knowing whether a histogram
stage exists) and calls :meth:`Histograms.recorder_finished` once it
knows whether it saved them; the histogram sink writes its own file unless a
recorder saved them, waiting for recorders still closing (so a recorder that
fails while closing never loses them). Units: as the quantities
(:mod:`conduit_physics.quantities`), angles in degrees.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from .gates import Gate
from .quantities import Quantity

__all__ = ["Axis", "HistogramView", "Histograms", "HistogramRecorder"]


@dataclasses.dataclass(frozen=True)
class Axis:
    """Uniform binning of one quantity: ``bins`` bins over [low, high) in the quantity's unit."""

    quantity: Quantity
    bins: int
    low: float
    high: float

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)

    @property
    def label(self) -> str:
        """'Bρ (T·m)': the quantity's title and unit."""
        unit = self.quantity.unit
        return f"{self.quantity.title} ({unit})" if unit else self.quantity.title

    def index(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bin index, inside-range mask) of each value; NaN and out-of-range values are outside."""
        scaled = (values - self.low) * (self.bins / (self.high - self.low))
        inside = (scaled >= 0) & (scaled < self.bins)  # False for NaN
        idx = np.where(inside, scaled, 0).astype(np.int64)
        return idx, inside


@dataclasses.dataclass(frozen=True)
class HistogramView:
    """A copy of one histogram's state: ``counts`` int64 (x bins,) or (x bins, y bins)."""

    name: str
    x: Axis
    y: Axis | None
    gate: str | None
    counts: np.ndarray
    entries: int  #: entries that landed in a bin
    outside: int  #: entries that passed the gate but fell outside the range (or were NaN)

    @property
    def dimensions(self) -> int:
        return 1 if self.y is None else 2

    @property
    def per_track(self) -> bool:
        """True when filled once per track (an axis is a track quantity), else once per event."""
        return any(a.quantity.is_track for a in (self.x, self.y) if a is not None)

    @property
    def title(self) -> str:
        """'pid · √(dE/dx) vs Bρ [gate protons]' (2-D) or 'vertex_z · vertex z' (1-D)."""
        what = self.x.quantity.title if self.y is None else f"{self.y.quantity.title} vs {self.x.quantity.title}"
        gate = f" [gate {self.gate}]" if self.gate else ""
        return f"{self.name} · {what}{gate}"


class HistogramRecorder(abc.ABC):
    """A sink that saves the run's histograms in its own output (the ``hdf5`` sink with ``histograms = true``)."""

    @abc.abstractmethod
    def histograms_saved(self) -> bool | None:
        """True once saved, False when it will not save them (failed, or never began), None while undecided."""


class Histograms(abc.ABC):
    """The run's histograms and gates; thread-safe (sinks run in different threads)."""

    @property
    @abc.abstractmethod
    def version(self) -> int:
        """Increases on every change (a filled event, a reset): draw again only when it moved."""

    @property
    @abc.abstractmethod
    def events(self) -> int:
        """Events filled since the start (or the last reset)."""

    @abc.abstractmethod
    def snapshot(self) -> list[HistogramView]:
        """A consistent copy of every histogram, in declaration order."""

    @abc.abstractmethod
    def gates(self) -> list[Gate]:
        """The resolved gates (polygons and intervals in their histogram's axis units)."""

    @abc.abstractmethod
    def write(self, group: Any) -> None:
        """Save the histograms and gates into the h5py group ``group`` under ``histograms`` (docs/outputs.md)."""

    @abc.abstractmethod
    def recorder_finished(self, recorder: HistogramRecorder) -> None:
        """Called by a :class:`HistogramRecorder` once :meth:`~HistogramRecorder.histograms_saved` is decided."""
