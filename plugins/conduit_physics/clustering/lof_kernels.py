"""Compiled local outlier factor (scikit-learn's LocalOutlierFactor) on a :class:`.kdtree.KDTree`.

The clusterers clean every cluster with LOF at k = 10 % of its size, so a
2,000-point track needs 200 neighbours per point. Neighbours are found one
leaf of the tree at a time: from the leaf's centre c, the distance r to its
(k+1)-th nearest point bounds every member p's k-distance,
``r - |p - c| <= kdist(p) <= r + |p - c|``; the points within ``2 * leaf
radius + r`` of c are gathered once for the whole leaf, and for each member
the candidates closer than the lower bound are neighbours for certain, so
only those in the thin band between the bounds are ranked.

Neighbours at equal distance are taken in index order; n_neighbors is
capped at n - 1, as scikit-learn does. All kernels keep their callees in
this module (numba cache safety).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kdtree import _build, box_gap2

__all__ = ["lof_neighbours", "lof_search_scores", "lof_rows_outliers", "lof_from_neighbours", "lof_fewer", "lof_rows_brute", "lof_rows_search", "lof_union_rows"]


@njit(cache=True, nogil=True)
def _kth_distance(cx, cy, cz, k, points, start, end, left, right, dim, lo, hi, heap, stack):
    """Distance from (cx, cy, cz) to its k-th nearest row (max-heap of squared distances in ``heap``)."""
    size = 0
    top = 0
    stack[0] = 0
    while top >= 0:
        node = stack[top]
        top -= 1
        if size == k:
            g = box_gap2(lo, hi, node, cx, cy, cz)
            if g > heap[0]:
                continue
        if left[node] >= 0:
            a = left[node]
            b = right[node]
            sd = dim[node]
            c = cx if sd == 0 else (cy if sd == 1 else cz)
            if c >= lo[b, sd]:
                a, b = b, a
            stack[top + 1] = b
            stack[top + 2] = a
            top += 2
            continue
        for q in range(start[node], end[node]):
            dx = cx - points[q, 0]
            dy = cy - points[q, 1]
            dz = cz - points[q, 2]
            e = dx * dx + dy * dy + dz * dz
            if size < k:
                # sift up
                i = size
                heap[i] = e
                size += 1
                while i > 0:
                    up = (i - 1) // 2
                    if heap[up] >= heap[i]:
                        break
                    heap[up], heap[i] = heap[i], heap[up]
                    i = up
            elif e < heap[0]:
                heap[0] = e
                i = 0
                while True:
                    a = 2 * i + 1
                    if a >= k:
                        break
                    m = a
                    if a + 1 < k and heap[a + 1] > heap[a]:
                        m = a + 1
                    if heap[i] >= heap[m]:
                        break
                    heap[m], heap[i] = heap[i], heap[m]
                    i = m
    return math.sqrt(heap[0])


@njit(cache=True, nogil=True)
def _gather(cx, cy, cz, radius, points, start, end, left, right, lo, hi, out, stack):
    """Rows within ``radius`` of (cx, cy, cz) (whole nodes when their box is inside), into ``out``; the count."""
    r2 = radius * radius
    count = 0
    top = 0
    stack[0] = 0
    while top >= 0:
        node = stack[top]
        top -= 1
        g = 0.0
        far = 0.0
        for d in range(3):
            c = cx if d == 0 else (cy if d == 1 else cz)
            a = lo[node, d] - c
            b = c - hi[node, d]
            if a > 0:
                g += a * a
            elif b > 0:
                g += b * b
            f = max(abs(a), abs(b))
            far += f * f
        if g > r2:
            continue
        if far <= r2 or left[node] < 0:
            for q in range(start[node], end[node]):
                out[count] = q
                count += 1
            continue
        stack[top + 1] = left[node]
        stack[top + 2] = right[node]
        top += 2
    return count


@njit(cache=True, nogil=True)
def _nth_value(vals, count, nth):
    """The nth smallest (0-based) of vals[:count]; reorders vals."""
    lo = 0
    hi = count - 1
    while lo < hi:
        pivot = vals[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while vals[i] < pivot:
                i += 1
            while vals[j] > pivot:
                j -= 1
            if i <= j:
                vals[i], vals[j] = vals[j], vals[i]
                i += 1
                j -= 1
        if nth <= j:
            hi = j
        elif nth >= i:
            lo = i
        else:
            return vals[nth]
    return vals[nth]


@njit(cache=True, nogil=True)
def _take_smallest(e, rows, ids, count, need, out_rows, out_d2, at, scratch):
    """Append to out[at:] the ``need`` smallest of (e, ids)[:count] (ties by id); return the new end.

    ``scratch``: an int64 array of at least 33 entries (the bucket counts).

    The values are counted into buckets; everything below the bucket that holds
    the need-th smallest is taken as is, and only that bucket is ranked.
    """
    if count <= need:
        for a in range(count):
            out_rows[at] = rows[a]
            out_d2[at] = e[a]
            at += 1
        return at
    while need > 0:
        vmin = np.inf
        vmax = -np.inf
        for a in range(count):
            v = e[a]
            vmin = min(vmin, v)
            vmax = max(vmax, v)
        if not (vmax > vmin) or count <= 8 or vmax == np.inf:
            # few or equal or infinite values: take the smallest (e, id) one at a time
            for _ in range(need):
                best = 0
                for a in range(1, count):
                    if e[a] < e[best] or (e[a] == e[best] and ids[a] < ids[best]):
                        best = a
                out_rows[at] = rows[best]
                out_d2[at] = e[best]
                at += 1
                count -= 1
                e[best] = e[count]
                ids[best] = ids[count]
                rows[best] = rows[count]
            return at
        nb = 32
        scale = nb / (vmax - vmin)
        hist = scratch  # the caller's (no allocation per row)
        for a in range(nb + 1):
            hist[a] = 0
        for a in range(count):
            hist[min(nb - 1, int((e[a] - vmin) * scale))] += 1
        cum = 0
        cut = 0
        while cum + hist[cut] < need:
            cum += hist[cut]
            cut += 1
        # take the buckets below ``cut``, keep bucket ``cut`` for the next round
        kept = 0
        for a in range(count):
            # Branch-free (the buckets come in random order): each value is written to both places and only
            # the count of its side advances. Writes stay in bounds: at < (at on entry) + need <= len(out_rows),
            # kept <= a.
            v = e[a]
            r = rows[a]
            i = ids[a]
            bucket = min(nb - 1, int((v - vmin) * scale))
            out_rows[at] = r
            out_d2[at] = v
            at += bucket < cut
            e[kept] = v
            ids[kept] = i
            rows[kept] = r
            kept += bucket == cut
        need -= cum
        count = kept
        if count <= need:
            for a in range(count):
                out_rows[at] = rows[a]
                out_d2[at] = e[a]
                at += 1
            return at
    return at


@njit(cache=True, nogil=True)
def _store_row(p, row_out, d2_out, nbr, nd, kdist):
    """Row p's neighbours (rows, squared distances) into the lists; its k-distance (also returned)."""
    k = nbr.shape[1]
    for a in range(k):  # vectorised (no reduction in this loop)
        nbr[p, a] = row_out[a]
        nd[p, a] = math.sqrt(d2_out[a])
    m2 = 0.0
    for a in range(k):
        m2 = max(m2, d2_out[a])
    kd = math.sqrt(m2)  # = the largest distance (sqrt is monotonic)
    kdist[p] = kd
    return kd


