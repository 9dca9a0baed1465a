"""numba: the fast per-track fit, a charged particle in the solenoid field with energy loss.

Model. A particle of charge Z and mass m leaves the vertex (x0, y0, z0) with
kinetic energy T0 in the direction (θ, φ). The field is uniform and axial
(sign convention of :class:`conduit.detector.DetectorParams`), so the pitch
angle θ stays constant while the particle slows down: along the path length s

* z(s) = z0 + s cos θ;
* the direction's azimuth turns at dα/ds = k_B / p(s), k_B = 0.299792458 Z B
  (p in MeV/c, s in mm), so α(s) = φ + k_B [G(R0) − G(R0 − s)] with R0 the
  residual range at T0 and G(r) = ∫₀ʳ dr' / p(E(r')) tabulated once per
  species from the range-energy table (no step-size error in the turning);
* x(s) = x0 + sin θ ∫ cos α, y(s) = y0 + sin θ ∫ sin α, integrated exactly
  over each step of ``step`` mm with α linear within the step.

The trajectory is sampled every ``step`` mm until it is past the cluster's
last point or the particle stops. Each cluster point is matched to the
closest point of the sampled trajectory (searched near the path length its z
implies) and its residual is the 3-D vector from that point, perpendicular to
the trajectory. The vertex's distance from the beam axis enters as a prior
(σ = the beam spot): without it the start of the track could slide along it.

Fit. Levenberg-Marquardt on the six parameters with a Huber loss (points
further than ``3 σ`` from the trajectory count linearly: stray points from
the beam or from a crossing track do not pull the fit). The Jacobian is
analytic: the vertex is a translation, φ a rotation about the vertex, θ
scales the transverse part and the z slope, and dα/dT0 =
k_B (1/p(T0) − 1/p(s)) / S(T0) is integrated along with the trajectory. One
trajectory evaluation per iteration.

All kernels keep their callees in this module (numba cache safety).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["FitTables", "fit_tables", "fit_track", "trajectory", "N_PARAMS", "FIT_OFF", "FIT_CONVERGED",
           "FIT_NOT_CONVERGED", "FIT_FAILED"]

#: Parameter order of the fit: vertex x, y, z (mm), polar θ and azimuth φ (rad), kinetic energy T0 (MeV).
N_PARAMS = 6
# FIT_STATUS codes (conduit.artifacts.FIT_STATUS)
FIT_OFF, FIT_CONVERGED, FIT_NOT_CONVERGED, FIT_FAILED = 0, 1, 2, 3
#: c in units that give the turning rate in 1/mm: dα/ds = 0.299792458 Z B / p[MeV/c] per mm.
_TURN = 0.299792458
#: Huber threshold in units of the point σ.
_HUBER = 3.0
#: The fit stops when an accepted step lowers the cost by less than this fraction.
_TOLERANCE = 1e-5
#: Smallest kinetic energy (MeV) and polar-angle distance from 0 and π (rad) the fit may reach.
_T_MIN = 0.01
_THETA_MIN = 0.02
#: A fit whose points lie further than this many σ from it (median) has failed.
_MAX_MEDIAN = 2.0
#: Kinetic energy (MeV) where a stopping particle's trajectory ends.
T_END = 0.01


class FitTables:
    """A species' tables for the fit: energy grid (MeV), residual range (mm) and G(r) = ∫ dr / p (mm·c/MeV)."""

    __slots__ = ("energy", "range_mm", "g", "mass", "charge")

    def __init__(self, energy: np.ndarray, range_mm: np.ndarray, g: np.ndarray, mass: float, charge: float):
        self.energy = energy
        self.range_mm = range_mm
        self.g = g
        self.mass = mass
        self.charge = charge


def fit_tables(table, mass: float, charge: float) -> FitTables:
    """Fit tables from a :class:`conduit_physics.stopping.StoppingTable` of a species (``mass`` MeV, charge Z)."""
    energy = np.ascontiguousarray(table.energy, dtype=np.float64)
    range_mm = np.ascontiguousarray(table.range_mm, dtype=np.float64)
    inv_p = 1.0 / np.sqrt(energy * (energy + 2.0 * mass))
    # At the bottom of the grid p ∝ √T and R ∝ T^~0.5: ∫₀^R0 dr/p ≈ R0/p0 is a negligible start value.
    g = np.concatenate([[range_mm[0] * inv_p[0]], range_mm[0] * inv_p[0]
                        + np.cumsum(np.diff(range_mm) * 0.5 * (inv_p[1:] + inv_p[:-1]))])
    return FitTables(energy, range_mm, g, float(mass), float(charge))


