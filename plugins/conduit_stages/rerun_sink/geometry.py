"""What the event display draws, computed with numpy only (no rerun import): testable on its own.

Units: mm for positions, ADC for amplitudes, time buckets for trace samples.
"""

from __future__ import annotations

import numpy as np

from conduit.artifacts import AMPLITUDE, PAD_ID
from conduit.event import PAD, SAMPLES

from conduit_physics.tracks.helix import CHAMBER_RADIUS, helices, helix, turning_sense

from .colors import colormap, label_colors

__all__ = [
    "CHAMBER_RADIUS",
    "SATURATION_ADC",
    "chamber_outline",
    "turning_sense",
    "helix",
    "helices",
    "colormap",
    "pad_charges",
    "select_traces",
    "strongest",
    "strongest_note",
    "pad_outlines",
    "label_colors",
    "cloud_charge",
]

#: Largest value of the GET ADC (12 bits): a trace reaching it is saturated.
SATURATION_ADC = 4095

def chamber_outline(length: float, radius: float = CHAMBER_RADIUS, segments: int = 96) -> list[np.ndarray]:
    """Line strips (each (K, 3)) outlining the drift cylinder: two circles, 8 generatrices, the beam axis."""
    a = np.linspace(0.0, 2 * np.pi, segments + 1)
    circle = np.column_stack([radius * np.cos(a), radius * np.sin(a)])
    strips = [np.column_stack([circle, np.full(len(a), z)]) for z in (0.0, length)]
    for angle in np.linspace(0.0, 2 * np.pi, 8, endpoint=False):
        x, y = radius * np.cos(angle), radius * np.sin(angle)
        strips.append(np.array([[x, y, 0.0], [x, y, length]]))
    strips.append(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, length]]))
    return strips


def pad_charges(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pad ids, amplitude) per trace row: peak height above the row's baseline (ADC).

    The baseline is the median of every 8th sample: as robust to the pulse as
    the full median for display purposes, and 8 times cheaper on 10k rows.
    """
    if traces.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    samples = traces[:, SAMPLES]
    baseline = np.median(samples[:, ::8], axis=1)
    amplitude = samples.max(axis=1) - baseline
    return traces[:, PAD].astype(np.int64), amplitude.astype(np.float64)


def select_traces(traces: np.ndarray, amplitude: np.ndarray, how: str | list[int], count: int,
                  cloud: np.ndarray | None = None, labels: np.ndarray | None = None,
                  maxima: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """(row indices of ``traces`` to draw, two short lines saying what they are).

    ``how``: ``"strongest"`` (the ``count`` largest amplitudes among the
    unsaturated traces: a saturated pulse is flat-topped and says little),
    ``"cluster"`` (the strongest traces among the pads of the event's largest
    cluster, from ``cloud``'s pad column and the cluster ``labels``; the
    strongest unsaturated ones when the event has no cluster), or a list of
    pad ids (drawn in that order, at most ``count``). ``maxima``: the largest
    sample of each row when already known (:func:`.kernels.peaks`).
    """
    n = traces.shape[0]
    if n == 0 or count <= 0:
        return np.zeros(0, dtype=np.int64), ["no traces", ""]
    saturated = (traces[:, SAMPLES].max(axis=1) if maxima is None else maxima) >= SATURATION_ADC
    if isinstance(how, (list, tuple)):
        pads = traces[:, PAD].astype(np.int64)
        wanted = [int(p) for p in how][:count]
        rows = [int(np.flatnonzero(pads == p)[0]) for p in wanted if np.any(pads == p)]
        absent = [p for p in wanted if not np.any(pads == p)]
        return np.asarray(rows, dtype=np.int64), [
            "pads chosen in the pipeline", f"no trace: {', '.join(map(str, absent))}" if absent else ""]
    if how == "cluster" and cloud is not None and labels is not None and len(labels) == len(cloud) and (
            np.asarray(labels) >= 0).any():
        labels = np.asarray(labels)
        values, sizes = np.unique(labels[labels >= 0], return_counts=True)
        biggest = int(values[np.argmax(sizes)])
        cluster_pads = np.unique(cloud[labels == biggest, PAD_ID].astype(np.int64))
        candidates = np.flatnonzero(np.isin(traces[:, PAD].astype(np.int64), cluster_pads))
        order = strongest(candidates, amplitude, count)
        return order, [f"largest cluster ({biggest})", f"strongest {len(order)} of {len(cluster_pads)} pads"]
    candidates = np.flatnonzero(~saturated)
    return strongest(candidates, amplitude, count), strongest_note(n - len(candidates))


def strongest_note(saturated: int) -> list[str]:
    """What the traces panel says of its ``"strongest"`` traces when ``saturated`` rows were left out."""
    return ["strongest unsaturated", f"{saturated} saturated not shown" if saturated else ""]


def strongest(candidates: np.ndarray, amplitude: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` rows of ``candidates`` with the largest ``amplitude``, largest first, ties in row order:
    ``candidates[np.argsort(-amplitude[candidates], kind="stable")][:count]``, sorting only the rows at or
    above the count-th largest amplitude (a partition finds it) instead of all ~700."""
    values = amplitude[candidates]
    if len(values) > count > 0 and not np.isnan(values).any():  # (a partition counts NaNs as the largest)
        cut = np.partition(values, len(values) - count)[len(values) - count]
        keep = values >= cut  # every row of the first ``count`` (ties at the cut included, in row order)
        candidates, values = candidates[keep], values[keep]
    return candidates[np.argsort(-values, kind="stable")][:count]


def pad_outlines(vertices: np.ndarray) -> np.ndarray:
    """Closed triangles (N, 4, 2) from pad vertices (N, 3, 2), for LineStrips2D."""
    return np.concatenate([vertices, vertices[:, :1]], axis=1)


def cloud_charge(cloud: np.ndarray) -> np.ndarray:
    """The charge used to colour points: the peak amplitude above baseline (ADC), as on the pad plane."""
    return cloud[:, AMPLITUDE]
