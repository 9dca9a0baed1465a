"""REFERENCE for tests and benchmarks: the decode kernels as they were before the fourth round of issue 17
(commit ce67b73 of core/conduit/get/_kernels.py, unchanged). ``tests/get/test_get_decode_kernels.py`` checks
the current kernels against these on hostile input; ``benchmarks/decode_kernels.py`` times both.

numba kernels that decode one GRAW frame's items straight into per-channel trace rows.

Output: ``out`` is an int16 scratch of shape (cap + 17, 517). Rows 0..n-1 receive
the mapped signal channels in order of first appearance, laid out as
(conduit.event) ``cobo, asad, aget, channel, pad, 512 samples``; rows cap..cap+15
receive the FPN channels (row cap + 4 * aget + fpn index) when ``keep_fpn``; row
cap + 16 is a trash row for channels that are dropped. Every channel is given a
flat offset into ``out`` the first time it is seen, so the per-item work has no
branch on what the channel is: look up its offset, store the sample.

``slots`` (int32, 272 = 4 AGETs x 68 channels, index ``aget * 68 + channel``):
``>= 0`` the pad number, ``-1`` not in the map (dropped, counted once per channel),
``-2`` an FPN channel.

``stats`` (int64, 2) accumulates: [0] invalid items dropped, [1] unmapped channels.

Speed notes: items are read through a uint32/uint16 view of the buffer and
byte-swapped with shifts (LLVM turns that into ``bswap``); field arithmetic,
loop counters and output offsets are unsigned so numba emits no sign or
negative-index handling; every channel's destination is a precomputed offset (no
branch on the channel's kind per item). Together these took the partial-readout
kernel from 1.0 to about 2.4 GB/s (CPU time) on one EPYC core; looking the offset up by
the item's top 9 bits as they stand (no channel check, no multiply per item) took it to
3.2 GB/s.
"""

from __future__ import annotations

import numpy as np
from numba import njit

N_CHANNELS = 68
N_SLOTS = 4 * N_CHANNELS
N_BUCKETS = 512
FIRST_SAMPLE = 5
#: Extra scratch rows after the output rows: 16 FPN rows and one trash row.
EXTRA_ROWS = 17

UNMAPPED = -1
FPN = -2

_U7 = np.uint32(7)
_U8 = np.uint32(8)
_U14 = np.uint32(14)
_U23 = np.uint32(23)
_U24 = np.uint32(24)
_U30 = np.uint32(30)
_FF = np.uint32(0xFF)
_FF00 = np.uint32(0xFF00)
_FFF = np.uint32(0xFFF)
_7F = np.uint32(0x7F)
_1FF = np.uint32(0x1FF)
_68 = np.uint32(N_CHANNELS)
#: "Not seen yet" in the per-channel offset table (offsets are unsigned: no wrap-around checks).
_UNSEEN = np.uint64(1 << 63)


@njit(cache=True, nogil=True)
def _fpn_index(channel):
    if channel == 11:
        return 0
    if channel == 22:
        return 1
    if channel == 45:
        return 2
    return 3


@njit(cache=True, nogil=True)
def _first_sight(key, slots, out, n_rows, cobo, asad, stats, fpn_seen, keep_fpn):
    """Place a channel seen for the first time; return (flat offset of its bucket 0, new n_rows)."""
    ncol = out.shape[1]
    cap = out.shape[0] - EXTRA_ROWS
    code = slots[key]
    aget = key // N_CHANNELS
    channel = key % N_CHANNELS
    if code >= 0:
        r = n_rows
        out[r, 0] = cobo
        out[r, 1] = asad
        out[r, 2] = aget
        out[r, 3] = channel
        out[r, 4] = code
        out[r, FIRST_SAMPLE:] = 0
        return np.uint64(r * ncol + FIRST_SAMPLE), n_rows + 1
    if code == FPN and keep_fpn:
        j = _fpn_index(channel)
        r = cap + 4 * aget + j
        out[r, FIRST_SAMPLE:] = 0
        fpn_seen[aget, j] = True
        return np.uint64(r * ncol + FIRST_SAMPLE), n_rows
    if code != FPN:
        stats[1] += 1
    return np.uint64((cap + EXTRA_ROWS - 1) * ncol + FIRST_SAMPLE), n_rows


@njit(cache=True, nogil=True)
def _subtract_fpn(out, n_rows, fpn_seen):
    """Per AGET, subtract the mean of the FPN waveforms read from that AGET's signal rows."""
    cap = out.shape[0] - EXTRA_ROWS
    mean = np.zeros(N_BUCKETS, np.float64)
    for aget in range(4):
        n = 0
        mean[:] = 0.0
        for j in range(4):
            if fpn_seen[aget, j]:
                n += 1
                for b in range(N_BUCKETS):
                    mean[b] += out[cap + 4 * aget + j, FIRST_SAMPLE + b]
        if n == 0:
            continue
        for b in range(N_BUCKETS):
            mean[b] /= n
        for r in range(n_rows):
            if out[r, 2] == aget:
                for b in range(N_BUCKETS):
                    out[r, FIRST_SAMPLE + b] = np.int16(np.round(out[r, FIRST_SAMPLE + b] - mean[b]))


