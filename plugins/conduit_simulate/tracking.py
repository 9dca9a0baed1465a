"""numba kernel: a charged particle's helix in the solenoid field with continuous energy loss.

The field is uniform and axial. Between steps the momentum is constant and
the particle moves exactly on a helix; the energy lost over a step is taken
at the step's midpoint energy (second order). Sign convention of
:class:`conduit.detector.DetectorParams`: with a positive ``magnetic_field``
a positive ion turns counter-clockwise in the pad-plane x-y frame (the
azimuth of its direction grows at |B|/(Bρ) per unit transverse path), as
tracks do in AT-TPC data; the physical field then points along −z. The
drift field (tens of kV/m) is negligible for MeV ions and is not applied.

Each step leaves one deposit point at its midpoint: position (mm) and energy
(MeV). Tracking stops when the particle stops (kinetic energy below
``t_stop``), leaves the chamber radius, or leaves 0 ≤ z ≤ L.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = ["track_particle"]

#: c in 10⁶ m/s: Bρ [T·m] = p [MeV/c] / (299.792458 Z)
_C = 299.792458
#: Largest fraction of the kinetic energy lost in one step.
_MAX_LOSS = 0.05
#: Largest turn of the transverse direction in one step (rad).
_MAX_TURN = 0.1


@njit(cache=True, nogil=True)
def _dedx(t, log_t0, dlog, table):
    """Stopping power (MeV/mm) at kinetic energy t by linear interpolation in ln T."""
    if t <= 0.0:
        return table[0]
    u = (math.log(t) - log_t0) / dlog
    if u <= 0.0:
        return table[0]
    n = table.shape[0]
    if u >= n - 1:
        return table[n - 1]
    i = int(u)
    f = u - i
    return table[i] * (1.0 - f) + table[i + 1] * f


@njit(cache=True, nogil=True)
def track_particle(
    x0,
    y0,
    z0,
    theta,
    phi,
    t0,
    mass,
    charge,
    bfield,
    log_t0,
    dlog,
    table,
    length,
    radius,
    step_max,
    t_stop,
    out_x,
    out_y,
    out_z,
    out_de,
    start,
):
    """Track one particle; write deposits into ``out_*[start:]``; return the index after the last one.

    Positions in mm, angles in rad, energies in MeV, ``bfield`` in T,
    ``table`` the stopping power (MeV/mm) on the grid exp(log_t0 + i·dlog).
    Stops early (silently) when the output arrays are full.
    """
    cap = out_x.shape[0]
    n = start
    x, y, z = x0, y0, z0
    sin_t = math.sin(theta)
    u_perp = sin_t
    u_z = math.cos(theta)
    alpha = phi  # azimuth of the direction in the transverse plane
    t = t0
    r2max = radius * radius
    while n < cap and t > t_stop:
        s_now = _dedx(t, log_t0, dlog, table)
        ds = step_max
        limit = _MAX_LOSS * t / s_now
        if limit < ds:
            ds = limit
        t_mid = t - 0.5 * ds * s_now
        if t_mid < 0.5 * t:
            t_mid = 0.5 * t
        p_mid = math.sqrt(t_mid * (t_mid + 2.0 * mass))
        kappa = bfield * _C * charge / (p_mid * 1000.0)  # signed turn rate (1/mm of path, for u_perp = 1)
        if abs(kappa) * ds > _MAX_TURN:
            ds = _MAX_TURN / abs(kappa)
        de = ds * _dedx(t_mid, log_t0, dlog, table)
        last = False
        if de >= t - t_stop:
            # Stops within this step: shorten it to the residual path.
            ds = ds * t / de
            de = t
            last = True
        # Midpoint and end of the helix step.
        if abs(kappa) * u_perp > 1e-12:
            rad = u_perp / kappa
            a_mid = alpha + 0.5 * kappa * ds
            a_end = alpha + kappa * ds
            xm = x + rad * (math.sin(a_mid) - math.sin(alpha))
            ym = y - rad * (math.cos(a_mid) - math.cos(alpha))
            xe = x + rad * (math.sin(a_end) - math.sin(alpha))
            ye = y - rad * (math.cos(a_end) - math.cos(alpha))
        else:
            a_end = alpha
            xm = x + 0.5 * ds * u_perp * math.cos(alpha)
            ym = y + 0.5 * ds * u_perp * math.sin(alpha)
            xe = x + ds * u_perp * math.cos(alpha)
            ye = y + ds * u_perp * math.sin(alpha)
        zm = z + 0.5 * ds * u_z
        ze = z + ds * u_z
        if xm * xm + ym * ym > r2max or zm < 0.0 or zm > length:
            break
        out_x[n] = xm
        out_y[n] = ym
        out_z[n] = zm
        out_de[n] = de
        n += 1
        if last:
            break
        x, y, z, alpha = xe, ye, ze, a_end
        t -= de
        if x * x + y * y > r2max or z < 0.0 or z > length:
            break
    return n
