"""Compiled per-event passes of the view: every event received is counted, drawn or not, and a drawn event's
arrays are built in a few passes.

:func:`peak_heights` (the peak above a cheap baseline, per trace row) and
:func:`count_hits` (which pads of an event were hit, once each) run in one
pass over the trace matrix each, with no per-row Python; they replace a
row-wise ``np.median`` that cost about 0.5 ms per event. A drawn event's
panels come from :func:`pad_markers` (positions, radii, colours and hover
texts of the pad plane, no Python string per pad), :func:`cloud_columns`,
:func:`helix_strips`, :func:`top_rows`, :func:`sample_range` and
:func:`trace_polylines`: each the numpy code it replaced, step by step, so
that the recording is the same bit for bit (tests compare them). All kernels
keep their callees in this module (numba cache safety).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

from conduit.event import ASAD, COBO, PAD

__all__ = ["peak_heights", "peaks", "event_columns", "count_hits", "count_pairs", "count_keys", "finite_percentile", "join_texts", "ramp_rgba", "pad_markers",
           "cloud_columns", "helix_strips", "top_rows", "sample_range", "trace_polylines", "warm_up"]

FIRST_SAMPLE = 5  # column of the first sample in the trace matrix (conduit.event.SAMPLES)
N_SAMPLES = 512
BASELINE_STRIDE = 32  # the baseline is the median of every 32nd sample


def _batcher_network(n: int) -> np.ndarray:
    """Compare-exchange pairs of Batcher's odd-even merge sort for n (a power of two) values."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64)


