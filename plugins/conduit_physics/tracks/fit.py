"""Compiled track geometry (numba): what the clusterers and the estimator share.

Import through :mod:`conduit_physics.tracks` (``from conduit_physics.tracks
import circle_fit``) or this module directly; importing it loads numba.

* Cubic smoothing splines equal to ``scipy.interpolate.make_smoothing_spline``
  (same objective: sum w_i (y_i - f(z_i))^2 + lam * integral f''^2), solved
  with Reinsch's algorithm: a pentadiagonal system for the second
  derivatives at the knots, factorised as L D L^T in O(n).
* Samples that share a z value are merged into one knot with weight equal to
  their number: the penalised least-squares objective is then exactly the
  same as with the repeated abscissae, so the fit is well defined without
  the random jitter Spyral adds to break ties. Samples closer in z than
  :data:`KNOT_MERGE_MM` count as sharing it (their knot is at their mean z):
  the pointcloud stage's tie jitter (0.001 TB, about 0.002 mm) separates
  them by far less than a time bucket (about 1.8 mm), and knots that close
  would make the spline's system too ill-conditioned to factorise.
* Kasa algebraic circle fit (Spyral's ``least_squares_circle``).
* Direction detection with the azimuth unwrapped and the rotation sense
  taken from the sign of the magnetic field.
* The per-track estimator (spyral_algorithms.md section 4.1) with the vertex
  found in closed form.

All kernels keep their callees in this module (numba cache safety).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "RESULT_FIELDS",
    "STATUS",
    "circle_fit",
    "direction_code",
    "direction_of_rows",
    "estimate_event",
    "merge_ties",
    "smooth_at_points",
    "smoothing_spline",
    "spline_eval",
]

MIN_SPLINE_KNOTS = 5  # scipy's make_smoothing_spline needs at least 5 abscissae
#: Samples closer in z than this (mm) share one spline knot: above any tie jitter, far below a time bucket.
KNOT_MERGE_MM = 0.01

# Direction codes (conduit.artifacts.Direction)
NONE = -1
FORWARD = 0
BACKWARD = 1

#: Why a track was not estimated (index = status code).
STATUS = (
    "ok",
    "too_few_points",
    "spline_failed",
    "direction_none",
    "circle_fit_failed",
    "no_polar_slope",
    "vertex_outside_beam_region",
    "direction_polar_mismatch",
    "no_charge_before_cutoff",
)
OK, TOO_FEW, SPLINE_FAILED, DIRECTION_NONE, CIRCLE_FAILED, NO_SLOPE, OUTSIDE_BEAM, MISMATCH, NO_CHARGE = range(9)

#: Columns of the estimator's float result rows.
RESULT_FIELDS = (
    "vertex_x",
    "vertex_y",
    "vertex_z",
    "center_x",
    "center_y",
    "center_z",
    "radius",
    "polar",
    "azimuthal",
    "brho",
    "dE",
    "arclength",
    "dEdx",
    "sqrt_dEdx",
    "fit_rms",
    "n_points",
    "direction",
)


# --------------------------------------------------------------------------
# Smoothing splines
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def merge_ties(z, values):
    """Merge samples with equal z, or z within KNOT_MERGE_MM of a group's first (z sorted ascending).

    Returns (knots = mean z per group, mean value per knot, weight =
    multiplicity, knot index of every input sample).
    """
    n = z.shape[0]
    starts = np.empty(n, dtype=np.float64)
    zsums = np.empty(n, dtype=np.float64)
    sums = np.empty(n, dtype=np.float64)
    weights = np.empty(n, dtype=np.float64)
    which = np.empty(n, dtype=np.int64)
    m = -1
    for i in range(n):
        if m < 0 or z[i] - starts[m] >= KNOT_MERGE_MM:
            m += 1
            starts[m] = z[i]
            zsums[m] = 0.0
            sums[m] = 0.0
            weights[m] = 0.0
        zsums[m] += z[i] - starts[m]  # offsets: exact ties give the knot exactly at their z
        sums[m] += values[i]
        weights[m] += 1.0
        which[i] = m
    m += 1
    knots = np.empty(m, dtype=np.float64)
    means = np.empty(m, dtype=np.float64)
    for k in range(m):
        knots[k] = starts[k] + zsums[k] / weights[k]
        means[k] = sums[k] / weights[k]
    return knots, means, weights[:m].copy(), which


@njit(cache=True, nogil=True)
def smoothing_spline(t, y, w, lam, g, gamma):
    """Natural cubic smoothing spline through knots ``t`` (strictly increasing).

    Minimises sum w_i (y_i - f(t_i))^2 + lam * integral f''(u)^2 du, exactly as
    scipy.interpolate.make_smoothing_spline(t, y, w, lam). Writes the fitted
    values f(t_i) into ``g`` and the second derivatives f''(t_i) into
    ``gamma``. Returns False (and leaves the outputs undefined) when there are
    fewer than 5 knots or the knots are not strictly increasing.
    """
    n = t.shape[0]
    if n < MIN_SPLINE_KNOTS:
        return False
    for i in range(n - 1):
        if not t[i + 1] > t[i]:
            return False
    m = n - 2
    h = np.empty(n - 1)
    for i in range(n - 1):
        h[i] = t[i + 1] - t[i]
    # pentadiagonal A = R + lam Q^T W^-1 Q (bands a0, a1, a2), rhs = Q^T y
    a0 = np.empty(m)
    a1 = np.zeros(m)
    a2 = np.zeros(m)
    rhs = np.empty(m)
    for c in range(m):
        j = c + 1
        ih0 = 1.0 / h[j - 1]
        ih1 = 1.0 / h[j]
        d_prev = 1.0 / w[j - 1]
        d_mid = 1.0 / w[j]
        d_next = 1.0 / w[j + 1]
        a0[c] = (h[j - 1] + h[j]) / 3.0 + lam * (d_prev * ih0 * ih0 + d_mid * (ih0 + ih1) ** 2 + d_next * ih1 * ih1)
        if c + 1 < m:
            ih2 = 1.0 / h[j + 1]
            a1[c] = h[j] / 6.0 + lam * (-(ih0 + ih1) * d_mid * ih1 - ih1 * d_next * (ih1 + ih2))
        if c + 2 < m:
            a2[c] = lam * ih1 * d_next / h[j + 1]
        rhs[c] = y[j - 1] * ih0 - y[j] * (ih0 + ih1) + y[j + 1] * ih1
    # L D L^T factorisation of the symmetric pentadiagonal matrix
    dd = np.empty(m)
    l1 = np.zeros(m)
    l2 = np.zeros(m)
    for i in range(m):
        v = a0[i]
        if i >= 1:
            v -= l1[i - 1] * l1[i - 1] * dd[i - 1]
        if i >= 2:
            v -= l2[i - 2] * l2[i - 2] * dd[i - 2]
        if not v > 0.0:
            return False
        dd[i] = v
        if i + 1 < m:
            u = a1[i]
            if i >= 1:
                u -= l1[i - 1] * l2[i - 1] * dd[i - 1]
            l1[i] = u / v
        if i + 2 < m:
            l2[i] = a2[i] / v
    # solve L z = rhs, D u = z, L^T gamma = u
    sol = np.empty(m)
    for i in range(m):
        v = rhs[i]
        if i >= 1:
            v -= l1[i - 1] * sol[i - 1]
        if i >= 2:
            v -= l2[i - 2] * sol[i - 2]
        sol[i] = v
    for i in range(m):
        sol[i] /= dd[i]
    for i in range(m - 1, -1, -1):
        v = sol[i]
        if i + 1 < m:
            v -= l1[i] * sol[i + 1]
        if i + 2 < m:
            v -= l2[i] * sol[i + 2]
        sol[i] = v
    gamma[0] = 0.0
    gamma[n - 1] = 0.0
    for c in range(m):
        gamma[c + 1] = sol[c]
    # g = y - lam W^-1 Q gamma
    for i in range(n):
        qg = 0.0
        if i >= 1:
            qg += gamma[i - 1] / h[i - 1] - gamma[i] / h[i - 1]
        if i + 1 < n:
            qg += gamma[i + 1] / h[i] - gamma[i] / h[i]
        g[i] = y[i] - lam / w[i] * qg
    return True


@njit(cache=True, nogil=True)
def spline_eval(t, g, gamma, x):
    """Value at ``x`` of the natural cubic spline (knots t, values g, second derivatives gamma).

    Outside the knots the natural spline continues linearly.
    """
    n = t.shape[0]
    if x <= t[0]:
        h = t[1] - t[0]
        slope = (g[1] - g[0]) / h - h / 6.0 * gamma[1]
        return g[0] + slope * (x - t[0])
    if x >= t[n - 1]:
        h = t[n - 1] - t[n - 2]
        slope = (g[n - 1] - g[n - 2]) / h + h / 6.0 * gamma[n - 2]
        return g[n - 1] + slope * (x - t[n - 1])
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if t[mid] <= x:
            lo = mid
        else:
            hi = mid
    h = t[hi] - t[lo]
    a = x - t[lo]
    b = t[hi] - x
    return (a * g[hi] + b * g[lo]) / h - a * b / 6.0 * ((1.0 + a / h) * gamma[hi] + (1.0 + b / h) * gamma[lo])


@njit(cache=True, nogil=True)
def smooth_at_points(z, values, lam, out):
    """Smoothed values at every z (z ascending, ties merged); False when the spline fails."""
    knots, means, weights, which = merge_ties(z, values)
    n = knots.shape[0]
    g = np.empty(n)
    gamma = np.empty(n)
    if not smoothing_spline(knots, means, weights, lam, g, gamma):
        return False
    for i in range(z.shape[0]):
        out[i] = g[which[i]]
    return True


# --------------------------------------------------------------------------
# Circle fit and direction
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def circle_fit(x, y):
    """Kasa algebraic least-squares circle: (x_c, y_c, radius, ok).

    Radius = mean distance of the points from the centre. ok is False (and
    the values NaN) with fewer than 3 points or a singular system (collinear
    points).
    """
    n = x.shape[0]
    if n < 3:
        return np.nan, np.nan, np.nan, False
    mx = 0.0
    my = 0.0
    for i in range(n):
        mx += x[i]
        my += y[i]
    mx /= n
    my /= n
    suu = suv = svv = suuu = svvv = suvv = svuu = 0.0
    for i in range(n):
        u = x[i] - mx
        v = y[i] - my
        suu += u * u
        suv += u * v
        svv += v * v
        suuu += u * u * u
        svvv += v * v * v
        suvv += u * v * v
        svuu += v * u * u
    det = suu * svv - suv * suv
    scale = suu * svv + suv * suv
    if not (abs(det) > 1e-12 * scale) or scale == 0.0:
        return np.nan, np.nan, np.nan, False
    b1 = 0.5 * (suuu + suvv)
    b2 = 0.5 * (svvv + svuu)
    uc = (b1 * svv - b2 * suv) / det
    vc = (suu * b2 - suv * b1) / det
    xc = uc + mx
    yc = vc + my
    r = 0.0
    for i in range(n):
        r += math.hypot(x[i] - xc, y[i] - yc)
    return xc, yc, r / n, True


@njit(cache=True, nogil=True)
def _wrap(a):
    """Angle difference wrapped into [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


@njit(cache=True, nogil=True)
def direction_code(x, y, z, lam, threshold, sense):
    """FORWARD / BACKWARD / NONE from the rotation sense around the track's circle.

    Points sorted by z. x(z) and y(z) are smoothed (lam; ties merged) when
    more than 5 points are given, the circle is fitted to the smoothed
    points, and the azimuth around its centre is followed from knot to knot
    with each step wrapped into [-pi, pi) (i.e. unwrapped). A track whose
    steps turn with ``sense`` (+1: counter-clockwise as z increases) in more
    than ``threshold`` of the steps is FORWARD, the opposite sense BACKWARD.
    """
    n = x.shape[0]
    if n < 3:
        return NONE
    kx, mxs, wts, _ = merge_ties(z, x)
    _, mys, _, _ = merge_ties(z, y)
    m = kx.shape[0]
    if m < 3:
        return NONE
    sx = mxs
    sy = mys
    if n > 5 and m >= MIN_SPLINE_KNOTS:
        gx = np.empty(m)
        gy = np.empty(m)
        gam = np.empty(m)
        if smoothing_spline(kx, mxs, wts, lam, gx, gam) and smoothing_spline(kx, mys, wts, lam, gy, gam):
            sx = gx
            sy = gy
    xc, yc, _, ok = circle_fit(sx, sy)
    if not ok:
        return NONE
    with_sense = 0
    against = 0
    prev = math.atan2(sy[0] - yc, sx[0] - xc)
    for i in range(1, m):
        cur = math.atan2(sy[i] - yc, sx[i] - xc)
        d = _wrap(cur - prev) * sense
        if d > 0.0:
            with_sense += 1
        elif d < 0.0:
            against += 1
        prev = cur
    steps = m - 1
    if with_sense / steps > threshold:
        return FORWARD
    if against / steps > threshold:
        return BACKWARD
    return NONE


@njit(cache=True, nogil=True)
def direction_of_rows(cloud, rows, lam, threshold, sense):
    """:func:`direction_code` of the points ``cloud[rows]`` (x, y, z = columns 0-2; rows ascending = by z).

    The same numbers as gathering the three columns in numpy first (one call instead of a fancy index and
    three contiguous copies per cluster).
    """
    n = rows.shape[0]
    x = np.empty(n)
    y = np.empty(n)
    z = np.empty(n)
    for i in range(n):
        r = rows[i]
        x[i] = cloud[r, 0]
        y[i] = cloud[r, 1]
        z[i] = cloud[r, 2]
    return direction_code(x, y, z, lam, threshold, sense)


# --------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _linregress(z, r, n):
    """Least-squares slope and intercept of r against z over the first n samples."""
    mz = 0.0
    mr = 0.0
    for i in range(n):
        mz += z[i]
        mr += r[i]
    mz /= n
    mr /= n
    szz = 0.0
    szr = 0.0
    for i in range(n):
        dz = z[i] - mz
        szz += dz * dz
        szr += dz * (r[i] - mr)
    if szz == 0.0:
        return 0.0, mr
    slope = szr / szz
    return slope, mr - slope * mz


@njit(cache=True, nogil=True)
def _cubic_piece(t, g, gamma, lo, x):
    """Spline value at x in knot interval [t[lo], t[lo + 1]]."""
    hi = lo + 1
    h = t[hi] - t[lo]
    a = x - t[lo]
    b = t[hi] - x
    return (a * g[hi] + b * g[lo]) / h - a * b / 6.0 * ((1.0 + a / h) * gamma[hi] + (1.0 + b / h) * gamma[lo])


@njit(cache=True, nogil=True)
def _path_length(t, gx, cx, gy, cy, z0, z1, samples):
    """3-D length of the spline curve (x(z), y(z), z) from z0 to z1, summed over ``samples`` points.

    Both ends lie within the knots; the samples are visited in order, so the
    knot interval is found by walking rather than by a search per sample.
    """
    n = t.shape[0]
    dz = (z1 - z0) / (samples - 1)
    lo = 0
    length = 0.0
    x_prev = 0.0
    y_prev = 0.0
    for s in range(samples):
        z = z0 + dz * s
        if z < t[0]:
            z = t[0]
        elif z > t[n - 1]:
            z = t[n - 1]
        while lo < n - 2 and z > t[lo + 1]:
            lo += 1
        while lo > 0 and z < t[lo]:
            lo -= 1
        x = _cubic_piece(t, gx, cx, lo, z)
        y = _cubic_piece(t, gy, cy, lo, z)
        if s > 0:
            length += math.sqrt((x - x_prev) ** 2 + (y - y_prev) ** 2 + dz * dz)
        x_prev = x
        y_prev = y
    return length


@njit(cache=True, nogil=True)
def _estimate_track(px, py, pz, pq, direction, lam, min_points, field, beam_region_radius, arc_rho, charge_radius, out):
    """Estimate one track (points sorted by z); fill ``out`` (RESULT_FIELDS); return a status code."""
    n = px.shape[0]
    out[15] = n
    out[16] = direction
    if n < min_points:
        return TOO_FEW
    # 1. smoothing splines x(z), y(z), q(z); ties merged into weighted knots
    knots, mx, wts, which = merge_ties(pz, px)
    _, my, _, _ = merge_ties(pz, py)
    _, mq, _, _ = merge_ties(pz, pq)
    m = knots.shape[0]
    gx = np.empty(m)
    gy = np.empty(m)
    gq = np.empty(m)
    cx = np.empty(m)
    cy = np.empty(m)
    cq = np.empty(m)
    if m < MIN_SPLINE_KNOTS:
        return SPLINE_FAILED
    if not smoothing_spline(knots, mx, wts, lam, gx, cx):
        return SPLINE_FAILED
    if not smoothing_spline(knots, my, wts, lam, gy, cy):
        return SPLINE_FAILED
    if not smoothing_spline(knots, mq, wts, lam, gq, cq):
        return SPLINE_FAILED
    if direction == NONE:
        return DIRECTION_NONE
    # smoothed points, vertex end first
    sx = np.empty(n)
    sy = np.empty(n)
    sz = np.empty(n)
    sq = np.empty(n)
    rx = np.empty(n)
    ry = np.empty(n)
    for i in range(n):
        src = i if direction == FORWARD else n - 1 - i
        k = which[src]
        sx[i] = gx[k]
        sy[i] = gy[k]
        sz[i] = pz[src]
        sq[i] = gq[k]
        rx[i] = px[src]
        ry[i] = py[src]
    # 2. first arc: up to the point farthest (in xy) from the first point
    far = 0
    best = -1.0
    for i in range(n):
        d = math.hypot(sx[i] - sx[0], sy[i] - sy[0])
        if d > best:
            best = d
            far = i
    xc, yc, radius, ok = circle_fit(sx[: far + 1], sy[: far + 1])
    if not ok:
        return CIRCLE_FAILED
    # fit quality: RMS distance of the (unsmoothed) arc points from the circle
    ss = 0.0
    for i in range(far + 1):
        e = math.hypot(rx[i] - xc, ry[i] - yc) - radius
        ss += e * e
    fit_rms = math.sqrt(ss / (far + 1))
    # 3. vertex: the circle's closest point to the beam axis (closed form)
    dc = math.hypot(xc, yc)
    if dc > 0.0:
        vx = xc - radius * xc / dc
        vy = yc - radius * yc / dc
    else:  # the axis is the centre: every point is as close; take the one towards the first point
        d0 = math.hypot(sx[0] - xc, sy[0] - yc)
        vx = xc + radius * (sx[0] - xc) / d0 if d0 > 0 else xc + radius
        vy = yc + radius * (sy[0] - yc) / d0 if d0 > 0 else yc
    # distance travelled from the vertex: the chord (Spyral), or the arc on the circle
    # with the azimuth unwrapped along the track (exactly tan(polar) * dz on a helix,
    # over any number of turns); the first arc ends at the largest chord (Spyral) or
    # where the unwrapped azimuth first reaches half a turn
    rho = np.empty(n)
    phi_v = math.atan2(vy - yc, vx - xc)
    far = -1
    if arc_rho:
        prev = math.atan2(sy[0] - yc, sx[0] - xc)
        turned = _wrap(prev - phi_v)
        for i in range(n):
            if i > 0:
                cur = math.atan2(sy[i] - yc, sx[i] - xc)
                turned += _wrap(cur - prev)
                prev = cur
            rho[i] = radius * abs(turned)
            if far < 0 and abs(turned) >= math.pi:
                far = i
    else:
        for i in range(n):
            rho[i] = math.hypot(sx[i] - vx, sy[i] - vy)
    if far < 0:
        far = 0
        best = -1.0
        for i in range(n):
            if rho[i] > best:
                best = rho[i]
                far = i
    # 4. vertex z and polar angle from rho(z) near the vertex
    nfit = max(10, int(0.5 * far))
    nfit = min(nfit, n)
    slope, intercept = _linregress(sz, rho, nfit)
    if slope == 0.0 or not np.isfinite(slope):
        return NO_SLOPE
    vz = -intercept / slope
    if math.hypot(vx, vy) > beam_region_radius:
        return OUTSIDE_BEAM
    polar = math.atan(slope)
    if (polar > 0.0 and direction == BACKWARD) or (polar < 0.0 and direction == FORWARD):
        return MISMATCH
    if direction == BACKWARD:
        polar += math.pi
    # 5. azimuth of the momentum at the vertex: tangent of the circle, turning with the field
    sense = 1.0 if field >= 0.0 else -1.0
    azim = math.atan2(vy - yc, vx - xc) + sense * 0.5 * math.pi
    azim = azim % (2.0 * math.pi)
    brho = abs(field) * radius * 1e-3 / abs(math.sin(polar))
    if not np.isfinite(brho):
        brho = 0.0
    # 6. charge and path length up to where the track leaves the small pads
    de = 0.0
    cutoff = -1
    for i in range(far + 1):
        if math.hypot(sx[i], sy[i]) > charge_radius:
            break
        de += sq[i]
        cutoff = i
    if cutoff <= 0:
        return NO_CHARGE
    length = _path_length(knots, gx, cx, gy, cy, sz[0], sz[cutoff], 1000)
    if not length > 0.0:
        return NO_CHARGE
    dedx = de / length
    out[0] = vx
    out[1] = vy
    out[2] = vz
    out[3] = xc
    out[4] = yc
    out[5] = vz
    out[6] = radius
    out[7] = polar
    out[8] = azim
    out[9] = brho
    out[10] = de
    out[11] = length
    out[12] = dedx
    out[13] = math.sqrt(abs(dedx))
    out[14] = fit_rms
    return OK


@njit(cache=True, nogil=True)
def estimate_event(
    cloud, labels, cluster_labels, directions, lam, min_points, field, beam_region_radius, arc_rho, charge_radius
):
    """Estimate every cluster of one event.

    ``cloud`` (N, 8) sorted by z; ``labels`` per row; clusters in the order of
    ``cluster_labels``. Returns (results (K, len(RESULT_FIELDS)), status (K,)).
    Charge is the cloud's integral column.
    """
    k_count = cluster_labels.shape[0]
    results = np.full((k_count, 17), np.nan)
    status = np.empty(k_count, dtype=np.int64)
    n = cloud.shape[0]
    idx = np.empty(n, dtype=np.int64)
    for k in range(k_count):
        m = 0
        for i in range(n):
            if labels[i] == cluster_labels[k]:
                idx[m] = i
                m += 1
        px = np.empty(m)
        py = np.empty(m)
        pz = np.empty(m)
        pq = np.empty(m)
        for j in range(m):
            px[j] = cloud[idx[j], 0]
            py[j] = cloud[idx[j], 1]
            pz[j] = cloud[idx[j], 2]
            pq[j] = cloud[idx[j], 4]
        status[k] = _estimate_track(
            px,
            py,
            pz,
            pq,
            directions[k],
            lam,
            min_points,
            field,
            beam_region_radius,
            arc_rho,
            charge_radius,
            results[k],
        )
    return results, status


@njit(cache=True, nogil=True)
def fill_estimates(results, status, cluster_labels, directions, event_id, out):
    """Copy the rows of ``results`` (RESULT_FIELDS) whose status is OK into ``out``, an array of
    :data:`conduit.artifacts.ESTIMATE_DTYPE` with one row per OK cluster, in cluster order.

    One compiled pass instead of a numpy field assignment per column (about 25 µs of Python per event).
    """
    j = 0
    for k in range(status.shape[0]):
        if status[k] != OK:
            continue
        row = results[k]
        rec = out[j]
        rec.event = event_id
        rec.cluster_index = k
        rec.cluster_label = cluster_labels[k]
        rec.vertex_x = row[0]
        rec.vertex_y = row[1]
        rec.vertex_z = row[2]
        rec.center_x = row[3]
        rec.center_y = row[4]
        rec.center_z = row[5]
        rec.radius = row[6]
        rec.polar = row[7]
        rec.azimuthal = row[8]
        rec.brho = row[9]
        rec.dE = row[10]
        rec.arclength = row[11]
        rec.dEdx = row[12]
        rec.sqrt_dEdx = row[13]
        rec.fit_rms = row[14]
        rec.n_points = int(row[15])  # truncated, as numpy's float-to-int32 assignment does
        rec.direction = directions[k]
        j += 1
    return j
