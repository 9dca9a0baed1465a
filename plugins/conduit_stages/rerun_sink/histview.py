"""Histograms as figures: titled, numbered axes, display binning, a log colour scale and gate polygons.

1-D histograms are step outlines with the count of each bin in its tooltip;
2-D histograms are heat maps on a logarithmic colour scale (one count is a
visible blue, empty bins are background) with a colour bar. Both come from
:func:`.display.for_display`, which merges bins while the histogram holds
few entries. The histograms come from the run's
:class:`~conduit_physics.histograms.Histograms`.
"""

from __future__ import annotations

import functools

import numpy as np

from conduit_physics.histograms import HistogramView

from .colors import ColorScale
from .display import for_display
from .kinematic_curves import add_curves, overlays
from .plot2d import (Axis, Figure, Frame, Texts, add_axes, add_colorbar, add_heatmap, add_polygon, add_steps,
                     format_ticks, nice_upper, SECOND_LINE)

__all__ = ["histogram_figure", "GATE_COLORS", "counted_things"]

GATE_COLORS = [(255, 255, 255), (255, 120, 200), (120, 255, 230), (255, 200, 120)]


def counted_things(view: HistogramView) -> str:
    """'tracks' for histograms filled once per track, 'events' for event quantities."""
    return "tracks" if view.per_track else "events"


def _per_bin(edges: np.ndarray, unit: str) -> str:
    """'4 mm' (the bin width with its unit), or 'bin' for unit-less bins of width 1."""
    width = float(edges[1] - edges[0])
    if not unit and abs(width - 1.0) < 1e-9:
        return "bin"
    text = format_ticks([0.0, width])[1]
    return f"{text} {unit}".strip()


@functools.lru_cache(maxsize=256)
def _axes(frame: Frame, grid: bool) -> dict:
    """The parts :func:`.plot2d.add_axes` draws for ``frame``, made once per frame: a histogram's axes change only
    when its range does, and :func:`.draw.log_figure` skips a part it has just sent without comparing it."""
    fig = Figure()
    add_axes(fig, frame, grid=grid)
    return fig.parts


def histogram_figure(view: HistogramView, gates=(), curves=()) -> Figure:
    """The figure of one histogram; ``gates`` are the resolved gates drawn on it (polygons of 2-D ones),
    ``curves`` the kinematic curves drawn on polar-angle vs B-rho histograms."""
    shown = for_display(view.counts, view.x.edges, None if view.y is None else view.y.edges, view.entries)
    things = counted_things(view)
    fig = Figure()
    info = f"N = {view.entries}" + (f"  (+{view.outside} outside)" if view.outside else "")
    if view.y is None:
        frame = Frame(Axis(view.x.low, view.x.high, view.x.label),
                      Axis(0.0, nice_upper(shown.counts.max(initial=0)),
                           f"{things} / {_per_bin(shown.x_edges, view.x.quantity.unit)}"))
        fig.parts.update(_axes(frame, True))
        edges = shown.x_edges
        hover = [f"{view.x.quantity.title} {lo:g} to {hi:g}: {int(c)} {things}"
                 for lo, hi, c in zip(edges[:-1], edges[1:], shown.counts)]
        add_steps(fig, frame, edges, shown.counts, hover=hover)
    else:
        frame = Frame(Axis(view.x.low, view.x.high, view.x.label), Axis(view.y.low, view.y.high, view.y.label))
        high = max(float(shown.counts.max(initial=0)), 2.0)
        scale = ColorScale(1.0, high, log=True)
        add_heatmap(fig, frame, shown.counts, scale)
        fig.parts.update(_axes(frame, False))
        add_colorbar(fig, frame, scale, f"{things}/bin")
        k = 0
        for gate in gates:
            if gate.kind == "polygon" and gate.histogram == view.name and gate.polygon is not None:
                add_polygon(fig, frame, gate.polygon, gate.name, GATE_COLORS[k % len(GATE_COLORS)], f"gate/{k}")
                k += 1
        if curves and overlays(view):
            add_curves(fig, frame, curves)
    fig.add("info", Texts(np.array([[frame.left - 60.0, frame.bottom + SECOND_LINE]]), [info],
                          color=(170, 170, 180)))
    return fig
