"""numba kernels that decode one GRAW frame's items straight into per-channel trace rows.

Imported lazily by :mod:`conduit.get.decoder` (numba is heavy). Every kernel is
self-contained in this module so numba's on-disk cache stays valid.

Output: ``out`` is an int16 scratch of shape (cap + 18, 517). Rows 0..n-1 receive
the mapped signal channels in order of first appearance, laid out as
(conduit.event) ``cobo, asad, aget, channel, pad, 512 samples``; rows cap..cap+15
receive the FPN channels (row cap + 4 * aget + fpn index) when ``keep_fpn``; row
cap + 16 is a trash row for channels that are dropped; row cap + 17 the sentinel
row of the sealed loop (:func:`_decode_sealed`). Every channel is given a
flat offset into ``out`` the first time it is seen, so the per-item work has no
branch on what the channel is: look up its offset, store the sample.

``slots`` (int32, 272 = 4 AGETs x 68 channels, index ``aget * 68 + channel``):
``>= 0`` the pad number, ``-1`` not in the map (dropped, counted once per channel),
``-2`` an FPN channel.

``stats`` (int64, 2) accumulates: [0] invalid items dropped, [1] unmapped channels.

Speed notes: items are read through a uint32/uint16 view of the buffer and
byte-swapped with shifts (LLVM turns that into ``movbe``); field arithmetic,
loop counters and output offsets are unsigned so numba emits no sign or
negative-index handling; every channel's destination is a precomputed offset (no
branch on the channel's kind per item). The partial-readout hot loop
(:func:`_scatter_partial`) has no call in it (a call in the loop made LLVM keep the
array pointers on the stack: two reloads per item), is unrolled by four, takes the
bucket from the item's bits as they stand (the table entry carries ``- top << 9``)
and stores the item's low 16 bits, the 12-bit mask applied to whole rows
afterwards: ~10 instructions per item instead of 15 (docs/performance.md, fourth
round).

Past its first 272 items a partial-readout frame is decoded by a loop without the
per-item test (:func:`_decode_sealed`): in the CoBo's order (docs/formats.md "The
order of the items") every channel has sent its bucket 0 by then, so the table is
sealed and an item of any channel not seen yet lands in a sentinel row; a sentinel
row that changed sends the whole frame to the general loop, from scratch.
"""

from __future__ import annotations

import numpy as np
from numba import njit

N_CHANNELS = 68
N_SLOTS = 4 * N_CHANNELS
N_BUCKETS = 512
FIRST_SAMPLE = 5
#: Extra scratch rows after the output rows: 16 FPN rows, a trash row and a sentinel row.
EXTRA_ROWS = 18
#: Rows past ``cap`` (the first FPN row) of the trash row and of the sentinel row.
TRASH_ROW = 16
SENTINEL_ROW = 17
#: Items decoded by the general loop before the table is sealed: at most 4 items per readout clock, so in the
#: CoBo's order every channel's bucket 0 is among the first 4 x 68 (an AGET reads its channels by clock 67).
OPEN_PREFIX = 4 * N_CHANNELS

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
_FFF16 = np.int16(0xFFF)
_U9_64 = np.uint64(9)
_1 = np.uint64(1)
_2 = np.uint64(2)
_3 = np.uint64(3)
_4 = np.uint64(4)
#: "Not seen yet" in the per-channel offset tables (offsets are unsigned: no wrap-around checks).
_UNSEEN = np.uint64(1 << 63)
#: A partial-readout table entry is empty when its sign bit is set (one test-and-branch per item).
_EMPTY = _UNSEEN
#: Added to every partial-readout table entry (taken off in the store's address, for free) so that an
#: entry, the offset of bucket 0 less ``top << 9``, is never "negative": below _EMPTY.
_BIAS = np.uint64(1 << 20)
#: The sentinel row's content before the sealed loop: bits 14-15 of cell (bucket) b are (b + 1) & 3. An item
#: stored in cell b writes its own low 16 bits, whose bits 14-15 are its bucket's, b & 3: any store changes the cell.
_SENTINEL_FILL = (((np.arange(N_BUCKETS) + 1) & 3) << 14).astype(np.uint16).view(np.int16)


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
    return np.uint64((cap + TRASH_ROW) * ncol + FIRST_SAMPLE), n_rows


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