@njit(cache=True, nogil=True)
def lof_neighbours(points, perm, start, end, left, right, dim, lo, hi, k):
    """The k nearest of every row (tree order): rows (n, k), distances (n, k) and k-distance (n).

    Ties in distance go to the lower original index (``perm``). Rows are
    visited leaf by leaf in row order, so each row's k-distance is bounded by
    its predecessor's: |kdist(p) - kdist(p')| <= |p - p'| (the k nearest of p'
    and p' itself are within kdist(p') + |p - p'| of p).
    """
    n = points.shape[0]
    nbr = np.empty((n, k), dtype=np.int32)
    nd = np.empty((n, k))
    kdist = np.empty(n)
    lof_rows_search(points, perm, start, end, left, right, dim, lo, hi, np.ones(n, dtype=np.bool_), nbr, nd, kdist)
    return nbr, nd, kdist


@njit(cache=True, nogil=True)
def lof_search_scores(points, k, leaf_size):
    """:func:`.kdtree.build_tree`, :func:`lof_neighbours` and :func:`lof_from_neighbours` in one call.

    ``points`` (n, 3) in set order, 1 <= k <= n - 1. Returns the tree's points and ``perm``, the lists
    (``nbr``, ``nd``, ``kdist``, tree order), ``keep`` (all True) and the LOF of every point in set order:
    the same arrays as the three calls (one dispatch instead of three and no boxing of the tree's arrays,
    which a cluster of a default event pays as much as for the search itself).
    """
    tp, perm, start, end, left, right, dim, lo, hi = _build(points, leaf_size)
    n = tp.shape[0]
    nbr = np.empty((n, k), dtype=np.int32)
    nd = np.empty((n, k))
    kdist = np.empty(n)
    keep = np.ones(n, dtype=np.bool_)
    lof_rows_search(tp, perm, start, end, left, right, dim, lo, hi, keep, nbr, nd, kdist)
    lof = lof_from_neighbours(nbr, nd, kdist, keep)
    scores = np.empty(n)
    for r in range(n):
        scores[perm[r]] = lof[r]
    return tp, perm, nbr, nd, kdist, keep, scores