@njit(cache=True, nogil=True)
def _locate(energy, t):
    """Index j and fraction f with energy[j] + f (energy[j+1] − energy[j]) = t on the geometric grid."""
    n = energy.shape[0]
    if t <= energy[0]:
        return 0, 0.0
    u = math.log(t / energy[0]) / math.log(energy[n - 1] / energy[0]) * (n - 1)
    j = int(u)
    if j >= n - 1:
        return n - 2, 1.0
    # the geometric grid is exact up to rounding: step to the right interval
    while j > 0 and energy[j] > t:
        j -= 1
    while j < n - 2 and energy[j + 1] < t:
        j += 1
    return j, (t - energy[j]) / (energy[j + 1] - energy[j])


@njit(cache=True, nogil=True)
def trajectory(theta, phi, t0, mass, kb, energy, range_mm, g, step, s_max, nodes):
    """Sample the unit trajectory from the vertex every ``step`` mm up to ``s_max`` mm or until the particle stops.

    Writes per node k into ``nodes`` (6, capacity): X = ∫cos α ds and
    Y = ∫sin α ds (mm; the transverse displacement is sin θ · (X, Y)), the
    azimuth α (rad), dX/dT0 and dY/dT0 (mm/MeV), and the path length s (mm).
    A particle that stops gets a last, shorter step ending where its energy
    falls to ``T_END``, so that the end of the track moves smoothly with T0.
    Returns (number of nodes ≥ 1, True when the particle stopped).
    """
    cap = nodes.shape[1]
    j, f = _locate(energy, t0)
    r0 = range_mm[j] + f * (range_mm[j + 1] - range_mm[j])
    g0 = g[j] + f * (g[j + 1] - g[j])
    p0 = math.sqrt(t0 * (t0 + 2.0 * mass))
    dr_dt = (range_mm[j + 1] - range_mm[j]) / (energy[j + 1] - energy[j])  # 1 / S(T0)
    je, fe = _locate(energy, T_END)
    r_end = range_mm[je] + fe * (range_mm[je + 1] - range_mm[je])
    for row in range(6):
        nodes[row, 0] = 0.0
    nodes[2, 0] = phi
    a_prev = 0.0  # dα/dT0 at the previous node
    n = 1
    k = j
    stopped = False
    while n < cap:
        s = n * step
        if s - step >= s_max:
            break
        ds = step
        r = r0 - s
        if r <= r_end:
            stopped = True
            r = r_end
            ds = r0 - r_end - nodes[5, n - 1]
            if ds <= 1e-9:
                break
        while k > 0 and range_mm[k] > r:
            k -= 1
        fr = (r - range_mm[k]) / (range_mm[k + 1] - range_mm[k])
        e = energy[k] + fr * (energy[k + 1] - energy[k])
        p = math.sqrt(e * (e + 2.0 * mass))
        alpha = phi + kb * (g0 - (g[k] + fr * (g[k + 1] - g[k])))
        a_now = kb * dr_dt * (1.0 / p0 - 1.0 / p)
        a0 = nodes[2, n - 1]
        da = alpha - a0
        if abs(da) > 1e-9:
            nodes[0, n] = nodes[0, n - 1] + ds * (math.sin(alpha) - math.sin(a0)) / da
            nodes[1, n] = nodes[1, n - 1] + ds * (math.cos(a0) - math.cos(alpha)) / da
        else:
            nodes[0, n] = nodes[0, n - 1] + ds * math.cos(a0)
            nodes[1, n] = nodes[1, n - 1] + ds * math.sin(a0)
        a_mid = 0.5 * (a0 + alpha)
        d_mid = 0.5 * (a_prev + a_now)
        nodes[3, n] = nodes[3, n - 1] - ds * math.sin(a_mid) * d_mid
        nodes[4, n] = nodes[4, n - 1] + ds * math.cos(a_mid) * d_mid
        nodes[2, n] = alpha
        nodes[5, n] = nodes[5, n - 1] + ds
        a_prev = a_now
        n += 1
        if stopped:
            break
    return n, stopped