#: Sorting network of the 16 baseline samples: branch-free, unlike a sort of random data.
_NETWORK = _batcher_network(N_SAMPLES // BASELINE_STRIDE)


#: Rows per block of :func:`_peak_heights`: the baseline samples of a block are sorted side by side.
BLOCK = 64


@njit(cache=True, nogil=True)
def _peak_heights(traces, network, maxima, pads, keys):
    """Peak heights and largest samples of every row, a block of rows at a time; with them each row's pad
    (``pads``) and (CoBo, AsAd) key, CoBo * 256 + AsAd (``keys``), read while the row is at hand (the
    counts of every event need them; read apart, each was a strided pass over the matrix of its own).

    The max over a row's 512 samples is a reduction the compiler vectorises;
    the 16 baseline samples of ``BLOCK`` rows are gathered into columns
    (``v[i, b]``: sample ``i`` of row ``b``) so that each compare-exchange of
    the sorting network runs over the whole block at once (vectorised across
    rows: one network per block, not per row).
    """
    n = traces.shape[0]
    m = N_SAMPLES // BASELINE_STRIDE
    out = np.empty(n)
    v = np.empty((m, BLOCK), dtype=np.int16)
    for first in range(0, n, BLOCK):
        size = min(BLOCK, n - first)
        for b in range(size):
            row = traces[first + b]
            pads[first + b] = row[PAD]
            keys[first + b] = np.int64(row[COBO]) * 256 + np.int64(row[ASAD])
            top = row[FIRST_SAMPLE]
            for j in range(FIRST_SAMPLE + 1, FIRST_SAMPLE + N_SAMPLES):
                x = row[j]
                top = x if x > top else top  # a max reduction the compiler vectorises
            maxima[first + b] = top
            for i in range(m):
                v[i, b] = row[FIRST_SAMPLE + BASELINE_STRIDE * i]
        for q in range(network.shape[0]):
            lo = v[network[q, 0]]
            hi = v[network[q, 1]]
            for b in range(size):
                a = lo[b]
                c = hi[b]
                lo[b] = min(a, c)
                hi[b] = max(a, c)
        for b in range(size):
            # np.median of an even count: the mean of the two middle values
            out[first + b] = float(maxima[first + b]) - 0.5 * (np.int32(v[m // 2 - 1, b]) + np.int32(v[m // 2, b]))
    return out


def peak_heights(traces: np.ndarray) -> np.ndarray:
    """Peak above baseline per trace row (ADC): max of the samples minus the median of every 32nd one
    (as ``samples.max(axis=1) - np.median(samples[:, ::32], axis=1)``)."""
    return peaks(traces)[0]


def peaks(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(:func:`peak_heights`, the largest sample of each row), from one pass over the trace matrix: the view
    counts the first and leaves saturated traces (by the second) out of its trace panel."""
    heights, maxima, _, _ = event_columns(traces)
    return heights, maxima


def event_columns(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(:func:`peak_heights`, the largest sample of each row, each row's pad id and its (CoBo, AsAd) key
    CoBo * 256 + AsAd, all int64) from one pass over the trace matrix: what the view counts for every event
    (occupancy by pad, health by key) and draws (the pad plane by pad, the traces panel without the
    saturated rows)."""
    traces = np.ascontiguousarray(traces)
    n = traces.shape[0]
    maxima = np.empty(n, dtype=np.int64)
    pads = np.empty(n, dtype=np.int64)
    keys = np.empty(n, dtype=np.int64)
    return _peak_heights(traces, _NETWORK, maxima, pads, keys), maxima, pads, keys


@njit(cache=True, nogil=True)
def finite_percentile(values, q):
    """The ``q`` percentile of the finite ``values`` (NaN when none): :func:`.colors.percentile_of` of
    ``values[np.isfinite(values)]`` (numpy's linear method, bit for bit) in one compiled pass, for the colour
    scale of a drawn event (:meth:`.colors.ColorScale.for_values` took a dozen numpy calls)."""
    finite = np.empty(values.shape[0])
    n = 0
    for v in values:
        if np.isfinite(v):
            finite[n] = v
            n += 1
    if n == 0:
        return np.nan
    finite = finite[:n]
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:
        return finite.max()
    if virtual < 0:
        return finite.min()
    below = np.int64(np.floor(virtual))
    part = np.partition(finite, below + 1)  # the (below + 1)-th smallest in place, the smaller ones before it
    a = part[:below + 1].max()
    b = part[below + 1]
    t = virtual - below
    step = b - a
    return b - step * (1 - t) if t >= 0.5 else a + step * t


@njit(cache=True, nogil=True)
def count_hits(pads, heights, threshold, hits, stamp, event_stamp):
    """Add one to ``hits[pad]`` for every pad with a row at or above ``threshold``, once per event.

    ``stamp[pad]`` remembers the last event (``event_stamp``) that counted the
    pad, so a pad read twice in one event counts once; pads outside
    ``hits`` are ignored. Returns the number of pads counted.
    """
    counted = 0
    n_pads = hits.shape[0]
    for r in range(pads.shape[0]):
        p = pads[r]
        if heights[r] >= threshold and 0 <= p < n_pads and stamp[p] != event_stamp:
            stamp[p] = event_stamp
            hits[p] += 1
            counted += 1
    return counted


@njit(cache=True, nogil=True)
def count_pairs(traces, counts, stamp, event_stamp):
    """Add one to ``counts[cobo * 256 + asad]`` for every (CoBo, AsAd) with a row in ``traces``, once per event.

    ``stamp[key]`` remembers the last event (``event_stamp``) that counted the key. Negative keys are
    ignored; rows whose key lies past ``counts`` are not counted here: returns how many there are (the
    caller counts them itself).
    """
    outside = 0
    size = counts.shape[0]
    for r in range(traces.shape[0]):
        key = np.int64(traces[r, COBO]) * 256 + np.int64(traces[r, ASAD])
        if key < 0:
            continue
        if key >= size:
            outside += 1
        elif stamp[key] != event_stamp:
            stamp[key] = event_stamp
            counts[key] += 1
    return outside


@njit(cache=True, nogil=True)
def count_keys(keys, counts, stamp, event_stamp):
    """:func:`count_pairs` over the rows' keys (CoBo * 256 + AsAd, from :func:`event_columns`) instead of the
    trace matrix: add one to ``counts[key]`` for every key, once per event; negative keys are ignored; returns
    how many rows have a key past ``counts``."""
    outside = 0
    size = counts.shape[0]
    for r in range(keys.shape[0]):
        key = keys[r]
        if key < 0:
            continue
        if key >= size:
            outside += 1
        elif stamp[key] != event_stamp:
            stamp[key] = event_stamp
            counts[key] += 1
    return outside


@njit(cache=True, nogil=True)
def join_texts(data_a, starts_a, lengths_a, index_a, data_b, starts_b, lengths_b, index_b):
    """UTF-8 bytes and int32 offsets of the strings ``a[index_a[i]] + b[index_b[i]]``, where table ``a`` is
    ``data_a[starts_a[k]:starts_a[k] + lengths_a[k]]`` (and ``b`` likewise): an Arrow string array's buffers."""
    n = index_a.shape[0]
    offsets = np.empty(n + 1, dtype=np.int32)
    offsets[0] = 0
    for i in range(n):
        offsets[i + 1] = offsets[i] + lengths_a[index_a[i]] + lengths_b[index_b[i]]
    out = np.empty(offsets[n], dtype=np.uint8)
    for i in range(n):
        at = offsets[i]
        k = index_a[i]
        for j in range(lengths_a[k]):
            out[at + j] = data_a[starts_a[k] + j]
        at += lengths_a[k]
        k = index_b[i]
        for j in range(lengths_b[k]):
            out[at + j] = data_b[starts_b[k] + j]
    return offsets, out


@register_jitable
def _ramp_one(x, stops):
    """One ramp position as Rerun's packed 0xRRGGBBAA (opaque): the arithmetic of :func:`.colors.ramp`
    (clip to [0, 1], NaN -> 0, linear between ``stops``, round half to even)."""
    n_stops = stops.shape[0]
    if np.isnan(x):
        x = 0.0
    x = min(max(x, 0.0), 1.0) * (n_stops - 1)
    i = min(int(x), n_stops - 2)
    f = x - i
    packed = np.uint32(255)
    for c in range(3):
        v = np.rint(stops[i, c] * (1 - f) + stops[i + 1, c] * f)
        packed |= np.uint32(np.uint8(v)) << np.uint32(24 - 8 * c)
    return packed


@register_jitable
def _linear_position(v, low, high):
    """Where ``v`` falls on a linear colour scale, 0..1: :meth:`.colors.ColorScale.position` (NaN -> 0)."""
    t = (v - low) / (high - low)
    if np.isnan(t):
        return 0.0
    return min(max(t, 0.0), 1.0)


@njit(cache=True, nogil=True)
def ramp_rgba(t, stops):
    """Colours of ramp positions ``t`` as Rerun's packed 0xRRGGBBAA (opaque), one pass: the same arithmetic as
    :func:`.colors.ramp` (clip to [0, 1], NaN -> 0, linear between ``stops``, round half to even)."""
    out = np.empty(t.shape[0], dtype=np.uint32)
    for k in range(t.shape[0]):
        out[k] = _ramp_one(t[k], stops)
    return out


#: Rounded amplitudes up to this many ADC get their hover text from :func:`pad_markers` (far past 12-bit samples).
HOVER_LIMIT = 1e15


@register_jitable
def _n_digits(v):
    """Decimal digits of the non-negative integer ``v``."""
    n = 1
    while v >= 10:
        v //= 10
        n += 1
    return n


@register_jitable
def _put_number(data, at, v):
    """Write the decimal digits of the non-negative integer ``v`` at ``data[at:]``; returns where they end."""
    n = _n_digits(v)
    for j in range(n - 1, -1, -1):
        data[at + j] = 48 + v % 10
        v //= 10
    return at + n


@register_jitable
def _put_bytes(data, at, piece):
    """Write the bytes ``piece`` at ``data[at:]``; returns where they end."""
    for j in range(piece.shape[0]):
        data[at + j] = piece[j]
    return at + piece.shape[0]


_PAD = np.frombuffer(b"pad ", dtype=np.uint8)
_COLON = np.frombuffer(b": ", dtype=np.uint8)
_ADC = np.frombuffer(b" ADC", dtype=np.uint8)


@njit(cache=True, nogil=True)
def pad_markers(ids, amplitude, table, low, high, stops):
    """The pad plane's hit markers in one pass over an event's rows: for every row on the plane
    (0 <= id < len(table)), its position and radius (float32, from ``table``: one row of x, y, radius and a
    spare per pad, so that a pad's entry is one cache line, not five tables), its amplitude's colour on the
    linear scale ``low``..``high`` (packed RGBA) and its hover text "pad P: A ADC", A = ``rint(amplitude)``
    (half to even, as ``f"{a:.0f}"``), its digits written here (UTF-8 bytes and int32 offsets: an Arrow
    string array's buffers).

    Returns (positions (n, 2), radii, colours, text offsets, text bytes, ok): ``ok`` is False, and the texts
    empty, when a rounded amplitude is negative, not finite or not below :data:`HOVER_LIMIT`.
    """
    pad_text, colon, adc = _PAD, _COLON, _ADC
    n_pads = table.shape[0]
    rows = ids.shape[0]
    # One pass, into buffers sized for the longest text a row can have (the pad's digits at most those of the
    # last pad, the amplitude's at most 16 below HOVER_LIMIT), cut to what was written: a counting pass first
    # repeated a rint and two digit counts per row.
    longest = pad_text.shape[0] + colon.shape[0] + adc.shape[0] + _n_digits(max(n_pads - 1, 0)) + 16
    positions = np.empty((rows, 2), dtype=np.float32)
    out_radii = np.empty(rows, dtype=np.float32)
    colors = np.empty(rows, dtype=np.uint32)
    offsets = np.zeros(rows + 1, dtype=np.int32)
    data = np.empty(rows * longest, dtype=np.uint8)
    ok = True
    k = 0
    at = 0
    for r in range(rows):
        p = ids[r]
        if 0 <= p < n_pads:
            positions[k, 0] = table[p, 0]
            positions[k, 1] = table[p, 1]
            out_radii[k] = table[p, 2]
            colors[k] = _ramp_one(_linear_position(amplitude[r], low, high), stops)
            a = np.rint(amplitude[r])
            if ok and a >= 0 and a < HOVER_LIMIT:  # "pad P: A ADC"
                at = _put_bytes(data, at, pad_text)
                at = _put_number(data, at, p)
                at = _put_bytes(data, at, colon)
                at = _put_number(data, at, np.int64(a))
                at = _put_bytes(data, at, adc)
            else:
                ok = False
                at = 0
            offsets[k + 1] = at
            k += 1
    if not ok:
        offsets[:] = 0
        return positions[:k], out_radii[:k], colors[:k], offsets[:k + 1], data[:0], ok
    return positions[:k], out_radii[:k], colors[:k], offsets[:k + 1], data[:at], ok


@njit(cache=True, nogil=True)
def cloud_columns(cloud, charge_column, labels, low, high, stops, noise_rgba, n_classes):
    """The 3-D cloud's columns in one pass: float32 positions (x, y, z), packed colours of the charge on the
    linear scale ``low``..``high``, and, when ``labels`` has one entry per point, noise (label < 0) in
    ``noise_rgba`` with radius -1.2 (else -2.0) and the annotation class of each label (0 for noise, else
    label mod (n_classes - 1) plus one: :func:`.eventview.class_ids`)."""
    n = cloud.shape[0]
    labelled = labels.shape[0] == n
    positions = np.empty((n, 3), dtype=np.float32)
    colors = np.empty(n, dtype=np.uint32)
    radii = np.empty(n if labelled else 0, dtype=np.float32)
    classes = np.empty(n if labelled else 0, dtype=np.uint16)
    for i in range(n):
        for c in range(3):
            positions[i, c] = cloud[i, c]
        colors[i] = _ramp_one(_linear_position(cloud[i, charge_column], low, high), stops)
        if labelled:
            label = labels[i]
            if label < 0:
                colors[i] = noise_rgba
                radii[i] = -1.2
                classes[i] = 0
            else:
                radii[i] = -2.0
                classes[i] = label % (n_classes - 1) + 1
    return positions, colors, radii, classes


@njit(cache=True, nogil=True)
def helix_strips(center_x, center_y, radius, vertex_x, vertex_y, vertex_z, polar, labels, sense, length,
                 chamber_radius, points, n_classes):
    """Every track's helix as float32 points (strip after strip) with the int32 offsets of the strips, the
    last point of each (the vertex for an empty strip), the vertices (float32) and each track's annotation
    class (:func:`.eventview.class_ids` of its cluster ``labels``): :func:`conduit_physics.tracks.helix.helices`
    (one turn, ``points`` points, cut where it leaves the chamber), its arithmetic step by step."""
    n = radius.shape[0]
    step = 2 * np.pi / (points - 1)
    offsets = np.zeros(n + 1, dtype=np.int32)
    xyz = np.empty((n * points, 3), dtype=np.float32)
    ends = np.empty((n, 3), dtype=np.float32)
    vertices = np.empty((n, 3), dtype=np.float32)
    classes = np.empty(n, dtype=np.uint16)
    used = 0
    for k in range(n):
        r = radius[k]
        vertices[k, 0] = vertex_x[k]
        vertices[k, 1] = vertex_y[k]
        vertices[k, 2] = vertex_z[k]
        ends[k] = vertices[k]
        classes[k] = labels[k] % (n_classes - 1) + 1 if labels[k] >= 0 else 0
        offsets[k + 1] = used
        if not np.isfinite(r) or r <= 0 or not np.isfinite(polar[k]):
            continue
        cx = center_x[k]
        cy = center_y[k]
        a0 = np.arctan2(vertex_y[k] - cy, vertex_x[k] - cx)
        tan = np.tan(polar[k])
        flat = not abs(tan) > 1e-9
        kept = points
        for i in range(points):
            t = i * step if i < points - 1 else 2 * np.pi
            x = cx + r * np.cos(a0 + sense * t)
            y = cy + r * np.sin(a0 + sense * t)
            z = vertex_z[k] + (0.0 if flat else r * t / tan)
            if i > 0 and not (z >= 0.0 and z <= length and np.hypot(x, y) <= chamber_radius):
                kept = max(i, 2)
                if i == 1:  # the second point is kept anyway (a strip has at least two)
                    xyz[used + 1, 0] = x
                    xyz[used + 1, 1] = y
                    xyz[used + 1, 2] = z
                break
            xyz[used + i, 0] = x
            xyz[used + i, 1] = y
            xyz[used + i, 2] = z
        ends[k] = xyz[used + kept - 1]
        used += kept
        offsets[k + 1] = used
    return xyz[:used], offsets, ends, vertices, classes


@njit(cache=True, nogil=True)
def top_rows(amplitude, maxima, limit, count):
    """The rows of the ``count`` largest amplitudes among the rows whose largest sample is below ``limit``,
    largest first, ties (and NaNs, last) in row order: ``np.argsort(-amplitude[ok], kind="stable")[:count]``
    as rows; and the number of rows left out for reaching ``limit`` (saturated)."""
    rows = np.empty(max(count, 0), dtype=np.int64)
    values = np.empty(max(count, 0), dtype=np.float64)
    kept = 0
    saturated = 0
    for r in range(amplitude.shape[0]):
        if maxima[r] >= limit:
            saturated += 1
            continue
        v = amplitude[r]
        at = kept  # the first kept row that v beats (a larger value, or a number against a NaN)
        for i in range(kept):
            w = values[i]
            if v > w or (w != w and v == v):
                at = i
                break
        if at >= count:
            continue
        last = min(kept, count - 1)
        for i in range(last, at, -1):
            rows[i] = rows[i - 1]
            values[i] = values[i - 1]
        rows[at] = r
        values[at] = v
        kept = min(kept + 1, count)
    return rows[:kept].copy(), saturated


@njit(cache=True, nogil=True)
def sample_range(traces):
    """Smallest and largest sample of the rows of ``traces`` (0 and 1 when there is no row)."""
    if traces.shape[0] == 0:
        return 0, 1
    low = traces[0, FIRST_SAMPLE]
    high = low
    for k in range(traces.shape[0]):
        for j in range(FIRST_SAMPLE, FIRST_SAMPLE + N_SAMPLES):
            x = traces[k, j]
            low = min(low, x)
            high = max(high, x)
    return low, high


@njit(cache=True, nogil=True)
def trace_polylines(traces, low, high, top, height, x, out):
    """Fills ``out`` ((rows * 512, 2) float32) with each row's samples as a polyline of the traces panel:
    view x from ``x``, view y of each sample on the axis ``low``..``high`` (y up: ``top`` + (1 - t) * ``height``,
    t clipped to [0, 1], as :meth:`.plot2d.Frame.vy`)."""
    span = high - low
    for k in range(traces.shape[0]):
        row = traces[k]
        base = k * N_SAMPLES
        for j in range(N_SAMPLES):
            t = (np.float64(row[FIRST_SAMPLE + j]) - low) / span
            out[base + j, 0] = x[j]
            out[base + j, 1] = top + (1.0 - min(max(t, 0.0), 1.0)) * height


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel of this module for every argument type the view
    gives it, so that no event waits for a compile or a cache load.

    numba makes one specialisation per argument types: a read-only trace matrix (a buffer received as
    ``bytes``, a matrix a stage froze) is another type than a writable one. The types here are the ones
    :mod:`.sink`, :mod:`.occupancy`, :mod:`.health`, :mod:`.colors` and :mod:`.arrow` pass.
    """
    writable = np.zeros((2, FIRST_SAMPLE + N_SAMPLES), dtype=np.int16)
    frozen = writable.copy()
    frozen.flags.writeable = False
    for traces in (writable, frozen):
        heights, _ = peaks(traces)
        count_pairs(traces, np.zeros(4, dtype=np.int64), np.full(4, -1, dtype=np.int64), 0)
    count_keys(np.zeros(2, dtype=np.int64), np.zeros(4, dtype=np.int64), np.full(4, -1, dtype=np.int64), 0)
    count_hits(np.zeros(2, dtype=np.int64), heights, 30.0, np.zeros(4, dtype=np.int64),
               np.full(4, -1, dtype=np.int64), 0)
    text = np.frombuffer(b"ab", dtype=np.uint8)  # read-only, as arrow.TextTable keeps its bytes
    index = np.zeros(1, dtype=np.int64)
    join_texts(text, index, index + 1, index, text, index, index + 1, index)
    ramp_rgba(np.zeros(1), np.zeros((2, 3)))
    finite_percentile(np.zeros(1), 99.0)
    stops = np.zeros((2, 3))
    pad_markers(index, np.zeros(1), np.ones((1, 4), dtype=np.float32), 0.0, 1.0, stops)
    cloud = np.zeros((1, 8))
    labels = np.zeros(1, dtype=np.int64)
    for points in (cloud, _frozen(cloud)):  # artifacts of a stage may be frozen (read-only)
        for given in (labels, _frozen(labels)):
            cloud_columns(points, 6, given, 0.0, 1.0, stops, np.uint32(0), 64)
    column = np.ones(1)
    helix_strips(column, column, column, column, column, column, column, labels, 1.0, 1.0, 1.0, 2, 64)
    top_rows(np.zeros(2), np.zeros(2, dtype=np.int64), 1, 1)
    sample_range(writable)
    trace_polylines(writable, 0.0, 1.0, 0.0, 1.0, np.zeros(N_SAMPLES), np.empty((2 * N_SAMPLES, 2), np.float32))


def _frozen(array: np.ndarray) -> np.ndarray:
    out = array.copy()
    out.flags.writeable = False
    return out