@njit(cache=True, nogil=True)
def lof_rows_outliers(cloud, rows, k, leaf_size, threshold):
    """:func:`lof_search_scores` of the points ``cloud[rows, :3]`` (gathered here), and which of them score
    above ``threshold`` (set order) and how many: one call per cleaning of a cluster."""
    n = rows.shape[0]
    points = np.empty((n, 3))
    for i in range(n):
        r = rows[i]
        points[i, 0] = cloud[r, 0]
        points[i, 1] = cloud[r, 1]
        points[i, 2] = cloud[r, 2]
    tp, perm, nbr, nd, kdist, keep, scores = lof_search_scores(points, k, leaf_size)
    out = np.empty(n, dtype=np.bool_)
    count = 0
    for i in range(n):
        out[i] = scores[i] > threshold
        count += out[i]
    return tp, perm, nbr, nd, kdist, keep, out, count


@njit(cache=True, nogil=True)
def lof_rows_search(points, perm, start, end, left, right, dim, lo, hi, need, nbr, nd, kdist):
    """:func:`lof_neighbours` for the rows with ``need`` set only, into ``nbr``, ``nd``, ``kdist`` (k = nbr.shape[1]).

    Leaves without such a row are skipped, and so are the other rows: the
    bounds carry over from the last row computed, which holds at any distance.
    """
    n = points.shape[0]
    k = nbr.shape[1]
    heap = np.empty(k + 1)
    stack = np.empty(128, dtype=np.int64)
    cand = np.empty(n, dtype=np.int64)
    gx = np.empty(n)
    gy = np.empty(n)
    gz = np.empty(n)
    e = np.empty(n)
    sure_r = np.empty(n + 1, dtype=np.int64)  # the certain neighbours, then the selected ones (k first used)
    sure_d2 = np.empty(n + 1)
    band_at = np.empty(n + 1, dtype=np.int64)
    band_e = np.empty(n)
    band_r = np.empty(n, dtype=np.int64)
    band_i = np.empty(n, dtype=np.int64)
    scratch = np.empty(n)
    hist = np.empty(33, dtype=np.int64)
    leaves = np.flatnonzero(left < 0)
    leaves = leaves[np.argsort(start[leaves])]
    kd_prev = -1.0
    trend = 0.0
    window = 0.25  # half width of the guessed window, in steps between rows (adapts)
    prev_x = 0.0
    prev_y = 0.0
    prev_z = 0.0
    for leaf in leaves:
        s = start[leaf]
        t_end = end[leaf]
        if not need[s:t_end].any():
            continue
        cx = 0.5 * (lo[leaf, 0] + hi[leaf, 0])
        cy = 0.5 * (lo[leaf, 1] + hi[leaf, 1])
        cz = 0.5 * (lo[leaf, 2] + hi[leaf, 2])
        rl = 0.0
        for p in range(s, t_end):
            dx = points[p, 0] - cx
            dy = points[p, 1] - cy
            dz = points[p, 2] - cz
            rl = max(rl, math.sqrt(dx * dx + dy * dy + dz * dz))
        dcp = math.sqrt((cx - prev_x) ** 2 + (cy - prev_y) ** 2 + (cz - prev_z) ** 2)
        if kd_prev >= 0 and dcp <= 2.0 * rl + 0.5 * kd_prev:  # (any dcp is exact; a far predecessor gathers too much)
            # every row's k nearest lie within rl + kd_prev + |p - prev| <= 2 rl + dcp + kd_prev of the centre
            radius = (2.0 * rl + dcp + kd_prev) * (1.0 + 1e-9) + 1e-9
            m = _gather(cx, cy, cz, radius, points, start, end, left, right, lo, hi, cand, stack)
        else:
            # No close predecessor: the leaf's first row is the reference. Its k-distance among the
            # points gathered with a guessed radius is exact if it is within that radius (less rl).
            x0 = points[s, 0]
            y0 = points[s, 1]
            z0 = points[s, 2]
            kd0 = -1.0
            m = 0
            if kd_prev >= 0:
                radius = (3.0 * rl + kd_prev) * (1.0 + 1e-9) + 1e-9
                m = _gather(cx, cy, cz, radius, points, start, end, left, right, lo, hi, cand, stack)
                if m > k:
                    for a in range(m):
                        q = cand[a]
                        scratch[a] = (x0 - points[q, 0]) ** 2 + (y0 - points[q, 1]) ** 2 + (z0 - points[q, 2]) ** 2
                    kd0 = math.sqrt(_nth_value(scratch, m, k))  # the (k+1)-th with itself = k-th without
                    if kd0 > radius - rl - 1e-9 * radius:
                        kd0 = -1.0
            if kd0 < 0:
                kd0 = _kth_distance(x0, y0, z0, k + 1, points, start, end, left, right, dim, lo, hi, heap, stack)
                m = 0
            prev_x = x0
            prev_y = y0
            prev_z = z0
            kd_prev = kd0
            trend = 0.0
            need_radius = (3.0 * rl + kd0) * (1.0 + 1e-9) + 1e-9
            if m == 0 or need_radius > radius:
                m = _gather(cx, cy, cz, need_radius, points, start, end, left, right, lo, hi, cand, stack)
        self_at = -1
        for a in range(m):
            q = cand[a]
            if q == s:
                self_at = a
            gx[a] = points[q, 0]
            gy[a] = points[q, 1]
            gz[a] = points[q, 2]
        for p in range(s, t_end):
            if not need[p]:
                continue
            px = points[p, 0]
            py = points[p, 1]
            pz = points[p, 2]
            step = math.sqrt((px - prev_x) ** 2 + (py - prev_y) ** 2 + (pz - prev_z) ** 2)
            # kd_prev - step <= kdist(p) <= kd_prev + step, widened by far more than any rounding
            low = kd_prev - step - 1e-9 * (kd_prev + step) - 1e-12
            low2 = low * low if low > 0 else -1.0
            high = (kd_prev + step) * (1.0 + 1e-9) + 1e-12
            high2 = high * high
            # A narrower window to try first: the k-distance changes little from one row to the next; the
            # counts below its ends tell whether it holds (else the band between the bounds is ranked).
            guess = kd_prev + max(-step, min(step, trend))
            half = window * step + 1e-9 * kd_prev
            g_lo = guess - half
            g_lo2 = max(low2, g_lo * g_lo if g_lo > 0 else -1.0)
            g_hi2 = min(high2, (guess + half) ** 2)
            c_lo = 0
            c_hi = 0
            for a in range(m):  # vectorised
                dx = px - gx[a]
                dy = py - gy[a]
                dz = pz - gz[a]
                v = dx * dx + dy * dy + dz * dz
                e[a] = v
                c_lo += v < g_lo2
                c_hi += v < g_hi2
            e[self_at + p - s] = np.inf  # this row (a leaf's rows are gathered together, in order)
            c_lo -= 0.0 < g_lo2
            c_hi -= 0.0 < g_hi2
            if c_lo <= k <= c_hi:
                low2 = g_lo2
                high2 = g_hi2
                window = max(1.0 / 16.0, 0.8 * window)
            else:
                window = min(1.0, 2.0 * window)
            nsure = 0
            nband = 0
            for a in range(m):  # branch-free compaction: the certain neighbours (row, distance), the band's places
                v = e[a]
                sure_d2[nsure] = v
                sure_r[nsure] = cand[a]
                nsure += v < low2
                band_at[nband] = a
                nband += (v >= low2) & (v <= high2)
            for a in range(nband):
                b = band_at[a]
                band_e[a] = e[b]
                band_r[a] = cand[b]
                band_i[a] = perm[cand[b]]
            if nsure > k - 1:  # rounding at the edge of the bound: rank the surplus with the band
                for a in range(k - 1, nsure):
                    band_e[nband] = sure_d2[a]
                    band_r[nband] = sure_r[a]
                    band_i[nband] = perm[sure_r[a]]
                    nband += 1
                nsure = k - 1
            _take_smallest(band_e, band_r, band_i, nband, k - nsure, sure_r, sure_d2, nsure, hist)
            kd = _store_row(p, sure_r, sure_d2, nbr, nd, kdist)
            trend = kd - kd_prev
            kd_prev = kd
            prev_x = px
            prev_y = py
            prev_z = pz


