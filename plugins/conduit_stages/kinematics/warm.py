"""Compile (or load from the numba cache) the fit before the first event."""

from __future__ import annotations

import math

import numpy as np
from conduit.artifacts import ESTIMATE_DTYPE, empty_kinematics

__all__ = ["synthetic_track", "warm_fit"]


def synthetic_track(kin, hypothesis: int = 0, energy: float = 5.0, polar: float = 1.0, azimuthal: float = 0.5,
                    z0: float = 400.0, step: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """(estimate row, points (n, 3) mm) of a noiseless track of the fit's own model, for warming up and tests."""
    from .helixfit import trajectory

    tab = kin.fit_tables[hypothesis]
    nodes = np.empty((6, 2000))
    kb = 0.299792458 * tab.charge * kin.field
    n, _ = trajectory(polar, azimuthal, energy, tab.mass, kb, tab.energy, tab.range_mm, tab.g, step, 400.0, nodes)
    xs, ys, s = nodes[0, :n], nodes[1, :n], nodes[5, :n]
    points = np.column_stack([math.sin(polar) * xs, math.sin(polar) * ys, z0 + s * math.cos(polar)])
    est = np.zeros(1, dtype=ESTIMATE_DTYPE)[0]
    brho = kin.reaction.ejectiles[hypothesis].species.brho(energy)
    est["vertex_z"], est["polar"], est["azimuthal"], est["brho"] = z0, polar, azimuthal, brho
    est["radius"] = abs(brho / kin.field) * 1e3 * math.sin(polar) if kin.field else 0.0
    return est, points


def warm_fit(kin) -> None:
    """Run one synthetic track through the per-track computation (fit included when enabled)."""
    est, points = synthetic_track(kin)
    row = empty_kinematics(1)
    kin.track(est, points, 0, row)
