"""numba kernels that decode one GRAW frame's items straight into per-channel trace rows.

Imported lazily by :mod:`conduit.get.decoder` (numba is heavy). Every kernel is
self-contained in this module so numba's on-disk cache stays valid.

Row layout written (conduit.event): ``cobo, asad, aget, channel, pad, 512 samples`` (int16).

``slots`` (int32, 272 = 4 AGETs x 68 channels, index ``aget * 68 + channel``) tells
where a channel goes: ``>= 0`` its pad number, ``-1`` not in the map (dropped and
counted once per channel), ``-2`` an FPN channel (kept aside when ``keep_fpn``).

``stats`` (int64, 2) accumulates: [0] invalid items dropped, [1] unmapped channels.

Speed notes: items are read through a uint32/uint16 view of the buffer and
byte-swapped with shifts (LLVM turns that into ``bswap``); all field arithmetic
is unsigned so that numba emits no sign or wrap-around handling. This doubled
the throughput of the first, byte-by-byte version.
"""

from __future__ import annotations

import numpy as np
from numba import njit

N_CHANNELS = 68
N_SLOTS = 4 * N_CHANNELS
N_BUCKETS = 512
FIRST_SAMPLE = 5

UNSEEN = -1
FPN = -2
DROP = -3
FPN_ROW = -4

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
def _first_sight(key, slots, row_of, rows, n_rows, cobo, asad, stats, fpn_seen, keep_fpn):
    """Assign a row (or a negative code) to a channel seen for the first time; return n_rows."""
    code = slots[key]
    aget = key // N_CHANNELS
    channel = key % N_CHANNELS
    if code >= 0:
        r = n_rows
        rows[r, 0] = cobo
        rows[r, 1] = asad
        rows[r, 2] = aget
        rows[r, 3] = channel
        rows[r, 4] = code
        rows[r, FIRST_SAMPLE:] = 0
        row_of[key] = r
        return n_rows + 1
    if code == FPN:
        if keep_fpn:
            row_of[key] = FPN_ROW
            fpn_seen[aget, _fpn_index(channel)] = True
        else:
            row_of[key] = DROP
        return n_rows
    stats[1] += 1
    row_of[key] = DROP
    return n_rows


@njit(cache=True, nogil=True)
def _subtract_fpn(rows, n_rows, fpn, fpn_seen):
    """Per AGET, subtract the mean of the FPN waveforms read from that AGET's signal rows."""
    for aget in range(4):
        n = 0
        for j in range(4):
            if fpn_seen[aget, j]:
                n += 1
        if n == 0:
            continue
        mean = np.zeros(N_BUCKETS, np.float64)
        for j in range(4):
            if fpn_seen[aget, j]:
                for b in range(N_BUCKETS):
                    mean[b] += fpn[aget, j, b]
        for b in range(N_BUCKETS):
            mean[b] /= n
        for r in range(n_rows):
            if rows[r, 2] == aget:
                for b in range(N_BUCKETS):
                    rows[r, FIRST_SAMPLE + b] = np.int16(np.round(rows[r, FIRST_SAMPLE + b] - mean[b]))


@njit(cache=True, nogil=True)
def decode_partial(buf, start, n_items, slots, cobo, asad, rows, fpn, keep_fpn, stats):
    """Scatter ``n_items`` 32-bit big-endian partial-readout items at ``buf[start:]`` into ``rows``.

    ``buf`` is a uint8 array. Returns the number of rows written; ``rows`` needs
    ``min(272, n_items)`` rows.
    """
    words = buf[start:start + 4 * n_items].view(np.uint32)
    row_of = np.full(N_SLOTS, UNSEEN, np.int32)
    fpn_seen = np.zeros((4, 4), np.bool_)
    if keep_fpn:
        fpn[:] = 0
    n_rows = 0
    dropped = 0
    for i in range(n_items):
        x = words[i]
        w = ((x & _FF) << _U24) | ((x & _FF00) << _U8) | ((x >> _U8) & _FF00) | (x >> _U24)
        channel = (w >> _U23) & _7F
        if channel >= _68:
            dropped += 1
            continue
        key = (w >> _U30) * _68 + channel
        r = row_of[key]
        if r == UNSEEN:
            n_rows = _first_sight(key, slots, row_of, rows, n_rows, cobo, asad, stats, fpn_seen, keep_fpn)
            r = row_of[key]
        if r >= 0:
            rows[r, FIRST_SAMPLE + ((w >> _U14) & _1FF)] = w & _FFF
        elif r == FPN_ROW:
            fpn[w >> _U30, _fpn_index(channel), (w >> _U14) & _1FF] = w & _FFF
    stats[0] += dropped
    if keep_fpn:
        _subtract_fpn(rows, n_rows, fpn, fpn_seen)
    return n_rows


@njit(cache=True, nogil=True)
def _full_canonical(halves, slots, cobo, asad, rows, fpn, keep_fpn, stats, row_of, fpn_seen):
    """Decode a complete full-readout frame in the DAQ's order (bucket, channel, aget nested).

    Returns the rows written, or -1 at the first item whose AGET id breaks that order
    (then nothing was counted and the caller decodes with per-AGET counters).
    """
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
                r = row_of[key]
                if r == UNSEEN:
                    n_rows = _first_sight(key, slots, row_of, rows, n_rows, cobo, asad, local, fpn_seen, keep_fpn)
                    r = row_of[key]
                if r >= 0:
                    rows[r, FIRST_SAMPLE + bucket] = w & _FFF
                elif r == FPN_ROW:
                    fpn[aget, _fpn_index(channel), bucket] = w & _FFF
    stats[0] += local[0]
    stats[1] += local[1]
    return n_rows


@njit(cache=True, nogil=True)
def decode_full(buf, start, n_items, slots, cobo, asad, rows, fpn, keep_fpn, stats):
    """Scatter ``n_items`` 16-bit big-endian full-readout items into ``rows``.

    Channel and bucket come from counters per AGET (its k-th item is channel k % 68,
    bucket k // 68); items past bucket 511 are dropped. Returns the rows written.
    A complete frame in the DAQ's interleaved order takes a fast path without the
    counters (5x faster); any other order takes the general path.
    """
    halves = buf[start:start + 2 * n_items].view(np.uint16)
    row_of = np.full(N_SLOTS, UNSEEN, np.int32)
    fpn_seen = np.zeros((4, 4), np.bool_)
    if keep_fpn:
        fpn[:] = 0
    if n_items == N_SLOTS * N_BUCKETS:
        n_rows = _full_canonical(halves, slots, cobo, asad, rows, fpn, keep_fpn, stats, row_of, fpn_seen)
        if n_rows >= 0:
            if keep_fpn:
                _subtract_fpn(rows, n_rows, fpn, fpn_seen)
            return n_rows
        row_of[:] = UNSEEN
        fpn_seen[:] = False
        if keep_fpn:
            fpn[:] = 0
    channel_of = np.zeros(4, np.uint32)
    bucket_of = np.zeros(4, np.uint32)
    n_rows = 0
    dropped = 0
    for i in range(n_items):
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
        r = row_of[key]
        if r == UNSEEN:
            n_rows = _first_sight(key, slots, row_of, rows, n_rows, cobo, asad, stats, fpn_seen, keep_fpn)
            r = row_of[key]
        if r >= 0:
            rows[r, FIRST_SAMPLE + bucket] = w & _FFF
        elif r == FPN_ROW:
            fpn[aget, _fpn_index(channel), bucket] = w & _FFF
    stats[0] += dropped
    if keep_fpn:
        _subtract_fpn(rows, n_rows, fpn, fpn_seen)
    return n_rows