@njit(cache=True, nogil=True)
def lof_from_neighbours(nbr, nd, kdist, keep):
    """LOF of every row with ``keep`` set from its first ``kdist``-defining neighbours (rows (n, k)).

    lrd(p) = 1 / (mean over p's neighbours o of max(|p - o|, kdist(o)) + 1e-10);
    LOF(p) = (mean over o of lrd(o)) / lrd(p). Rows without ``keep`` get 1.
    Each sum runs in four interleaved partial sums (a chain of dependent additions
    would wait on every one): the same value up to rounding, about 1e-16 relative.
    """
    n, k = nbr.shape
    lrd = np.empty(n)
    for p in range(n):
        if not keep[p]:
            continue
        s0 = s1 = s2 = s3 = 0.0
        a = 0
        while a + 4 <= k:
            s0 += max(nd[p, a], kdist[nbr[p, a]])
            s1 += max(nd[p, a + 1], kdist[nbr[p, a + 1]])
            s2 += max(nd[p, a + 2], kdist[nbr[p, a + 2]])
            s3 += max(nd[p, a + 3], kdist[nbr[p, a + 3]])
            a += 4
        while a < k:
            s0 += max(nd[p, a], kdist[nbr[p, a]])
            a += 1
        lrd[p] = 1.0 / (((s0 + s1) + (s2 + s3)) / k + 1e-10)
    out = np.ones(n)
    for p in range(n):
        if not keep[p]:
            continue
        s0 = s1 = s2 = s3 = 0.0
        a = 0
        while a + 4 <= k:
            s0 += lrd[nbr[p, a]]
            s1 += lrd[nbr[p, a + 1]]
            s2 += lrd[nbr[p, a + 2]]
            s3 += lrd[nbr[p, a + 3]]
            a += 4
        while a < k:
            s0 += lrd[nbr[p, a]]
            a += 1
        out[p] = ((s0 + s1) + (s2 + s3)) / k / lrd[p]
    return out


