"""Compiled per-event accounting of the view: every event received is counted, drawn or not.

:func:`peak_heights` (the peak above a cheap baseline, per trace row) and
:func:`count_hits` (which pads of an event were hit, once each) run in one
pass over the trace matrix each, with no per-row Python (and :func:`join_texts`
builds the pad plane's hover labels without a Python string per pad); they replace a
row-wise ``np.median`` that cost about 0.5 ms per event. All kernels keep
their callees in this module (numba cache safety).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["peak_heights", "peaks", "count_hits", "join_texts", "ramp_rgba"]

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


@njit(cache=True, nogil=True)
def _peak_heights(traces, network, maxima):
    n = traces.shape[0]
    m = N_SAMPLES // BASELINE_STRIDE
    out = np.empty(n)
    v = np.empty(m, dtype=np.int32)
    for r in range(n):
        row = traces[r]
        top = row[FIRST_SAMPLE]
        for j in range(FIRST_SAMPLE + 1, FIRST_SAMPLE + N_SAMPLES):
            x = row[j]
            top = x if x > top else top  # a max reduction the compiler vectorises
        maxima[r] = top
        for i in range(m):
            v[i] = row[FIRST_SAMPLE + BASELINE_STRIDE * i]
        for q in range(network.shape[0]):
            a = v[network[q, 0]]
            b = v[network[q, 1]]
            v[network[q, 0]] = min(a, b)
            v[network[q, 1]] = max(a, b)
        out[r] = float(top) - 0.5 * (v[m // 2 - 1] + v[m // 2])  # np.median of an even count
    return out


def peak_heights(traces: np.ndarray) -> np.ndarray:
    """Peak above baseline per trace row (ADC): max of the samples minus the median of every 32nd one
    (as ``samples.max(axis=1) - np.median(samples[:, ::32], axis=1)``)."""
    return peaks(traces)[0]


def peaks(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(:func:`peak_heights`, the largest sample of each row), from one pass over the trace matrix: the view
    counts the first and leaves saturated traces (by the second) out of its trace panel."""
    traces = np.ascontiguousarray(traces)
    maxima = np.empty(traces.shape[0], dtype=np.int64)
    return _peak_heights(traces, _NETWORK, maxima), maxima


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


@njit(cache=True, nogil=True)
def ramp_rgba(t, stops):
    """Colours of ramp positions ``t`` as Rerun's packed 0xRRGGBBAA (opaque), one pass: the same arithmetic as
    :func:`.colors.ramp` (clip to [0, 1], NaN -> 0, linear between ``stops``, round half to even)."""
    n_stops = stops.shape[0]
    out = np.empty(t.shape[0], dtype=np.uint32)
    for k in range(t.shape[0]):
        x = t[k]
        if np.isnan(x):
            x = 0.0
        x = min(max(x, 0.0), 1.0) * (n_stops - 1)
        i = min(int(x), n_stops - 2)
        f = x - i
        packed = np.uint32(255)
        for c in range(3):
            v = np.rint(stops[i, c] * (1 - f) + stops[i + 1, c] * f)
            packed |= np.uint32(np.uint8(v)) << np.uint32(24 - 8 * c)
        out[k] = packed
    return out
