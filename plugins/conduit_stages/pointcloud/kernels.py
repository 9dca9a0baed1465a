"""Compiled kernels of the ``pointcloud`` stage: baseline, peak finding, points.

Everything a whole event needs runs in one numba call, :func:`event_points`,
with no per-trace Python. The kernels keep all their callees in this module
so that numba's on-disk cache (``cache=True``) never serves a stale callee.

Baseline (Spyral's method, spyral_algorithms.md §2.1)
    The edges are fixed (sample 0 := sample 1, sample 511 := sample 510);
    samples more than 1.5 σ above the trace mean are replaced by the mean of
    the other samples; the masked trace is low-pass filtered with the
    frequency response H(k) = sinc(k / a), k in [-N/2, N/2), a =
    ``baseline_window_scale``. H is real and even, so the filter maps real
    traces to real traces: two traces are filtered at once as the real and
    imaginary parts of one complex FFT (a radix-2 decimation-in-frequency
    forward transform, H applied in bit-reversed order, then a
    decimation-in-time inverse transform: no permutation pass is needed).
    The mask test ``x - mean > 1.5 std`` is evaluated exactly in integers.

Skipping quiet traces (exact, not a heuristic)
    With h the filter's impulse response (sum h = 1), P = sum of its positive
    taps and M = -sum of its negative taps (P - M = 1), every baseline value
    satisfies b >= P * min(masked) - M * max(masked). A peak needs a corrected
    value c = x - b > threshold, so a trace with
    max(x) - P * min(x) + M * min(max(x), mean + 1.5 std) <= threshold can
    have no peak and its FFT is skipped. The result is identical to filtering
    every trace.

Peak finding (scipy.signal.find_peaks semantics)
    Local maxima (plateaus: maximal runs of equal samples, strictly higher
    than both neighbours, not touching either end; position = the midpoint,
    rounded down); ``distance`` selection by priority = height, highest
    first (ties: the later peak wins, i.e. a *stable* argsort; numpy's default
    argsort is unstable so scipy's own tie order depends on the CPU);
    prominence with ``wlen=None``; width at ``rel_height`` between the
    prominence bases with linear interpolation; ``pmin <= prominence``,
    ``wmin <= width <= wmax``. Only maxima above the amplitude threshold are
    considered: a lower maximum is processed after every higher one in the
    distance rule, so it can never remove a peak that passes the threshold,
    and the result is the same as running find_peaks then cutting. The
    search steps over whole chunks of 8 samples using each chunk's largest
    and smallest value (computed with the corrected trace): chunks below the
    threshold hold no candidate, and a prominence walk takes a chunk no
    higher than the peak at once (its minimum, met first from the walk's
    side); the result is the same as visiting every sample.

Breaking z ties (Spyral's centroid jitter, spyral_algorithms.md §2.2)
    Peak times are whole time buckets, so many points of a cloud share one z
    and smoothing splines over z (Spyral's cluster and estimation phases)
    fail. :func:`jitter_times` adds ``tie_jitter * u`` to every point's time,
    u in [0, 1) from a counter-based generator (splitmix64 of the seed, the
    event id and the point's index), so the jitter of an event is the same
    whatever worker, order or batch processes it. :func:`make_strictly_increasing`
    then lifts any value still equal to its predecessor by one float step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

N_SAMPLES = 512
LOG2_N = 9

__all__ = [
    "N_SAMPLES",
    "FilterTables",
    "baseline_corrected",
    "event_cloud",
    "event_points",
    "jitter_times",
    "make_strictly_increasing",
    "rows_sorted_by",
    "lowpass_response",
    "trace_peaks",
]


def lowpass_response(window_scale: float, n: int = N_SAMPLES) -> np.ndarray:
    """H(k) = sinc(k / window_scale) in numpy's FFT order (k = 0, 1, ..., -n/2, ..., -1)."""
    k = np.fft.ifftshift(np.arange(-n // 2, n // 2))
    return np.sinc(k / window_scale)


class FilterTables:
    """Precomputed tables for the baseline filter of one ``baseline_window_scale``."""

    def __init__(self, window_scale: float, n: int = N_SAMPLES):
        if n != N_SAMPLES:
            raise ValueError(f"traces must have {N_SAMPLES} samples, got {n}")
        self.window_scale = float(window_scale)
        response = lowpass_response(window_scale, n)
        bitrev = _bit_reverse_table(n)
        #: H in bit-reversed order, divided by n (the inverse transform's normalisation).
        self.h_bitrev = np.ascontiguousarray(response[bitrev] / n)
        # Per-stage twiddles, concatenated: the stage with half-span s uses
        # exp(-i pi j / s), j = 0..s-1, stored from offset s - 1.
        tw = np.empty(n - 1, dtype=np.complex128)
        s = 1
        while s < n:
            tw[s - 1 : 2 * s - 1] = np.exp(-1j * np.pi * np.arange(s) / s)
            s *= 2
        self.tw_re = np.ascontiguousarray(tw.real)
        self.tw_im = np.ascontiguousarray(tw.imag)
        impulse = np.fft.ifft(response).real
        #: Sum of the positive and minus the sum of the negative impulse-response taps.
        self.positive_sum = float(impulse[impulse > 0].sum())
        self.negative_sum = float(-impulse[impulse < 0].sum())


def _bit_reverse_table(n: int) -> np.ndarray:
    bits = int(round(math.log2(n)))
    idx = np.arange(n)
    rev = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev


# --------------------------------------------------------------------------
# FFT (complex, radix 2, N = 512) on "lanes": re[:, l] + i im[:, l] is one
# complex signal per lane l, so 2 L real traces are filtered per transform and
# the inner loops run over contiguous lanes (vectorised by LLVM). Two radix-2
# stages are fused per memory pass; the arithmetic is exactly radix-2's.
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath={"contract"})
def _fft_dif(re, im, tw_re, tw_im):
    """In-place forward DFT of every lane, natural order in, bit-reversed order out."""
    n = re.shape[0]
    lanes = re.shape[1]
    s = n // 2
    while s >= 2:
        h = s // 2
        ba = s - 1
        bb = h - 1
        for start in range(0, n, 2 * s):
            for j in range(h):
                p0 = start + j
                p1 = p0 + h
                p2 = p0 + s
                p3 = p2 + h
                war = tw_re[ba + j]
                wai = tw_im[ba + j]
                wbr = tw_re[ba + j + h]
                wbi = tw_im[ba + j + h]
                wcr = tw_re[bb + j]
                wci = tw_im[bb + j]
                for l in range(lanes):
                    x0r = re[p0, l]
                    x0i = im[p0, l]
                    x1r = re[p1, l]
                    x1i = im[p1, l]
                    x2r = re[p2, l]
                    x2i = im[p2, l]
                    x3r = re[p3, l]
                    x3i = im[p3, l]
                    # stage s: (p0, p2) with w_a, (p1, p3) with w_b
                    a0r = x0r + x2r
                    a0i = x0i + x2i
                    dr = x0r - x2r
                    di = x0i - x2i
                    a2r = dr * war - di * wai
                    a2i = dr * wai + di * war
                    a1r = x1r + x3r
                    a1i = x1i + x3i
                    dr = x1r - x3r
                    di = x1i - x3i
                    a3r = dr * wbr - di * wbi
                    a3i = dr * wbi + di * wbr
                    # stage s / 2: (p0, p1) and (p2, p3) with w_c
                    re[p0, l] = a0r + a1r
                    im[p0, l] = a0i + a1i
                    dr = a0r - a1r
                    di = a0i - a1i
                    re[p1, l] = dr * wcr - di * wci
                    im[p1, l] = dr * wci + di * wcr
                    re[p2, l] = a2r + a3r
                    im[p2, l] = a2i + a3i
                    dr = a2r - a3r
                    di = a2i - a3i
                    re[p3, l] = dr * wcr - di * wci
                    im[p3, l] = dr * wci + di * wcr
        s //= 4
    if s == 1:
        for a in range(0, n, 2):
            for l in range(lanes):
                ar = re[a, l]
                ai = im[a, l]
                br = re[a + 1, l]
                bi = im[a + 1, l]
                re[a, l] = ar + br
                im[a, l] = ai + bi
                re[a + 1, l] = ar - br
                im[a + 1, l] = ai - bi


@njit(cache=True, nogil=True, fastmath={"contract"})
def _ifft_dit(re, im, tw_re, tw_im, gain):
    """In-place unnormalised inverse DFT of ``gain * (re + i im)`` in every lane.

    Bit-reversed order in, natural order out; ``gain`` (real, bit-reversed
    order) is applied as the first pass loads the data.
    """
    n = re.shape[0]
    lanes = re.shape[1]
    # stages s = 1 and s = 2 fused, twiddles 1 and (s = 2, conjugated) +i, with the gain
    for start in range(0, n, 4):
        g0 = gain[start]
        g1 = gain[start + 1]
        g2 = gain[start + 2]
        g3 = gain[start + 3]
        for l in range(lanes):
            x0r = re[start, l] * g0
            x0i = im[start, l] * g0
            x1r = re[start + 1, l] * g1
            x1i = im[start + 1, l] * g1
            x2r = re[start + 2, l] * g2
            x2i = im[start + 2, l] * g2
            x3r = re[start + 3, l] * g3
            x3i = im[start + 3, l] * g3
            a0r = x0r + x1r
            a0i = x0i + x1i
            a1r = x0r - x1r
            a1i = x0i - x1i
            a2r = x2r + x3r
            a2i = x2i + x3i
            a3r = x2r - x3r
            a3i = x2i - x3i
            re[start, l] = a0r + a2r
            im[start, l] = a0i + a2i
            re[start + 2, l] = a0r - a2r
            im[start + 2, l] = a0i - a2i
            # (a3r + i a3i) * i = -a3i + i a3r
            re[start + 1, l] = a1r - a3i
            im[start + 1, l] = a1i + a3r
            re[start + 3, l] = a1r + a3i
            im[start + 3, l] = a1i - a3r
    s = 4
    while 2 * s < n:
        s2 = 2 * s
        ba = s - 1
        bb = s2 - 1
        for start in range(0, n, 4 * s):
            for j in range(s):
                p0 = start + j
                p1 = p0 + s
                p2 = p0 + s2
                p3 = p2 + s
                war = tw_re[ba + j]
                wai = -tw_im[ba + j]
                wbr = tw_re[bb + j]
                wbi = -tw_im[bb + j]
                wcr = tw_re[bb + j + s]
                wci = -tw_im[bb + j + s]
                for l in range(lanes):
                    x0r = re[p0, l]
                    x0i = im[p0, l]
                    x1r = re[p1, l]
                    x1i = im[p1, l]
                    x2r = re[p2, l]
                    x2i = im[p2, l]
                    x3r = re[p3, l]
                    x3i = im[p3, l]
                    # stage s: (p0, p1) and (p2, p3) with w_a
                    tr = x1r * war - x1i * wai
                    ti = x1r * wai + x1i * war
                    a0r = x0r + tr
                    a0i = x0i + ti
                    a1r = x0r - tr
                    a1i = x0i - ti
                    tr = x3r * war - x3i * wai
                    ti = x3r * wai + x3i * war
                    a2r = x2r + tr
                    a2i = x2i + ti
                    a3r = x2r - tr
                    a3i = x2i - ti
                    # stage 2 s: (p0, p2) with w_b, (p1, p3) with w_c
                    tr = a2r * wbr - a2i * wbi
                    ti = a2r * wbi + a2i * wbr
                    re[p0, l] = a0r + tr
                    im[p0, l] = a0i + ti
                    re[p2, l] = a0r - tr
                    im[p2, l] = a0i - ti
                    tr = a3r * wcr - a3i * wci
                    ti = a3r * wci + a3i * wcr
                    re[p1, l] = a1r + tr
                    im[p1, l] = a1i + ti
                    re[p3, l] = a1r - tr
                    im[p3, l] = a1i - ti
        s *= 4
    if s < n:  # one radix-2 stage left (s = n / 2)
        ba = s - 1
        for j in range(s):
            wr = tw_re[ba + j]
            wi = -tw_im[ba + j]
            for l in range(lanes):
                br = re[j + s, l]
                bi = im[j + s, l]
                tr = br * wr - bi * wi
                ti = br * wi + bi * wr
                ar = re[j, l]
                ai = im[j, l]
                re[j, l] = ar + tr
                im[j, l] = ai + ti
                re[j + s, l] = ar - tr
                im[j + s, l] = ai - ti


@njit(cache=True, nogil=True)
def _lowpass_lanes(re, im, h_bitrev, tw_re, tw_im):
    """Filter the 2 * lanes real traces held in ``re`` and ``im`` in place (H real and even)."""
    _fft_dif(re, im, tw_re, tw_im)
    _ifft_dit(re, im, tw_re, tw_im, h_bitrev)


# --------------------------------------------------------------------------
# Per-trace statistics and the masked trace
# --------------------------------------------------------------------------

#: Largest number of traces filtered per transform (2 per lane).
BATCH = 64


@njit(cache=True, nogil=True)
def _trace_sums(row):
    """Sum, sum of squares, min and max of the edge-fixed samples (exact integers).

    ``row`` is a (517,) trace row; sample t is row[5 + t]. The edge fix makes
    sample 0 a copy of sample 1 and sample 511 a copy of sample 510.
    """
    x = row[5 : 5 + N_SAMPLES]
    # int32 arithmetic is exact here (|sample| <= 2**15: a square fits, 510 of them sum below 2**24 in s1)
    # and lets LLVM vectorise the loop; the squares are summed in int64.
    s1 = np.int32(0)
    s2 = np.int64(0)
    lo = np.int32(x[1])
    hi = lo
    for t in range(1, N_SAMPLES - 1):
        v = np.int32(x[t])
        s1 += v
        s2 += np.int64(v * v)
        lo = min(lo, v)
        hi = max(hi, v)
    s1 = np.int64(s1)
    lo = np.int64(lo)
    hi = np.int64(hi)
    first = np.int64(x[1])
    last = np.int64(x[N_SAMPLES - 2])
    s1 += first + last
    s2 += first * first + last * last
    return s1, s2, lo, hi


@njit(cache=True, nogil=True)
def _mask_cut(s1, s2):
    """Smallest sample value v with v - mean > 1.5 std (population), exactly.

    v - mean > 1.5 std  <=>  e = N v - S1 > 0 and 4 e^2 > 9 (N S2 - S1^2),
    which is monotone in v, so the masked samples are exactly those >= the cut.
    """
    n = N_SAMPLES
    d = n * s2 - s1 * s1
    v = np.int64(math.floor((s1 + 1.5 * math.sqrt(max(d, 0))) / n)) - 2
    while True:
        e = n * (v - 1) - s1
        if e > 0 and 4 * e * e > 9 * d:
            v -= 1
        else:
            break
    while True:
        e = n * v - s1
        if e > 0 and 4 * e * e > 9 * d:
            return v
        v += 1


@njit(cache=True, nogil=True)
def _masked_column(row, s1, s2, buf, lane, integer_fill):
    """Write the signal-masked, edge-fixed trace into ``buf[:, lane]``.

    Masked samples (>= the cut) take the mean of the kept samples, truncated
    towards zero when ``integer_fill`` (Spyral stores it into its int16 copy
    of the trace).
    """
    x = row[5 : 5 + N_SAMPLES]
    cut = _mask_cut(s1, s2)
    first = np.int64(x[1])
    last = np.int64(x[N_SAMPLES - 2])
    kept_sum = np.int64(0)
    kept = 0
    for t in range(1, N_SAMPLES - 1):
        v = np.int64(x[t])
        if v < cut:
            kept_sum += v
            kept += 1
    if first < cut:
        kept_sum += first
        kept += 1
    if last < cut:
        kept_sum += last
        kept += 1
    fill = kept_sum / kept
    if integer_fill:
        fill = float(np.int64(fill))
    for t in range(1, N_SAMPLES - 1):
        v = np.int64(x[t])
        buf[t, lane] = v if v < cut else fill
    buf[0, lane] = first if first < cut else fill
    buf[N_SAMPLES - 1, lane] = last if last < cut else fill


@njit(cache=True, nogil=True)
def _quiet_bound(s1, s2, lo, hi, pos_sum, neg_sum):
    """Upper bound of max(x - baseline) over the trace (see module docstring)."""
    n = N_SAMPLES
    mean = s1 / n
    var = (n * s2 - s1 * s1) / (n * n)
    var = max(var, 0.0)
    mask_top = mean + 1.5 * math.sqrt(var)
    kept_max = min(float(hi), mask_top)
    return hi - pos_sum * lo + neg_sum * kept_max


@njit(cache=True, nogil=True)
def _filter_batch(traces, rows, first, count, sums, h_bitrev, tw_re, tw_im, integer_fill):
    """Baselines of traces rows[first:first + count] (count <= BATCH).

    Trace q of the batch ends in column q // 2 of the first returned array
    (q even) or of the second (q odd).
    """
    lanes = (count + 1) // 2
    re = np.empty((N_SAMPLES, lanes), dtype=np.float64)
    im = np.empty((N_SAMPLES, lanes), dtype=np.float64)
    for q in range(count):
        r = rows[first + q]
        if q % 2 == 0:
            _masked_column(traces[r], sums[r, 0], sums[r, 1], re, q // 2, integer_fill)
        else:
            _masked_column(traces[r], sums[r, 0], sums[r, 1], im, q // 2, integer_fill)
    if count % 2 == 1:
        for t in range(N_SAMPLES):
            im[t, lanes - 1] = 0.0
    _lowpass_lanes(re, im, h_bitrev, tw_re, tw_im)
    return re, im


@njit(cache=True, nogil=True)
def _corrected(row, buf, lane, integer, out, chunk_max, chunk_min):
    """out = edge-fixed trace - baseline (column ``lane`` of ``buf``), optionally truncated; and its
    :func:`_chunk_extremes`."""
    x = row[5 : 5 + N_SAMPLES]
    for t in range(1, N_SAMPLES - 1):
        out[t] = x[t] - buf[t, lane]
    out[0] = x[1] - buf[0, lane]
    out[N_SAMPLES - 1] = x[N_SAMPLES - 2] - buf[N_SAMPLES - 1, lane]
    if integer:
        for t in range(N_SAMPLES):
            out[t] = float(np.int64(out[t]))  # truncation towards zero, like a cast to int32
    _chunk_extremes(out, chunk_max, chunk_min)


# --------------------------------------------------------------------------
# Chunk extremes: the largest and smallest sample of each run of CHUNK samples
# let the peak search step over whole chunks where nothing can happen (below
# the threshold; no sample above a peak's top) with exactly the result of
# visiting every sample.
# --------------------------------------------------------------------------

CHUNK = 8
CHUNK_SHIFT = 3


@njit(cache=True, nogil=True)
def _chunk_extremes(c, chunk_max, chunk_min):
    """chunk_max[b], chunk_min[b] = max and min of c[CHUNK b : CHUNK (b + 1)]."""
    n = c.shape[0]
    full = n >> CHUNK_SHIFT
    for b in range(full):
        start = b << CHUNK_SHIFT
        hi = c[start]
        lo = hi
        for t in range(start + 1, start + CHUNK):
            v = c[t]
            hi = max(hi, v)
            lo = min(lo, v)
        chunk_max[b] = hi
        chunk_min[b] = lo
    start = full << CHUNK_SHIFT
    if start < n:
        hi = c[start]
        lo = hi
        for t in range(start + 1, n):
            hi = max(hi, c[t])
            lo = min(lo, c[t])
        chunk_max[full] = hi
        chunk_min[full] = lo


# --------------------------------------------------------------------------
# Peak finding with scipy.signal.find_peaks semantics
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _peak_work(n):
    """Scratch arrays of :func:`_find_peaks` for a trace of ``n`` samples: (pos, left_edge, right_edge,
    prom, left_ips, right_ips, flags, chunk_max, chunk_min)."""
    half = n // 2 + 1
    chunks = (n + CHUNK - 1) >> CHUNK_SHIFT
    return (
        np.empty(half, dtype=np.int64),
        np.empty(half, dtype=np.int64),
        np.empty(half, dtype=np.int64),
        np.empty(half, dtype=np.float64),
        np.empty(half, dtype=np.float64),
        np.empty(half, dtype=np.float64),
        np.empty(half, dtype=np.int8),
        np.empty(chunks, dtype=np.float64),
        np.empty(chunks, dtype=np.float64),
    )


@njit(cache=True, nogil=True)
def _find_peaks(c, threshold, distance, prominence_min, width_min, width_max, rel_height, work):
    """Peaks of ``c`` with height > threshold that pass find_peaks' conditions.

    ``work`` (:func:`_peak_work`) receives ``pos`` (index), ``left_edge``/``right_edge`` (plateau
    edges), ``prom``, ``left_ips``/``right_ips`` for the accepted peaks, in position order; returns
    their number. Its ``chunk_max``/``chunk_min`` must hold c's :func:`_chunk_extremes`.
    """
    pos, left_edge, right_edge, prom, left_ips, right_ips, flags, chunk_max, chunk_min = work
    n = c.shape[0]
    # 1. local maxima above the threshold
    m = 0
    i = 1
    i_max = n - 1
    while i < i_max:
        if chunk_max[i >> CHUNK_SHIFT] <= threshold:
            # no sample from i to the chunk's end passes the threshold test below
            i = (i | (CHUNK - 1)) + 1
            continue
        # Testing the threshold first keeps the loop branch-predictable; a
        # skipped sample could only have started a maximum below it.
        if c[i] > threshold and c[i - 1] < c[i]:
            i_ahead = i + 1
            while i_ahead < i_max and c[i_ahead] == c[i]:
                i_ahead += 1
            if c[i_ahead] < c[i]:
                left_edge[m] = i
                right_edge[m] = i_ahead - 1
                pos[m] = (i + i_ahead - 1) // 2
                m += 1
                i = i_ahead
        i += 1
    if m == 0:
        return 0
    # 2. distance: highest first, ties -> later position first (stable argsort).
    #    flags: 1 = kept, 2 = already processed
    dist = np.int64(math.ceil(distance))
    for j in range(m):
        flags[j] = 1
    if m > 1:
        for _ in range(m):
            best = -1
            for j in range(m):
                if flags[j] & 2 == 0 and (best < 0 or c[pos[j]] >= c[pos[best]]):
                    best = j
            flags[best] |= 2
            if flags[best] & 1 == 0:
                continue
            k = best - 1
            while k >= 0 and pos[best] - pos[k] < dist:
                flags[k] &= 2
                k -= 1
            k = best + 1
            while k < m and pos[k] - pos[best] < dist:
                flags[k] &= 2
                k += 1
    # 3. prominence (wlen=None) and 4. width at rel_height
    out = 0
    for j in range(m):
        if flags[j] & 1 == 0:
            continue
        p = pos[j]
        top = c[p]
        # Walk left (right) while samples stay <= top, keeping the first-met smallest sample. A whole
        # chunk no higher than top is taken at once: its minimum, met first at its right (left) end.
        lb = p
        left_min = top
        i = p
        while i >= 0:
            b = i >> CHUNK_SHIFT
            if i & (CHUNK - 1) == CHUNK - 1 and chunk_max[b] <= top:
                if chunk_min[b] < left_min:
                    left_min = chunk_min[b]
                    lb = i
                    while c[lb] != left_min:
                        lb -= 1
                i -= CHUNK
                continue
            if c[i] > top:
                break
            if c[i] < left_min:
                left_min = c[i]
                lb = i
            i -= 1
        rb = p
        right_min = top
        i = p
        while i <= n - 1:
            b = i >> CHUNK_SHIFT
            if i & (CHUNK - 1) == 0 and i + CHUNK <= n and chunk_max[b] <= top:
                if chunk_min[b] < right_min:
                    right_min = chunk_min[b]
                    rb = i
                    while c[rb] != right_min:
                        rb += 1
                i += CHUNK
                continue
            if c[i] > top:
                break
            if c[i] < right_min:
                right_min = c[i]
                rb = i
            i += 1
        pr = top - max(left_min, right_min)
        if not (prominence_min <= pr):
            continue
        height = top - pr * rel_height
        i = p
        while lb < i and height < c[i]:
            i -= 1
        lip = float(i)
        if c[i] < height and c[i + 1] != c[i]:
            lip += (height - c[i]) / (c[i + 1] - c[i])
        i = p
        while i < rb and height < c[i]:
            i += 1
        rip = float(i)
        if c[i] < height and c[i - 1] != c[i]:
            rip -= (height - c[i]) / (c[i - 1] - c[i])
        w = rip - lip
        if not (width_min <= w <= width_max):
            continue
        pos[out] = p
        left_edge[out] = left_edge[j]
        right_edge[out] = right_edge[j]
        prom[out] = pr
        left_ips[out] = lip
        right_ips[out] = rip
        out += 1
    return out


@njit(cache=True, nogil=True)
def _centroid(c, p, left, right, mode):
    """Peak time (TB): the find_peaks index (mode 0) or a parabolic refinement (mode 1)."""
    if mode == 0:
        return float(p)
    if left != right:  # plateau: its centre
        return 0.5 * (left + right)
    if p <= 0 or p >= c.shape[0] - 1:
        return float(p)
    ym = c[p - 1]
    y0 = c[p]
    yp = c[p + 1]
    den = ym - 2.0 * y0 + yp
    if den >= 0.0:
        return float(p)
    shift = 0.5 * (ym - yp) / den
    if shift > 0.5:
        shift = 0.5
    elif shift < -0.5:
        shift = -0.5
    return p + shift


@njit(cache=True, nogil=True)
def _integral(c, lip, rip):
    """Sum of |c[i]| for i from floor(left_ips) to ceil(right_ips) - 1."""
    lo = int(math.floor(lip))
    hi = int(math.ceil(rip))
    total = 0.0
    for i in range(lo, hi):
        total += abs(c[i])
    return total


# --------------------------------------------------------------------------
# Public kernels
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def baseline_corrected(traces, h_bitrev, tw_re, tw_im, integer, integer_fill):
    """Baseline-subtracted samples of every row of an (n, 517) int16 matrix: (n, 512) float64."""
    n = traces.shape[0]
    out = np.empty((n, N_SAMPLES), dtype=np.float64)
    chunk_max = np.empty(N_SAMPLES // CHUNK, dtype=np.float64)
    chunk_min = np.empty(N_SAMPLES // CHUNK, dtype=np.float64)
    rows = np.arange(n)
    sums = np.empty((n, 2), dtype=np.int64)
    for r in range(n):
        s1, s2, _, _ = _trace_sums(traces[r])
        sums[r, 0] = s1
        sums[r, 1] = s2
    for first in range(0, n, BATCH):
        count = min(BATCH, n - first)
        re, im = _filter_batch(traces, rows, first, count, sums, h_bitrev, tw_re, tw_im, integer_fill)
        for q in range(count):
            if q % 2 == 0:
                _corrected(traces[first + q], re, q // 2, integer, out[first + q], chunk_max, chunk_min)
            else:
                _corrected(traces[first + q], im, q // 2, integer, out[first + q], chunk_max, chunk_min)
    return out


@njit(cache=True, nogil=True)
def trace_peaks(c, threshold, distance, prominence_min, width_min, width_max, rel_height):
    """find_peaks on one corrected trace, then the amplitude cut: for tests and tools.

    Returns (positions int64, prominences, left_ips, right_ips, integrals),
    one entry per peak with c[p] > threshold.
    """
    work = _peak_work(c.shape[0])
    pos, _, _, prom, lip, rip, _, chunk_max, chunk_min = work
    _chunk_extremes(c, chunk_max, chunk_min)
    k = _find_peaks(c, threshold, distance, prominence_min, width_min, width_max, rel_height, work)
    integrals = np.empty(k, dtype=np.float64)
    for j in range(k):
        integrals[j] = _integral(c, lip[j], rip[j])
    return pos[:k].copy(), prom[:k].copy(), lip[:k].copy(), rip[:k].copy(), integrals


@njit(cache=True, nogil=True)
def event_points(
    traces,
    pad_ok,
    pad_x,
    pad_y,
    pad_scale,
    pad_tcorr,
    pad_gain,
    h_bitrev,
    tw_re,
    tw_im,
    pos_sum,
    neg_sum,
    threshold,
    distance,
    prominence_min,
    width_min,
    width_max,
    rel_height,
    max_peaks,
    integer,
    integer_fill,
    centroid_mode,
):
    """The point cloud of one event in trace order, (M, 8) float64, z column left 0.

    Also returns the number of traces that needed filtering. ``pad_ok[pad]``
    is False for beam pads and excluded pads; rows whose pad id is outside
    the map are skipped. The caller fills z from the time column with the
    detector's drift map and sorts the rows by z.
    """
    n = traces.shape[0]
    n_pads = pad_ok.shape[0]
    margin = 1e-6
    # Pass 1: which traces can hold a peak at all.
    active = np.empty(n, dtype=np.int64)
    sums = np.empty((n, 2), dtype=np.int64)
    n_active = 0
    for r in range(n):
        pad = np.int64(traces[r, 4])
        if pad < 0 or pad >= n_pads or not pad_ok[pad]:
            continue
        s1, s2, lo, hi = _trace_sums(traces[r])
        if _quiet_bound(s1, s2, lo, hi, pos_sum, neg_sum) <= threshold - margin:
            continue
        active[n_active] = r
        sums[r, 0] = s1
        sums[r, 1] = s2
        n_active += 1
    # Pass 2: filter batches of active traces, find peaks, emit points.
    cloud = np.empty((n_active * max_peaks, 8), dtype=np.float64)
    n_points = 0
    c = np.empty(N_SAMPLES, dtype=np.float64)
    work = _peak_work(N_SAMPLES)
    pos, le, rg, _, lip, rip, _, chunk_max, chunk_min = work
    for first in range(0, n_active, BATCH):
        count = min(BATCH, n_active - first)
        re, im = _filter_batch(traces, active, first, count, sums, h_bitrev, tw_re, tw_im, integer_fill)
        for q in range(count):
            r = active[first + q]
            if q % 2 == 0:
                _corrected(traces[r], re, q // 2, integer, c, chunk_max, chunk_min)
            else:
                _corrected(traces[r], im, q // 2, integer, c, chunk_max, chunk_min)
            k = _find_peaks(c, threshold, distance, prominence_min, width_min, width_max, rel_height, work)
            if k == 0 or k > max_peaks:
                continue
            pad = np.int64(traces[r, 4])
            gain = pad_gain[pad]
            for j in range(k):
                t = _centroid(c, pos[j], le[j], rg[j], centroid_mode) + pad_tcorr[pad]
                row = cloud[n_points]
                row[0] = pad_x[pad]
                row[1] = pad_y[pad]
                row[2] = 0.0
                row[3] = c[pos[j]] * gain
                row[4] = _integral(c, lip[j], rip[j]) * gain
                row[5] = pad
                row[6] = t
                row[7] = pad_scale[pad]
                n_points += 1
    return cloud[:n_points], n_active


# --------------------------------------------------------------------------
# Breaking z ties
# --------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True)
def _splitmix64(x):
    """The splitmix64 finaliser of ``x + golden ratio`` (Steele, Lea, Flood 2014): a well-mixed uint64."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def jitter_times(cloud, column, amplitude, seed, event_id):
    """Add ``amplitude * u_i`` to ``cloud[i, column]`` (TB), u_i in [0, 1) from (seed, event_id, i).

    u_i = (splitmix64(splitmix64(splitmix64(seed) ^ event_id) + i) >> 11) / 2**53, so the
    same event always gets the same jitter, independent of the other events.
    """
    key = _splitmix64(_splitmix64(np.uint64(seed)) ^ np.uint64(event_id))
    scale = amplitude / 9007199254740992.0  # 2**53
    for i in range(cloud.shape[0]):
        u = _splitmix64(key + np.uint64(i)) >> np.uint64(11)
        cloud[i, column] += scale * float(u)


@njit(cache=True, nogil=True)
def make_strictly_increasing(values):
    """Lift every value not above its predecessor to the next float above it (in place); how many moved.

    ``values`` must be sorted ascending. Equal values survive jitter only by
    chance (two draws rounding to the same float), but Spyral needs strict order.
    """
    moved = 0
    for i in range(1, values.shape[0]):
        if values[i] <= values[i - 1]:
            values[i] = np.nextafter(values[i - 1], np.inf)
            moved += 1
    return moved


@njit(cache=True, nogil=True)
def rows_sorted_by(cloud, column, strict):
    """A copy of ``cloud`` with its rows in stable ascending order of ``column``; with ``strict``, values
    equal to their predecessor then lifted by :func:`make_strictly_increasing`.

    One compiled call instead of numpy's argsort, a fancy-index copy and a second kernel call.
    """
    n = cloud.shape[0]
    order = np.argsort(cloud[:, column], kind="mergesort")  # stable: the one order numpy's stable sort gives
    out = np.empty_like(cloud)
    for i in range(n):
        out[i, :] = cloud[order[i], :]
    if strict and n > 1:
        make_strictly_increasing(out[:, column])
    return out


# --------------------------------------------------------------------------
# The whole event in one call
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def event_cloud(
    traces, points_args, time_column, z_column, jitter, jitter_seed, event_id, window_bucket, drift_buckets,
    drift_length,
):
    """The event's cloud as the stage returns it: :func:`event_points` (its arguments after the traces in the
    tuple ``points_args``), the tie jitter (``jitter`` > 0,
    :func:`jitter_times`) on ``time_column``, ``z_column`` = (window_bucket - time) / drift_buckets *
    drift_length (the detector's ``z_from_bucket``: the same operations in the same order) and the rows
    sorted by z (:func:`rows_sorted_by`, ties lifted when jittered). Also returns the number of traces
    filtered.

    One compiled call per event instead of four calls and numpy temporaries between them.
    """
    cloud, n_filtered = event_points(traces, *points_args)
    if jitter > 0.0:
        jitter_times(cloud, time_column, jitter, jitter_seed, event_id)
    for i in range(cloud.shape[0]):
        cloud[i, z_column] = (window_bucket - cloud[i, time_column]) / drift_buckets * drift_length
    return rows_sorted_by(cloud, z_column, jitter > 0.0), n_filtered