@njit(cache=True, nogil=True)
def lof_fewer(nbr, nd, perm, gone, k):
    """Neighbour lists for the rows left when rows with ``gone`` are removed, with k (<= the old k) neighbours.

    The k nearest of a remaining row are its first k remaining old
    neighbours in (distance, index) order, when it has that many. Returns
    (rows (n, k), distances, kdist, ok): ``ok`` is False for rows that lost
    too many neighbours (they need a new search).
    """
    n, k_old = nbr.shape
    new = np.empty((n, k), dtype=np.int32)
    dist = np.empty((n, k))
    kdist = np.zeros(n)
    ok = np.zeros(n, dtype=np.bool_)
    ce = np.empty(k_old)
    ci = np.empty(k_old, dtype=np.int64)
    cr = np.empty(k_old, dtype=np.int64)
    scratch = np.empty(33, dtype=np.int64)
    row_out = np.empty(k, dtype=np.int64)
    d_out = np.empty(k)
    for p in range(n):
        if gone[p]:
            continue
        c = 0
        for a in range(k_old):
            q = nbr[p, a]
            if not gone[q]:
                ce[c] = nd[p, a]
                ci[c] = perm[q]
                cr[c] = q
                c += 1
        if c < k:
            continue
        _take_smallest(ce, cr, ci, c, k, row_out, d_out, 0, scratch)
        kd = 0.0
        for a in range(k):
            new[p, a] = row_out[a]
            dist[p, a] = d_out[a]
            if d_out[a] > kd:
                kd = d_out[a]
        kdist[p] = kd
        ok[p] = True
    return new, dist, kdist, ok


