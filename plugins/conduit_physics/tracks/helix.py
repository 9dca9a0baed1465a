"""The line a charged track follows in the AT-TPC, under the project's field convention (numpy only).

The convention (the ``[detector] magnetic_field`` doc, the simulator, the
clusterers' direction and ``estimate`` all follow it): with a positive field
a positive particle turns counter-clockwise in the pad-plane x-y frame as it
moves, so the azimuth around its circle grows along the path; with a
negative field it falls. Units: mm and radians.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CHAMBER_RADIUS", "turning_sense", "helix", "helices"]

#: Radius of the drift cylinder (mm).
CHAMBER_RADIUS = 275.0


def turning_sense(field: float) -> float:
    """+1 when a positive particle's azimuth around its circle grows along its path (field >= 0), else -1."""
    return 1.0 if field >= 0 else -1.0


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

    The turning sense follows the project's field convention (the ``[detector]
    magnetic_field`` doc, the simulator and ``estimate``): with a positive
    field a positive particle turns counter-clockwise in the pad-plane x-y
    frame as it moves, so the azimuth around the circle grows with the path
    for ``field >= 0`` and falls for a negative field. z advances by
    ``radius * cot(polar)`` per radian (forward tracks towards +z, backward
    ones, polar > 90°, towards the window). The line stops at ``turns`` turns
    or where it leaves the chamber (z outside [0, length] or r > chamber_radius).
    """
    cx, cy = center
    vx, vy, vz = vertex
    sense = turning_sense(field)
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
