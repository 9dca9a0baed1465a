"""A small synthetic point cloud that exercises track-finding code once (warm-up of compiled kernels, tests)."""

from __future__ import annotations

import numpy as np

__all__ = ["warm_cloud"]


def warm_cloud(points_per_arc: int = 60) -> np.ndarray:
    """Two helical arcs of ``points_per_arc`` points plus a few scattered points, sorted by z (cloud layout)."""
    rng = np.random.default_rng(1)
    parts = []
    for centre, phase in (((60.0, 0.0), 0.0), ((-50.0, 40.0), 2.0)):
        s = np.linspace(0, 2.5, points_per_arc)
        x = centre[0] + 60 * np.cos(s + phase)
        y = centre[1] + 60 * np.sin(s + phase)
        z = 300 + 80 * s
        parts.append(np.column_stack([x, y, z]))
    parts.append(rng.uniform([-200, -200, 0], [200, 200, 1000], (6, 3)))
    xyz = np.vstack(parts)
    cloud = np.zeros((len(xyz), 8))
    cloud[:, :3] = xyz
    cloud[:, 3] = 100.0
    cloud[:, 4] = 1000.0
    cloud[:, 7] = 0.5
    return cloud[np.argsort(cloud[:, 2], kind="stable")]