@njit(cache=True, nogil=True)
def _range_slope(energy, range_mm, t):
    """dR/dT (mm/MeV) = 1 / S(T) on the table."""
    j, _ = _locate(energy, t)
    return (range_mm[j + 1] - range_mm[j]) / (energy[j + 1] - energy[j])


@njit(cache=True, nogil=True)
def _distance2(px, py, pz, x0, y0, z0, st, ct, nodes, k):
    dx = px - (x0 + st * nodes[0, k])
    dy = py - (y0 + st * nodes[1, k])
    dz = pz - (z0 + ct * nodes[5, k])
    return dx * dx + dy * dy + dz * dz


@njit(cache=True, nogil=True)
def _evaluate(q, px, py, pz, use, sigma, beam_sigma, mass, kb, energy, range_mm, g, step, z_tol, s_limit,
              nodes, seeds, nearest, dist, jtj, jtr):
    """Huber cost of parameters ``q`` and its normal equations (``jtj``, ``jtr``).

    Each point is matched to its nearest trajectory node: by a search around
    the path length its z implies when ``seeds[0] < 0``, else by descending the
    distance from its node in ``seeds`` (the previous evaluation's, which moves
    little from one iteration to the next). The nodes found go to ``nearest``,
    the distances (mm) to ``dist``; points with ``use`` False are matched but
    do not count. Returns (cost, unweighted RMS distance of the points used in
    mm); cost = inf when the trajectory is degenerate.
    """
    x0, y0, z0, theta, phi, t0 = q[0], q[1], q[2], q[3], q[4], q[5]
    st = math.sin(theta)
    ct = math.cos(theta)
    npts = px.shape[0]
    # how far along the path the farthest point lies (its z), plus room for the z uncertainty
    s_max = s_limit
    if abs(ct) > 0.02:
        far = 0.0
        for i in range(npts):
            if not use[i]:
                continue
            si = (pz[i] - z0) / ct
            if si > far:
                far = si
        s_max = min(s_max, far + z_tol / abs(ct) + 2.0 * step)
    n, stopped = trajectory(theta, phi, t0, mass, kb, energy, range_mm, g, step, s_max, nodes)
    if n < 3:
        return np.inf, np.inf
    for a in range(N_PARAMS):
        jtr[a] = 0.0
        for b in range(N_PARAMS):
            jtj[a, b] = 0.0
    search = seeds[0] < 0
    half = n - 1
    if abs(ct) > 1e-3:
        half = min(n - 1, int(z_tol / (abs(ct) * step)) + 2)
    cost = 0.0
    sum_d2 = 0.0
    used = 0
    inv_s = 1.0 / sigma
    dc = np.empty((3, N_PARAMS))
    jrow = np.empty((3, N_PARAMS))
    for i in range(npts):
        if search:
            centre = 0
            if abs(ct) > 1e-3:
                c = (pz[i] - z0) / (ct * step)
                centre = int(c + 0.5) if c > 0.0 else 0
                if centre > n - 1:
                    centre = n - 1
            lo = max(0, centre - half)
            hi = min(n - 1, centre + half)
            best = lo
            best_d2 = np.inf
            for k in range(lo, hi + 1):
                d2 = _distance2(px[i], py[i], pz[i], x0, y0, z0, st, ct, nodes, k)
                if d2 < best_d2:
                    best_d2 = d2
                    best = k
        else:
            best = min(max(seeds[i], 0), n - 1)
            best_d2 = _distance2(px[i], py[i], pz[i], x0, y0, z0, st, ct, nodes, best)
            while best + 1 < n:
                d2 = _distance2(px[i], py[i], pz[i], x0, y0, z0, st, ct, nodes, best + 1)
                if d2 >= best_d2:
                    break
                best += 1
                best_d2 = d2
            while best > 0:
                d2 = _distance2(px[i], py[i], pz[i], x0, y0, z0, st, ct, nodes, best - 1)
                if d2 >= best_d2:
                    break
                best -= 1
                best_d2 = d2
        nearest[i] = best
        # foot of the perpendicular on the neighbouring chord that is closer
        best_u = 0.0
        best_a = best
        e0 = e1 = e2 = 0.0
        tx = ty = 0.0
        tz = 1.0
        best_d2 = np.inf
        for a in range(best - 1, best + 1):
            if a < 0 or a + 1 > n - 1:
                continue
            ax = x0 + st * nodes[0, a]
            ay = y0 + st * nodes[1, a]
            az = z0 + ct * nodes[5, a]
            bx = x0 + st * nodes[0, a + 1] - ax
            by = y0 + st * nodes[1, a + 1] - ay
            bz = ct * (nodes[5, a + 1] - nodes[5, a])
            bb = bx * bx + by * by + bz * bz
            u = ((px[i] - ax) * bx + (py[i] - ay) * by + (pz[i] - az) * bz) / bb
            if u < 0.0:
                u = 0.0
            elif u > 1.0:
                u = 1.0
            ex = px[i] - (ax + u * bx)
            ey = py[i] - (ay + u * by)
            ez = pz[i] - (az + u * bz)
            d2 = ex * ex + ey * ey + ez * ez
            if d2 < best_d2:
                best_d2 = d2
                best_u = u
                best_a = a
                norm = math.sqrt(bb)
                e0, e1, e2 = ex, ey, ez
                tx, ty, tz = bx / norm, by / norm, bz / norm
        d = math.sqrt(best_d2)
        dist[i] = d
        if not use[i]:
            continue
        used += 1
        sum_d2 += best_d2
        r = d * inv_s
        # Huber: quadratic within _HUBER σ, linear beyond; w is the IRLS weight
        if r <= _HUBER:
            cost += r * r
            w = 1.0
        else:
            cost += 2.0 * _HUBER * r - _HUBER * _HUBER
            w = _HUBER / r
        a = best_a
        u = best_u
        s = nodes[5, a] + u * (nodes[5, a + 1] - nodes[5, a])
        X = nodes[0, a] + u * (nodes[0, a + 1] - nodes[0, a])
        Y = nodes[1, a] + u * (nodes[1, a + 1] - nodes[1, a])
        dX = nodes[3, a] + u * (nodes[3, a + 1] - nodes[3, a])
        dY = nodes[4, a] + u * (nodes[4, a + 1] - nodes[4, a])
        # dC/dq at fixed s: columns x0, y0, z0, θ, φ, T0
        for row in range(3):
            for col in range(N_PARAMS):
                dc[row, col] = 0.0
        dc[0, 0] = 1.0
        dc[1, 1] = 1.0
        dc[2, 2] = 1.0
        dc[0, 3] = ct * X
        dc[1, 3] = ct * Y
        dc[2, 3] = -s * st
        dc[0, 4] = -st * Y
        dc[1, 4] = st * X
        dc[0, 5] = st * dX
        dc[1, 5] = st * dY
        # residual e = P − C: de/dq = −(I − t tᵀ) dC/dq (the foot slides along t), except beyond
        # either end, where the end itself is the foot: the vertex moves with x0, y0, z0, and the
        # stopping point of a particle that stops moves along t by dR/dT0 = 1 / S(T0)
        ww = w * inv_s * inv_s
        beyond = (a == 0 and u == 0.0) or (a + 2 == n and u == 1.0)
        if stopped and a + 2 == n and u == 1.0:
            dr_dt = _range_slope(energy, range_mm, t0)
            dc[0, 5] += tx * dr_dt
            dc[1, 5] += ty * dr_dt
            dc[2, 5] += tz * dr_dt
        for col in range(N_PARAMS):
            proj = 0.0 if beyond else tx * dc[0, col] + ty * dc[1, col] + tz * dc[2, col]
            jrow[0, col] = -(dc[0, col] - tx * proj)
            jrow[1, col] = -(dc[1, col] - ty * proj)
            jrow[2, col] = -(dc[2, col] - tz * proj)
        for p1 in range(N_PARAMS):
            jtr[p1] += ww * (jrow[0, p1] * e0 + jrow[1, p1] * e1 + jrow[2, p1] * e2)
            for p2 in range(p1, N_PARAMS):
                jtj[p1, p2] += ww * (jrow[0, p1] * jrow[0, p2] + jrow[1, p1] * jrow[1, p2] + jrow[2, p1] * jrow[2, p2])
    # the beam-spot prior on the vertex
    b2 = 1.0 / (beam_sigma * beam_sigma)
    cost += (x0 * x0 + y0 * y0) * b2
    jtr[0] += x0 * b2
    jtr[1] += y0 * b2
    jtj[0, 0] += b2
    jtj[1, 1] += b2
    for p1 in range(N_PARAMS):
        for p2 in range(p1):
            jtj[p1, p2] = jtj[p2, p1]
    return cost, math.sqrt(sum_d2 / max(used, 1))


