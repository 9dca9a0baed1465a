"""How a histogram is binned for display: merged bins when there are few entries.

A histogram is filled (and saved) with its own bins, fine enough for a few
hundred thousand tracks. Drawn with those bins after a few hundred tracks it is
a scatter of single counts. For display only, neighbouring bins are merged by
a factor that divides the bin count, so that the shown bins suit the number of
entries:

* 1-D: about ``2·√N`` bins (Freedman–Diaconis-like growth), at least
  :data:`MIN_BINS`;
* 2-D: about ``√N`` bins per axis, at least :data:`MIN_BINS`.

Axes with at most :data:`KEEP_BELOW` bins (multiplicities, indices) are never
merged. The saved histograms keep their full binning.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["MIN_BINS", "KEEP_BELOW", "merge_factor", "DisplayHistogram", "for_display"]

#: Fewest bins a merged display axis keeps.
MIN_BINS = 20
#: Axes with this many bins or fewer are shown as filled.
KEEP_BELOW = 40


def merge_factor(bins: int, entries: int, dimensions: int) -> int:
    """The factor (a divisor of ``bins``) by which display bins merge the filled ones."""
    if bins <= KEEP_BELOW:
        return 1
    target = 2.0 * math.sqrt(max(entries, 1)) if dimensions == 1 else math.sqrt(max(entries, 1))
    target = max(target, MIN_BINS)
    best = 1
    for factor in range(1, bins + 1):
        if bins % factor:
            continue
        shown = bins // factor
        if shown < MIN_BINS:
            break
        best = factor
        if shown <= target:
            break
    return best


@dataclasses.dataclass(frozen=True)
class DisplayHistogram:
    """Counts and edges as drawn: ``counts`` (x bins,) or (x bins, y bins), merged by ``factors``."""

    counts: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray | None
    factors: tuple[int, ...]


def _merge(counts: np.ndarray, axis: int, factor: int) -> np.ndarray:
    if factor == 1:
        return counts
    shape = list(counts.shape)
    shape[axis : axis + 1] = [shape[axis] // factor, factor]
    return counts.reshape(shape).sum(axis=axis + 1)


def for_display(counts: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray | None, entries: int
                ) -> DisplayHistogram:
    """The display binning of a 1-D (``y_edges`` None) or 2-D histogram with ``entries`` entries."""
    counts = np.asarray(counts)
    dims = 1 if y_edges is None else 2
    fx = merge_factor(len(x_edges) - 1, entries, dims)
    merged = _merge(counts, 0, fx)
    xe = np.asarray(x_edges)[::fx]
    if y_edges is None:
        return DisplayHistogram(merged, xe, None, (fx,))
    fy = merge_factor(len(y_edges) - 1, entries, dims)
    return DisplayHistogram(_merge(merged, 1, fy), xe, np.asarray(y_edges)[::fy], (fx, fy))