@njit(cache=True, nogil=True, inline="always")
def _swap(x):
    """A big-endian uint32 item as a number (LLVM folds the load and this into one ``movbe``)."""
    return ((x & _FF) << _U24) | ((x & _FF00) << _U8) | ((x >> _U8) & _FF00) | (x >> _U24)


@njit(cache=True, nogil=True)
def _place_partial(top, slots, out, n_rows, cobo, asad, stats, fpn_seen, keep_fpn):
    """The destination of a partial-readout item whose top 9 bits (``top``: AGET, channel) have no entry yet.

    Returns (``base``, new n_rows, whether to keep ``base`` as the entry of ``top``): the item
    goes to flat index ``base - _BIAS + (item >> 14)``. An invalid channel (> 67) is counted in
    ``stats[0]`` and sent to the trash row; its entry stays empty, so every such item comes here.
    """
    ncol = out.shape[1]
    trash = out.shape[0] - EXTRA_ROWS + TRASH_ROW
    channel = top & _7F
    bucket0 = np.uint64(top) << _U9_64  # (item >> 14) of the channel's bucket 0
    if channel >= _68:
        stats[0] += 1
        return np.uint64(trash * ncol + FIRST_SAMPLE) + _BIAS - bucket0, n_rows, False
    o, n_rows = _first_sight((top >> _U7) * _68 + channel, slots, out, n_rows, cobo, asad, stats, fpn_seen,
                             keep_fpn)
    return o + _BIAS - bucket0, n_rows, True


@njit(cache=True, nogil=True)
def _scatter_partial(words, i, n, base, flat):
    """Store items ``i``, ``i + 1``, ... at ``flat[base[item >> 23] - _BIAS + (item >> 14)]`` until the end or
    an item whose entry is empty; return the index of that item (``n`` at the end).

    The hot loop: unrolled by four, ~10 instructions per item (``movbe``, two shifts, the entry's
    load, its sign test, one 16-bit store of the item's low half; the 12-bit mask is applied to
    whole rows afterwards). It has no call in it, so nothing is spilled to the stack.
    """
    while i + _4 <= n:
        w = _swap(words[i])
        o = base[w >> _U23]
        if o >= _EMPTY:
            return i
        flat[o + np.uint64(w >> _U14) - _BIAS] = w
        w = _swap(words[i + _1])
        o = base[w >> _U23]
        if o >= _EMPTY:
            return i + _1
        flat[o + np.uint64(w >> _U14) - _BIAS] = w
        w = _swap(words[i + _2])
        o = base[w >> _U23]
        if o >= _EMPTY:
            return i + _2
        flat[o + np.uint64(w >> _U14) - _BIAS] = w
        w = _swap(words[i + _3])
        o = base[w >> _U23]
        if o >= _EMPTY:
            return i + _3
        flat[o + np.uint64(w >> _U14) - _BIAS] = w
        i += _4
    while i < n:
        w = _swap(words[i])
        o = base[w >> _U23]
        if o >= _EMPTY:
            return i
        flat[o + np.uint64(w >> _U14) - _BIAS] = w
        i += _1
    return i


@njit(cache=True, nogil=True)
def _mask_samples(out, n_rows, fpn_seen, keep_fpn):
    """Keep the 12 sample bits of the rows written (items were stored with their bucket's low bits)."""
    for r in range(n_rows):
        row = out[r, FIRST_SAMPLE:]
        row &= _FFF16
    if keep_fpn:
        cap = out.shape[0] - EXTRA_ROWS
        for aget in range(4):
            for j in range(4):
                if fpn_seen[aget, j]:
                    row = out[cap + 4 * aget + j, FIRST_SAMPLE:]
                    row &= _FFF16


@njit(cache=True, nogil=True)
def _decode_open(words, i, n, base, flat, slots, out, n_rows, cobo, asad, stats, fpn_seen, keep_fpn):
    """Scatter items ``i .. n - 1``, placing every channel at its first sight (the general loop); return n_rows."""
    while True:
        i = _scatter_partial(words, i, n, base, flat)
        if i >= n:
            return n_rows
        w = _swap(words[i])
        top = w >> _U23
        o, n_rows, keep = _place_partial(top, slots, out, n_rows, cobo, asad, stats, fpn_seen, keep_fpn)
        if keep:
            base[top] = o
        flat[o + np.uint64(w >> _U14) - _BIAS] = w
        i += _1


