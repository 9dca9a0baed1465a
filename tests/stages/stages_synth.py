"""Synthetic inputs with known answers for the analysis-stage tests.

* :func:`trace_zoo`: raw GET trace rows (pedestal + noise + pulses) of many
  kinds: noise only, single, double, saturated (flat top at 4095), integer
  plateaus, wide, many-peak, spikes, pulses at the edges, constant traces.
* :func:`helix_points`: points along an ideal helix from a vertex with given
  angles and radius, sampled like a pad plane would (for clustering and
  estimation tests).
"""

from __future__ import annotations

import math

import numpy as np

N_COLUMNS = 517
T = np.arange(512, dtype=np.float64)

KINDS = (
    "noise",
    "single",
    "double",
    "saturated",
    "plateau",
    "wide",
    "many",
    "spike",
    "edge",
    "dip",
    "constant",
    "near_threshold",
)


def _pulse(centre: float, amplitude: float, sigma: float) -> np.ndarray:
    return amplitude * np.exp(-0.5 * ((T - centre) / sigma) ** 2)


def trace_samples(rng: np.random.Generator, kind: str) -> np.ndarray:
    """512 raw ADC samples (int) of one trace of the given kind."""
    pedestal = rng.uniform(250.0, 500.0)
    noise = rng.uniform(1.5, 7.0)
    x = pedestal + rng.normal(0.0, noise, 512)
    if kind == "noise":
        pass
    elif kind == "single":
        x += _pulse(rng.uniform(30, 480), rng.uniform(30, 2500), rng.uniform(1.5, 8))
    elif kind == "double":
        c1 = rng.uniform(40, 400)
        x += _pulse(c1, rng.uniform(60, 1500), rng.uniform(1.5, 5))
        x += _pulse(c1 + rng.uniform(8, 110), rng.uniform(60, 1500), rng.uniform(1.5, 5))
    elif kind == "saturated":
        x += _pulse(rng.uniform(40, 470), rng.uniform(5000, 20000), rng.uniform(2, 6))
        if rng.random() < 0.5:
            x += _pulse(rng.uniform(40, 470), rng.uniform(5000, 20000), rng.uniform(2, 6))
    elif kind == "plateau":
        c = int(rng.integers(40, 460))
        w = int(rng.integers(2, 9))
        top = rng.uniform(80, 800)
        x += _pulse(c, top, 3.0)
        x[c : c + w] = np.round(pedestal + top + 5)  # exact integer plateau
    elif kind == "wide":
        x += _pulse(rng.uniform(100, 400), rng.uniform(60, 600), rng.uniform(15, 40))
    elif kind == "many":
        count = int(rng.integers(6, 9))
        start = rng.uniform(10, 500 - 56 * (count - 1))
        for c in start + 56 * np.arange(count):
            x += _pulse(c, rng.uniform(100, 600), rng.uniform(1, 3))
    elif kind == "spike":
        for c in rng.integers(5, 505, rng.integers(1, 4)):
            x[c] += rng.uniform(40, 400)
    elif kind == "edge":
        c = rng.choice([rng.uniform(-3, 6), rng.uniform(505, 514)])
        x += _pulse(c, rng.uniform(60, 1000), rng.uniform(1.5, 4))
    elif kind == "dip":
        x -= _pulse(rng.uniform(50, 450), rng.uniform(50, 300), rng.uniform(2, 6))
        x += _pulse(rng.uniform(50, 450), rng.uniform(50, 300), rng.uniform(2, 6))
    elif kind == "constant":
        x[:] = round(pedestal)
    elif kind == "near_threshold":
        x += _pulse(rng.uniform(30, 480), rng.uniform(35, 70), rng.uniform(1.5, 4))
    else:
        raise ValueError(kind)
    return np.clip(np.round(x), 0, 4095).astype(np.int64)


def trace_zoo(rng: np.random.Generator, per_kind: int, pads: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(n, 517) int16 trace matrix with ``per_kind`` traces of every kind; pad ids from ``pads``."""
    kinds = [k for k in KINDS for _ in range(per_kind)]
    traces = np.zeros((len(kinds), N_COLUMNS), dtype=np.int16)
    chosen = rng.choice(pads, size=len(kinds), replace=False)
    for i, kind in enumerate(kinds):
        traces[i, 4] = chosen[i]
        traces[i, 5:] = trace_samples(rng, kind)
    return traces, kinds


def helix_points(
    vertex: tuple[float, float, float],
    polar: float,
    azimuth: float,
    radius: float,
    *,
    field_sign: float = 1.0,
    length: float | None = None,
    step: float = 3.0,
    shrink: float = 0.0,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
    max_r: float = 270.0,
    z_range: tuple[float, float] = (0.0, 1000.0),
) -> np.ndarray:
    """Points (x, y, z) along a helix starting at ``vertex``.

    ``polar`` is from +z (rad), ``azimuth`` the direction of the initial
    transverse momentum (rad), ``radius`` the initial circle radius (mm).
    With ``field_sign`` > 0 the particle turns counter-clockwise (conduit's
    convention for a positive particle). ``shrink`` makes the radius fall
    linearly with path length (fraction lost over ``length``). Points are
    ``step`` mm apart along the path; the helix stops at the chamber wall,
    the window or the pad plane.
    """
    sense = 1.0 if field_sign >= 0 else -1.0
    length = length if length is not None else 2.0 * math.pi * radius / max(math.sin(polar), 1e-3)
    s = np.arange(0.0, length, step)
    sin_t, cos_t = math.sin(polar), math.cos(polar)
    r = radius * (1.0 - shrink * s / length)
    # integrate the turning angle: dphi/ds = sin(theta) / r
    dphi = np.concatenate([[0.0], np.cumsum(sin_t / r[:-1] * step)])
    heading = azimuth + sense * dphi
    x = vertex[0] + np.concatenate([[0.0], np.cumsum(np.cos(heading[:-1]) * sin_t * step)])
    y = vertex[1] + np.concatenate([[0.0], np.cumsum(np.sin(heading[:-1]) * sin_t * step)])
    z = vertex[2] + cos_t * s
    inside = (np.hypot(x, y) < max_r) & (z >= z_range[0]) & (z <= z_range[1])
    stop = np.argmin(inside) if not inside.all() else len(s)
    pts = np.column_stack([x, y, z])[:stop]
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        pts = pts + rng.normal(0, noise, pts.shape)
    return pts


def cloud_from_points(points: np.ndarray, charge: float | np.ndarray = 100.0) -> np.ndarray:
    """A cloud-layout (N, 8) array from (x, y, z) points, sorted by z."""
    n = len(points)
    cloud = np.zeros((n, 8))
    cloud[:, :3] = points
    cloud[:, 3] = charge
    cloud[:, 4] = charge * 10.0 if np.isscalar(charge) else np.asarray(charge) * 10.0
    cloud[:, 5] = np.arange(n)
    cloud[:, 6] = (1000.0 - points[:, 2]) / 1000.0 * 550.0 + 10.0
    cloud[:, 7] = 0.5
    return cloud[np.argsort(cloud[:, 2], kind="stable")]