@njit(cache=True, nogil=True)
def _put(points, ids, q, px, py, pz, e, r_, ti, at):
    """Candidate row ``q`` of the point (px, py, pz) into e, r_, ti at ``at`` (lof_neighbours' arithmetic); its
    squared distance."""
    dx = px - points[q, 0]
    dy = py - points[q, 1]
    dz = pz - points[q, 2]
    v = dx * dx + dy * dy + dz * dz
    e[at] = v
    r_[at] = q
    ti[at] = ids[q]
    return v


@njit(cache=True, nogil=True)
def lof_rows_brute(points, perm, keep, rows, nbr, nd, kdist):
    """Fill the lists of ``rows`` (k = nbr.shape[1]) by comparing each with every kept row (itself excluded).

    For the few rows :func:`lof_fewer` leaves without enough neighbours (those
    near points that were removed); ranked as :func:`lof_neighbours` ranks
    (squared distance, then original index), with the same arithmetic.
    """
    n = points.shape[0]
    k = nbr.shape[1]
    e = np.empty(n)
    r_ = np.empty(n, dtype=np.int64)
    ids = np.empty(n, dtype=np.int64)
    scratch = np.empty(33, dtype=np.int64)
    row_out = np.empty(k, dtype=np.int64)
    d2_out = np.empty(k)
    for t in range(rows.shape[0]):
        p = rows[t]
        px = points[p, 0]
        py = points[p, 1]
        pz = points[p, 2]
        m = 0
        for q in range(n):
            if q == p or not keep[q]:
                continue
            _put(points, perm, q, px, py, pz, e, r_, ids, m)
            m += 1
        _take_smallest(e, r_, ids, m, k, row_out, d2_out, 0, scratch)
        _store_row(p, row_out, d2_out, nbr, nd, kdist)


@njit(cache=True, nogil=True)
def _any_chunk_within(x, y, z, reach2, part, chunk_ptr, g_lo, g_hi, c_lo, c_hi):
    """True when a run of points of a group other than ``part`` has its box within sqrt(reach2) of (x, y, z)."""
    for g in range(chunk_ptr.shape[0] - 1):
        if g == part or box_gap2(g_lo, g_hi, g, x, y, z) > reach2:
            continue
        for j in range(chunk_ptr[g], chunk_ptr[g + 1]):
            if box_gap2(c_lo, c_hi, j, x, y, z) <= reach2:
                return True
    return False


#: :func:`lof_union_rows` boxes the other parts' points in runs of this many (their rows ascend in z along a track).
UNION_CHUNK = 16


