"""What the event display draws, computed with numpy only (no rerun import): testable on its own.

Units: mm for positions, ADC for amplitudes, time buckets for trace samples.
"""

from __future__ import annotations

import numpy as np

from conduit.artifacts import INTEGRAL
from conduit.event import PAD, SAMPLES

__all__ = [
    "CHAMBER_RADIUS",
    "chamber_outline",
    "helix",
    "helices",
    "colormap",
    "pad_charges",
    "strongest_traces",
    "pad_outlines",
    "label_colors",
    "cloud_charge",
]

#: Radius of the drift cylinder (mm).
CHAMBER_RADIUS = 275.0

# Viridis-like stops (dark blue -> green -> yellow): readable on the viewer's dark background.
_STOPS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def colormap(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """RGB uint8 (N, 3) for ``values`` scaled linearly from ``low`` (default min) to ``high`` (default 99th pct)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return np.zeros((0, 3), dtype=np.uint8)
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if low is None and finite.size else (low or 0.0)
    hi = float(np.percentile(finite, 99)) if high is None and finite.size else (high or 1.0)
    if hi <= lo:
        hi = lo + 1.0
    t = np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), 0.0, 1.0) * (len(_STOPS) - 1)
    i = np.minimum(t.astype(np.int64), len(_STOPS) - 2)
    f = (t - i)[:, None]
    return np.round(_STOPS[i] * (1 - f) + _STOPS[i + 1] * f).astype(np.uint8)


def label_colors(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (golden-angle hues) for cluster labels (computed once per run)."""
    import colorsys

    rgb = [colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.75, 0.95) for k in range(n)]
    return np.round(np.array(rgb, dtype=np.float64).reshape(-1, 3) * 255).astype(np.uint8)


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


def helix(
    center: tuple[float, float],
    radius: float,
    vertex: tuple[float, float, float],
    polar: float,
    field: float,
    *,
    length: float,
    chamber_radius: float = CHAMBER_RADIUS,
    turns: float = 1.0,
    points: int = 200,
) -> np.ndarray:
    """(P, 3) points of the helix leaving ``vertex`` on the circle (``center``, ``radius``) at polar angle ``polar``.

    A positive particle in a field along +z turns clockwise seen from +z
    (F = q v x B), so the sense of rotation is ``-sign(field)``. z advances by
    ``radius * cot(polar)`` per radian. The line stops at ``turns`` turns or
    where it leaves the chamber (z outside [0, length] or r > chamber_radius).
    """
    cx, cy = center
    vx, vy, vz = vertex
    sense = -1.0 if field >= 0 else 1.0
    a0 = np.arctan2(vy - cy, vx - cx)
    t = np.linspace(0.0, 2 * np.pi * turns, points)
    x = cx + radius * np.cos(a0 + sense * t)
    y = cy + radius * np.sin(a0 + sense * t)
    tan = np.tan(polar)
    dz = radius * t / tan if abs(tan) > 1e-9 else np.zeros_like(t)
    z = vz + dz
    inside = (z >= 0.0) & (z <= length) & (np.hypot(x, y) <= chamber_radius)
    # Keep the leading run of points inside the chamber (the vertex itself may sit just outside).
    outside = np.flatnonzero(~inside[1:]) + 1
    stop = int(outside[0]) if outside.size else points
    return np.column_stack([x, y, z])[: max(stop, 2)]


def helices(estimates: np.ndarray, field: float, length: float, points: int = 200) -> list[np.ndarray]:
    """One helix strip per estimate row (rows with a non-finite or zero radius are skipped)."""
    out = []
    for row in estimates:
        r = float(row["radius"])
        if not np.isfinite(r) or r <= 0 or not np.isfinite(row["polar"]):
            out.append(np.zeros((0, 3)))
            continue
        out.append(helix((float(row["center_x"]), float(row["center_y"])), r,
                         (float(row["vertex_x"]), float(row["vertex_y"]), float(row["vertex_z"])),
                         float(row["polar"]), field, length=length, points=points))
    return out


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


def strongest_traces(traces: np.ndarray, count: int, amplitude: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(pad ids, samples (k, 512)) of the ``count`` rows with the largest amplitude, strongest first.

    ``amplitude`` (from :func:`pad_charges`) avoids computing it twice.
    """
    if amplitude is None:
        _, amplitude = pad_charges(traces)
    if count <= 0 or traces.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 512))
    k = min(count, traces.shape[0])
    order = np.argsort(-amplitude, kind="stable")[:k]
    return traces[order, PAD].astype(np.int64), traces[order][:, SAMPLES].astype(np.float64)


def pad_outlines(vertices: np.ndarray) -> np.ndarray:
    """Closed triangles (N, 4, 2) from pad vertices (N, 3, 2), for LineStrips2D."""
    return np.concatenate([vertices, vertices[:, :1]], axis=1)


def cloud_charge(cloud: np.ndarray) -> np.ndarray:
    """The charge used to colour points: the integral column (ADC·TB), as Spyral's later phases use."""
    return cloud[:, INTEGRAL]