@njit(cache=True, nogil=True)
def _solve_spd(a, b, x):
    """x = −a⁻¹ b for a symmetric positive definite ``a`` (Cholesky, in place in ``a``); False if not SPD.

    A small hand-written solve: the damped normal matrix is SPD, and LAPACK through numba would cost
    seconds of compilation for a 6 × 6 system.
    """
    n = b.shape[0]
    for j in range(n):
        d = a[j, j]
        for k in range(j):
            d -= a[j, k] * a[j, k]
        if not d > 0.0:
            return False
        a[j, j] = math.sqrt(d)
        for i in range(j + 1, n):
            v = a[i, j]
            for k in range(j):
                v -= a[i, k] * a[j, k]
            a[i, j] = v / a[j, j]
    for i in range(n):  # L y = −b
        v = -b[i]
        for k in range(i):
            v -= a[i, k] * x[k]
        x[i] = v / a[i, i]
    for i in range(n - 1, -1, -1):  # Lᵀ x = y
        v = x[i]
        for k in range(i + 1, n):
            v -= a[k, i] * x[k]
        x[i] = v / a[i, i]
    return True


@njit(cache=True, nogil=True)
def _levenberg_marquardt(q, px, py, pz, use, sigma, beam_sigma, mass, kb, energy, range_mm, g, step, z_tol, s_cap,
                         max_iterations, nodes, nearest, dist):
    """Minimise the cost over the points with ``use`` from ``q`` (updated in place).

    Returns (status, iterations, RMS distance mm). ``nearest`` holds the nodes
    matched at the final ``q`` (a full search starts when ``nearest[0] < 0``).
    """
    npts = px.shape[0]
    jtj = np.zeros((N_PARAMS, N_PARAMS))
    jtr = np.zeros(N_PARAMS)
    trial_jtj = np.zeros((N_PARAMS, N_PARAMS))
    trial_jtr = np.zeros(N_PARAMS)
    trial_nearest = np.empty(npts, dtype=np.int64)
    trial_dist = np.empty(npts)
    cost, rms = _evaluate(q, px, py, pz, use, sigma, beam_sigma, mass, kb, energy, range_mm, g, step, z_tol, s_cap,
                          nodes, nearest, nearest, dist, jtj, jtr)
    if not np.isfinite(cost):
        return FIT_FAILED, 0, np.nan
    lam = 1e-3
    status = FIT_NOT_CONVERGED
    trial = np.empty(N_PARAMS)
    delta = np.empty(N_PARAMS)
    a_mat = np.empty((N_PARAMS, N_PARAMS))
    iterations = 0
    for it in range(max_iterations):
        iterations = it + 1
        # the trajectory need not go much beyond the farthest matched point
        last = 0
        for i in range(npts):
            if use[i] and nearest[i] > last:
                last = nearest[i]
        s_limit = min(s_cap, 1.25 * nodes[5, last] + 50.0)
        improved = False
        new_cost = np.inf
        new_rms = np.inf
        while lam < 1e12:
            for p1 in range(N_PARAMS):
                for p2 in range(N_PARAMS):
                    a_mat[p1, p2] = jtj[p1, p2]
                a_mat[p1, p1] = jtj[p1, p1] * (1.0 + lam) + 1e-12
            if not _solve_spd(a_mat, jtr, delta):
                lam *= 10.0
                continue
            for a in range(N_PARAMS):
                trial[a] = q[a] + delta[a]
            if trial[5] < _T_MIN:
                trial[5] = _T_MIN
            if trial[3] < _THETA_MIN:
                trial[3] = _THETA_MIN
            elif trial[3] > math.pi - _THETA_MIN:
                trial[3] = math.pi - _THETA_MIN
            new_cost, new_rms = _evaluate(trial, px, py, pz, use, sigma, beam_sigma, mass, kb, energy, range_mm, g,
                                          step, z_tol, s_limit, nodes, nearest, trial_nearest, trial_dist,
                                          trial_jtj, trial_jtr)
            if new_cost < cost:
                improved = True
                break
            lam *= 10.0
        if not improved:
            status = FIT_CONVERGED  # no step lowers the cost: a minimum
            break
        drop = cost - new_cost
        for a in range(N_PARAMS):
            q[a] = trial[a]
            jtr[a] = trial_jtr[a]
            for b in range(N_PARAMS):
                jtj[a, b] = trial_jtj[a, b]
        nearest[:] = trial_nearest
        dist[:] = trial_dist
        cost = new_cost
        rms = new_rms
        lam = max(lam * 0.1, 1e-9)
        if drop <= _TOLERANCE * cost + 1e-12:  # relative, and absolute for points exactly on the model
            status = FIT_CONVERGED
            break
    return status, iterations, rms