@njit(cache=True, nogil=True)
def lof_union_rows(points, ids, old_nbr, old_nd, old_kdist, old_row, part, grp_rows, grp_ptr, nbr, nd, kdist, ok):
    """Fill the union's lists of one part's rows from that part's own earlier (larger or equal k) lists.

    ``points`` (n, 3) are the union's rows, ``ids`` their tie order. The
    part had lists ``old_nbr`` (its own rows, k_old >= k = nbr.shape[1]) over
    a set that held every point it keeps; ``old_row`` maps each of its own
    rows to a union row, or -1 for a point that is no longer in the union.
    The union's points are the groups ``grp_rows[grp_ptr[g]:grp_ptr[g + 1]]``,
    the part being group ``part``, each in ascending z.

    A kept row's surviving old neighbours are its nearest in the part (a
    prefix of the part's (distance, index) ranking); with at least k of them,
    its k nearest in the union are the k smallest of those and of the other
    groups' points not farther than the farthest of them (found by the boxes
    of each group and of its runs of :data:`UNION_CHUNK` points). Ranked as
    :func:`lof_neighbours` ranks (squared distance, then ``ids``), with the
    same arithmetic. Rows left with fewer than k survivors keep ``ok`` False
    (they need a search).

    Most rows lose no neighbour and meet no other group within their old
    k-distance (``old_kdist``): with k_old = k their list is the old one as
    it is (``old_nd``, the same values the ranking would give), so it is
    copied without computing a distance.
    """
    k = nbr.shape[1]
    k_old = old_nbr.shape[1]
    n_groups = grp_ptr.shape[0] - 1
    # boxes of the groups and of their runs of UNION_CHUNK rows
    n_chunks = 0
    for g in range(n_groups):
        n_chunks += (grp_ptr[g + 1] - grp_ptr[g] + UNION_CHUNK - 1) // UNION_CHUNK
    chunk_ptr = np.empty(n_groups + 1, dtype=np.int64)
    c_start = np.empty(n_chunks, dtype=np.int64)
    c_lo = np.empty((n_chunks, 3))
    c_hi = np.empty((n_chunks, 3))
    g_lo = np.empty((n_groups, 3))
    g_hi = np.empty((n_groups, 3))
    at = 0
    for g in range(n_groups):
        chunk_ptr[g] = at
        for d in range(3):
            g_lo[g, d] = np.inf
            g_hi[g, d] = -np.inf
        for b0 in range(grp_ptr[g], grp_ptr[g + 1], UNION_CHUNK):
            c_start[at] = b0
            for d in range(3):
                c_lo[at, d] = np.inf
                c_hi[at, d] = -np.inf
            for b in range(b0, min(b0 + UNION_CHUNK, grp_ptr[g + 1])):
                q = grp_rows[b]
                for d in range(3):
                    c_lo[at, d] = min(c_lo[at, d], points[q, d])
                    c_hi[at, d] = max(c_hi[at, d], points[q, d])
            for d in range(3):
                g_lo[g, d] = min(g_lo[g, d], c_lo[at, d])
                g_hi[g, d] = max(g_hi[g, d], c_hi[at, d])
            at += 1
    chunk_ptr[n_groups] = at
    size = k_old + grp_rows.shape[0]
    e = np.empty(size)
    r_ = np.empty(size, dtype=np.int64)
    ti = np.empty(size, dtype=np.int64)
    scratch = np.empty(33, dtype=np.int64)
    row_out = np.empty(k, dtype=np.int64)
    d2_out = np.empty(k)
    for p_old in range(old_nbr.shape[0]):
        p = old_row[p_old]
        if p < 0:
            continue
        px = points[p, 0]
        py = points[p, 1]
        pz = points[p, 2]
        if k_old == k:
            lost = False
            for a in range(k_old):
                lost |= old_row[old_nbr[p_old, a]] < 0
            if lost:
                continue  # fewer than k survivors
            # a little beyond the old k-distance (the square of a square root may round down)
            reach = old_kdist[p_old] * (1.0 + 1e-9) + 1e-12
            if not _any_chunk_within(px, py, pz, reach * reach, part, chunk_ptr, g_lo, g_hi, c_lo, c_hi):
                for a in range(k):
                    nbr[p, a] = old_row[old_nbr[p_old, a]]
                    nd[p, a] = old_nd[p_old, a]
                kdist[p] = old_kdist[p_old]
                ok[p] = True
                continue
        c = 0
        far2 = 0.0
        for a in range(k_old):
            q = old_row[old_nbr[p_old, a]]
            if q < 0:
                continue
            far2 = max(far2, _put(points, ids, q, px, py, pz, e, r_, ti, c))
            c += 1
        if c < k:
            continue
        for g in range(n_groups):
            if g == part or box_gap2(g_lo, g_hi, g, px, py, pz) > far2:
                continue
            for j in range(chunk_ptr[g], chunk_ptr[g + 1]):
                if box_gap2(c_lo, c_hi, j, px, py, pz) > far2:
                    continue
                for b in range(c_start[j], min(c_start[j] + UNION_CHUNK, grp_ptr[g + 1])):
                    # branch-free: written always, kept when not farther than the part's farthest
                    c += _put(points, ids, grp_rows[b], px, py, pz, e, r_, ti, c) <= far2
        _take_smallest(e, r_, ti, c, k, row_out, d2_out, 0, scratch)
        _store_row(p, row_out, d2_out, nbr, nd, kdist)
        ok[p] = True