@njit(cache=True, nogil=True)
def decode_partial(buf, start, n_items, slots, cobo, asad, out, keep_fpn, stats):
    """Scatter ``n_items`` 32-bit big-endian partial-readout items at ``buf[start:]`` (uint8) into ``out``.

    Returns the number of signal rows written (``out`` needs ``min(272, n_items) + 17`` rows).

    The destination is looked up by the item's top 9 bits (AGET 2 bits, channel 7 bits) as they
    stand: no channel check, no multiply per item. An invalid channel (> 67) keeps its entry at
    "not seen", so it takes the rare path every time and is counted there.
    """
    words = buf[start:start + 4 * n_items].view(np.uint32)
    flat = out.reshape(-1)
    offset = np.full(512, _UNSEEN, np.uint64)
    fpn_seen = np.zeros((4, 4), np.bool_)
    n_rows = 0
    dropped = 0
    for i in range(np.uint64(n_items)):
        x = words[i]
        w = ((x & _FF) << _U24) | ((x & _FF00) << _U8) | ((x >> _U8) & _FF00) | (x >> _U24)
        top = w >> _U23
        o = offset[top]
        if o == _UNSEEN:
            channel = top & _7F
            if channel >= _68:
                dropped += 1
                continue
            o, n_rows = _first_sight((top >> _U7) * _68 + channel, slots, out, n_rows, cobo, asad, stats,
                                     fpn_seen, keep_fpn)
            offset[top] = o
        flat[o + np.uint64((w >> _U14) & _1FF)] = w & _FFF
    stats[0] += dropped
    if keep_fpn:
        _subtract_fpn(out, n_rows, fpn_seen)
    return n_rows


@njit(cache=True, nogil=True)
def _full_canonical(halves, slots, cobo, asad, out, keep_fpn, stats, fpn_seen):
    """Decode a complete full-readout frame in the DAQ's order (bucket, channel, aget nested).

    Returns the rows written, or -1 at the first item whose AGET id breaks that order
    (then nothing was counted and the caller decodes with per-AGET counters).
    """
    flat = out.reshape(-1)
    offset = np.full(N_SLOTS, _UNSEEN, np.uint64)
    local = np.zeros(2, np.int64)
    n_rows = 0
    i = 0
    for bucket in range(N_BUCKETS):
        for channel in range(N_CHANNELS):
            for aget in range(4):
                x = np.uint32(halves[i])
                i += 1
                w = ((x & _FF) << _U8) | (x >> _U8)
                if (w >> _U14) != aget:
                    return -1
                key = aget * N_CHANNELS + channel
                o = offset[key]
                if o == _UNSEEN:
                    o, n_rows = _first_sight(key, slots, out, n_rows, cobo, asad, local, fpn_seen, keep_fpn)
                    offset[key] = o
                flat[o + np.uint64(bucket)] = w & _FFF
    stats[0] += local[0]
    stats[1] += local[1]
    return n_rows


@njit(cache=True, nogil=True)
def decode_full(buf, start, n_items, slots, cobo, asad, out, keep_fpn, stats):
    """Scatter ``n_items`` 16-bit big-endian full-readout items into ``out``.

    Channel and bucket come from counters per AGET (its k-th item is channel k % 68,
    bucket k // 68); items past bucket 511 are dropped. Returns the rows written.
    A complete frame in the DAQ's interleaved order takes a fast path without the
    counters; any other order takes the general path.
    """
    halves = buf[start:start + 2 * n_items].view(np.uint16)
    fpn_seen = np.zeros((4, 4), np.bool_)
    if n_items == N_SLOTS * N_BUCKETS:
        n_rows = _full_canonical(halves, slots, cobo, asad, out, keep_fpn, stats, fpn_seen)
        if n_rows >= 0:
            if keep_fpn:
                _subtract_fpn(out, n_rows, fpn_seen)
            return n_rows
        fpn_seen[:] = False
    flat = out.reshape(-1)
    offset = np.full(N_SLOTS, _UNSEEN, np.uint64)
    channel_of = np.zeros(4, np.uint32)
    bucket_of = np.zeros(4, np.uint32)
    n_rows = 0
    dropped = 0
    for i in range(np.uint64(n_items)):
        x = np.uint32(halves[i])
        w = ((x & _FF) << _U8) | (x >> _U8)
        aget = w >> _U14
        channel = channel_of[aget]
        bucket = bucket_of[aget]
        if channel + 1 == _68:
            channel_of[aget] = 0
            bucket_of[aget] = bucket + 1
        else:
            channel_of[aget] = channel + 1
        if bucket >= N_BUCKETS:
            dropped += 1
            continue
        key = aget * _68 + channel
        o = offset[key]
        if o == _UNSEEN:
            o, n_rows = _first_sight(key, slots, out, n_rows, cobo, asad, stats, fpn_seen, keep_fpn)
            offset[key] = o
        flat[o + np.uint64(bucket)] = w & _FFF
    stats[0] += dropped
    if keep_fpn:
        _subtract_fpn(out, n_rows, fpn_seen)
    return n_rows