@njit(cache=True, nogil=True)
def _scatter_sealed(words, i, n, base, flat):
    """Store items ``i .. n - 1`` at ``flat[base[item >> 23] - _BIAS + (item >> 14)]``: every entry is set."""
    while i < n:
        w = _swap(words[i])
        flat[base[w >> _U23] + np.uint64(w >> _U14) - _BIAS] = w
        i += _1


@njit(cache=True, nogil=True)
def _decode_sealed(words, n, slots, out, cobo, asad, stats, fpn_seen, keep_fpn):
    """The general loop over the first :data:`OPEN_PREFIX` items, then the rest without the per-item test.

    After the prefix every empty entry (a channel not seen yet, an invalid channel) is pointed at the
    sentinel row (each item at its bucket's cell, filled beforehand so that any store changes it), so
    the remaining items need no test. Returns n_rows, or -1 when the sentinel row changed: then an
    item of a new channel or an invalid item came after the prefix, nothing was counted, and the
    caller decodes the frame again with the general loop.
    """
    flat = out.reshape(-1)
    ncol = out.shape[1]
    base = np.full(512, _UNSEEN, np.uint64)
    local = np.zeros(2, np.int64)
    prefix = np.uint64(OPEN_PREFIX)
    n_rows = _decode_open(words, np.uint64(0), prefix, base, flat, slots, out, 0, cobo, asad, local, fpn_seen,
                          keep_fpn)
    sentinel = out.shape[0] - EXTRA_ROWS + SENTINEL_ROW
    cell0 = np.uint64(sentinel * ncol + FIRST_SAMPLE) + _BIAS
    for top in range(512):  # branch-free (vectorised): every empty entry now points at the sentinel row
        entry = base[top]
        base[top] = entry if entry < _EMPTY else cell0 - (np.uint64(top) << _U9_64)
    row = out[sentinel, FIRST_SAMPLE:]
    row[:] = _SENTINEL_FILL
    _scatter_sealed(words, prefix, n, base, flat)
    changed = np.int16(0)
    for b in range(N_BUCKETS):
        changed |= row[b] ^ _SENTINEL_FILL[b]
    if changed != 0:
        return -1
    stats[0] += local[0]
    stats[1] += local[1]
    return n_rows


@njit(cache=True, nogil=True)
def decode_partial(buf, start, n_items, slots, cobo, asad, out, keep_fpn, stats):
    """Scatter ``n_items`` 32-bit big-endian partial-readout items at ``buf[start:]`` (uint8) into ``out``.

    Returns the number of signal rows written (``out`` needs ``min(272, n_items) + 18`` rows).

    Each item's destination is ``base[item >> 23] + (item >> 14)`` (less a constant): the table
    ``base``, indexed by the item's top 9 bits as they stand (AGET, channel), holds the flat offset
    of the channel's bucket 0 less ``(top << 9)``, so the item's own bits 22-14 (its bucket) add
    the rest. An empty entry (sign bit set) stops the hot loop (:func:`_scatter_partial`); the
    channel is placed here and the loop resumes. A frame longer than :data:`OPEN_PREFIX` items is
    first tried with the table sealed after the prefix (:func:`_decode_sealed`). Items are stored
    with their 16 low bits, then the rows written are masked to 12 bits (the same bytes as masking
    each item).
    """
    words = buf[start:start + 4 * n_items].view(np.uint32)
    fpn_seen = np.zeros((4, 4), np.bool_)
    n = np.uint64(n_items)
    n_rows = -1
    if n_items > OPEN_PREFIX:
        n_rows = _decode_sealed(words, n, slots, out, cobo, asad, stats, fpn_seen, keep_fpn)
    if n_rows < 0:
        fpn_seen[:] = False
        n_rows = _decode_open(words, np.uint64(0), n, np.full(512, _UNSEEN, np.uint64), out.reshape(-1), slots, out,
                              0, cobo, asad, stats, fpn_seen, keep_fpn)
    _mask_samples(out, n_rows, fpn_seen, keep_fpn)
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