@njit(cache=True, nogil=True)
def fit_track(q0, px, py, pz, sigma, beam_sigma, mass, charge, field, energy, range_mm, g, step, max_nodes,
              max_iterations, q_out):
    """Fit one track's points (px, py, pz mm) starting from ``q0`` = (x0, y0, z0, θ, φ, T0).

    ``sigma`` is the points' position uncertainty (mm), ``beam_sigma`` the
    beam spot (mm), ``field`` the signed field (T). Writes the fitted
    parameters into ``q_out``; returns (status, iterations, median distance of
    the points from the fitted trajectory in mm). On failure (including a
    median distance above ``2 σ``: the track is not what the model describes)
    ``q_out`` holds ``q0``.

    A track that turns more than once (a spiral) is fitted in two passes: its
    first turn alone (the points within 3 σ of the seed's first turn), then
    every point from there, so that an error of the seed's energy, which grows
    turn after turn, cannot match later points to the wrong turn.
    """
    for a in range(N_PARAMS):
        q_out[a] = q0[a]
    npts = px.shape[0]
    kb = _TURN * charge * field
    z_tol = 3.0 * sigma + step
    s_cap = (max_nodes - 1) * step
    nodes = np.empty((6, max_nodes))
    nearest = np.full(npts, -1, dtype=np.int64)
    dist = np.empty(npts)
    use = np.ones(npts, dtype=np.bool_)
    q = q0.copy()
    if npts < N_PARAMS or not (q[5] > _T_MIN) or not (_THETA_MIN < q[3] < math.pi - _THETA_MIN):
        return FIT_FAILED, 0, np.nan
    iterations = 0
    # pass 1: the first turn (one turn of the seed's helix: 2π ρ of path)
    p0 = math.sqrt(q[5] * (q[5] + 2.0 * mass))
    s_turn = 2.0 * math.pi * p0 / abs(kb) if kb != 0.0 else s_cap
    if s_turn < s_cap:
        jtj = np.zeros((N_PARAMS, N_PARAMS))
        jtr = np.zeros(N_PARAMS)
        cost, _ = _evaluate(q, px, py, pz, use, sigma, beam_sigma, mass, kb, energy, range_mm, g, step, z_tol,
                            s_turn, nodes, nearest, nearest, dist, jtj, jtr)
        if not np.isfinite(cost):
            return FIT_FAILED, 0, np.nan
        last = 0
        for i in range(npts):
            if nearest[i] > last:
                last = nearest[i]
        first = 0
        for i in range(npts):
            use[i] = dist[i] <= 3.0 * sigma and nearest[i] < last
            if use[i]:
                first += 1
        if N_PARAMS * 2 <= first < npts:
            status, iterations, rms = _levenberg_marquardt(q, px, py, pz, use, sigma, beam_sigma, mass, kb, energy,
                                                           range_mm, g, step, z_tol, s_cap, max_iterations, nodes,
                                                           nearest, dist)
            if status == FIT_FAILED:
                for a in range(N_PARAMS):
                    q[a] = q0[a]
        for i in range(npts):
            use[i] = True
            nearest[i] = -1  # pass 2 starts with a full search
    status, more, rms = _levenberg_marquardt(q, px, py, pz, use, sigma, beam_sigma, mass, kb, energy, range_mm, g,
                                             step, z_tol, s_cap, max_iterations, nodes, nearest, dist)
    iterations += more
    if status == FIT_FAILED:
        return FIT_FAILED, iterations, np.nan
    residual = np.median(dist)
    if not residual <= _MAX_MEDIAN * sigma:
        return FIT_FAILED, iterations, residual  # most points are far from the best trajectory: keep the seed
    for a in range(N_PARAMS):
        q_out[a] = q[a]
    return status, iterations, residual
