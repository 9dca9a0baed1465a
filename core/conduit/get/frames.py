"""GRAW frames: header parsing, validation, numpy decoding, and the inverse (encoding).

A GRAW frame is one AsAd x one event (get_format.md section 1). Big-endian.
Sizes are in blocks of ``2 ** (meta_type & 0x0F)`` bytes (meta type 8 -> 256 B,
6 -> 64 B)::

    header (header_size blocks) | n_items x item_size bytes of items | zero padding to a block

* partial readout (frame type 1): 32-bit items ``aget:2 | channel:7 | bucket:9 | 0:2 | sample:12``;
* full readout (frame type 2): 16-bit items ``aget:2 | 0:2 | sample:12``; the k-th item of an
  AGET is channel ``k % 68``, bucket ``k // 68``.

Reading
-------
:func:`check_frame` validates the header of the frame at ``offset`` and returns a
:class:`FrameInfo` (the fields the hot path needs) or raises :class:`FrameError`
naming the source and byte offset. :func:`parse_header` returns every header
field (:class:`FrameHeader`, hit patterns as a (4, 68) bool array).
:func:`decode_frame` decodes a whole frame with vectorised numpy into per-channel
512-sample rows (:class:`DecodedFrame`); the engine's fast path is
:class:`conduit.get.decoder.FrameDecoder` (numba), which must agree with it.
:func:`scan_frames` hops frame sizes over a buffer.

Validation (stricter than attpc_merger, see get_format.md 1.7):

* meta type: big-endian only; block size 16 B .. 4 KiB; blob frames (bit 6) are skipped by size;
* ``0 < frame_size``, ``frame_size x block <= bytes available`` (else: truncated frame);
* ``87 <= header_size x block <= frame_size x block``;
* frame type 1 needs item size 4, frame type 2 item size 2; other frame types are skipped by size;
* ``n_items x item_size <= (frame_size - header_size) x block``, otherwise n_items is
  CLAMPED (padding is never decoded) and :attr:`FrameInfo.clamped` is set (a warning);
* items with channel > 67 (partial) or bucket > 511 (full, an AGET with too many items) are
  dropped and counted. (AGET and partial-readout bucket fields are 2 and 9 bits wide, so they
  cannot exceed 3 and 511.)

Writing (tests and the simulator)
---------------------------------
:func:`encode_frame` writes one frame from per-channel traces in either mode, in the
order the CoBo writes (docs/formats.md "The order of the items"; derived from the
real frame): each AGET reads its channels in increasing order, one per readout
clock, then idles :data:`IDLE_CLOCKS` clocks before the next bucket; the CoBo
writes the items in the order of their clock, the items of one clock AGET by AGET
starting at ``first_aget``. It sets hit-pattern bits for the written channels and
pads with zeros to the block size.

:func:`encode_event_frames` splits an event's (n, 517) trace matrix by
(cobo, asad) and returns ``{(cobo, asad): frame bytes}``: the frames one trigger
produces, ready to write to .graw files or serve with
:class:`conduit.get.dataexporter.DataExporterServer`. Example::

    frames = encode_event_frames(event.traces, event_id=7, timestamp=123456,
                                 timestamp_other=654321, mode="partial",
                                 fpn=baseline_fpn, asads=emap.asads)
    for (cobo, asad), frame in frames.items(): ...
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "FrameError",
    "FrameInfo",
    "FrameHeader",
    "DecodedFrame",
    "check_frame",
    "parse_header",
    "peek_event_cobo",
    "decode_frame",
    "decode_items",
    "scan_frames",
    "encode_frame",
    "encode_event_frames",
    "hit_pattern_bytes",
    "item_clocks",
    "FPN_CHANNELS",
    "N_AGETS",
    "N_CHANNELS",
    "N_BUCKETS",
    "PARTIAL",
    "FULL",
    "FULL_ITEMS",
    "IDLE_CLOCKS",
    "HEADER_FIELDS_BYTES",
    "META_TYPE",
]

N_AGETS = 4
N_CHANNELS = 68
N_BUCKETS = 512
#: Fixed-pattern-noise channels of every AGET (get_format.md 1.6).
FPN_CHANNELS = (11, 22, 45, 56)
#: Frame types.
PARTIAL, FULL = 1, 2
ITEM_SIZE = {PARTIAL: 4, FULL: 2}
#: Items in a complete full-readout frame (4 AGETs x 68 channels x 512 buckets).
FULL_ITEMS = N_AGETS * N_CHANNELS * N_BUCKETS
#: Readout clocks an AGET spends after its last channel of a bucket before the next bucket's first
#: (fits every item of the real frame, docs/formats.md "The order of the items").
IDLE_CLOCKS = 2
#: The current AT-TPC meta type (big-endian, not blob, 256-byte blocks).
META_TYPE = 8
#: Meta-type bit of blob (topology) frames: not data, no event id; skipped by size.
BLOB_BIT = 0x40
#: Bytes of defined header fields (0..86); the rest of the header is reserved.
HEADER_FIELDS_BYTES = 87
#: Bytes needed to read the fields the hot path uses (meta .. asad).
CORE_BYTES = 28
MIN_BLOCK_LOG2, MAX_BLOCK_LOG2 = 4, 12

_CORE = struct.Struct(">IBHBHHIHIIBB")  # 28 bytes: meta|size, src, type, rev, hsize, isize, n, time hi/lo, evt, cobo, asad
_FULL_HEADER = struct.Struct(">IBHBHHIHIIBBHB36s4HI4H")  # 87 bytes
#: Event id (u32) and CoBo id (u8): header bytes 22..26 (get_format.md 1.2).
_EVENT_COBO = struct.Struct(">IB")
_EVENT_COBO_OFFSET = 22
_WORD = struct.Struct(">I")
#: Builds a FrameInfo from a tuple of its fields without the named tuple's argument parsing (once per frame).
_new_tuple = tuple.__new__
assert _CORE.size == CORE_BYTES and _FULL_HEADER.size == HEADER_FIELDS_BYTES


class FrameError(ValueError):
    """A frame that cannot be used: ``source @ byte offset: reason`` (one line)."""

    def __init__(self, source: str, offset: int, reason: str):
        self.source = source
        self.offset = offset
        self.reason = reason
        super().__init__(f"{source} @ byte {offset}: {reason}")


class FrameInfo(NamedTuple):
    """What the hot path needs from a validated frame header."""

    offset: int  #: byte offset of the frame in its buffer
    frame_bytes: int  #: total length, padding included (B)
    block: int  #: block size (B)
    frame_type: int  #: 1 partial, 2 full; 0 for a frame to skip (blob, unknown type)
    data_offset: int  #: byte offset of the first item in the buffer
    n_items: int  #: items to decode (clamped to the frame)
    item_size: int  #: bytes per item
    event_id: int
    timestamp: int  #: 100 MHz ticks (u48)
    cobo: int
    asad: int
    clamped: bool  #: the header's item count did not fit the frame and was clamped
    meta_type: int

    @property
    def skip(self) -> bool:
        """True for frames that carry no AT-TPC data (blob/topology, unknown frame type)."""
        return self.frame_type == 0

    @property
    def is_blob(self) -> bool:
        """A blob (topology) frame: its header has no event id or CoBo."""
        return bool(self.meta_type & BLOB_BIT)


def check_frame(buf, offset: int = 0, available: int | None = None, *, source: str = "<buffer>") -> FrameInfo:
    """Validate the frame header at ``offset`` of ``buf`` (bytes-like); raise :class:`FrameError`.

    ``available`` is how many bytes from ``offset`` belong to this stream (default: to the end
    of ``buf``); a frame longer than that is truncated.
    """
    if available is None:
        available = len(buf) - offset
    if available < 4:
        raise FrameError(source, offset, f"truncated frame: {available} bytes left, a header needs {CORE_BYTES}")
    # One unpack of the fields the hot path uses (the common case); a shorter buffer gets its first word only.
    core = _CORE.unpack_from(buf, offset) if available >= CORE_BYTES else None
    word = core[0] if core is not None else _WORD.unpack_from(buf, offset)[0]
    meta = word >> 24
    size = word & 0xFFFFFF
    if meta & 0x80:
        raise FrameError(source, offset, f"meta type 0x{meta:02x} marks a little-endian frame; only big-endian is supported")
    log2 = meta & 0x0F
    if not MIN_BLOCK_LOG2 <= log2 <= MAX_BLOCK_LOG2:
        raise FrameError(source, offset, f"implausible meta type 0x{meta:02x} (block size 2**{log2} B)")
    block = 1 << log2
    if size == 0:
        raise FrameError(source, offset, "frame size is 0")
    frame_bytes = size * block
    if meta & BLOB_BIT:  # blob / topology frame: not data, skip it by its size
        if frame_bytes > available:
            raise FrameError(source, offset, f"truncated frame: header says {frame_bytes} B, {available} B available")
        return _new_tuple(FrameInfo, (offset, frame_bytes, block, 0, offset + frame_bytes, 0, 1, -1, 0, -1, -1, False, meta))
    if core is None:
        raise FrameError(source, offset, f"truncated frame: {available} bytes left, a header needs {CORE_BYTES}")
    (_, _src, ftype, _rev, hsize, isize, n_items, t_hi, t_lo, evt, cobo, asad) = core
    header_bytes = hsize * block
    if not HEADER_FIELDS_BYTES <= header_bytes <= frame_bytes:
        raise FrameError(source, offset,
                         f"header size {hsize} blocks ({header_bytes} B) does not fit frame of {frame_bytes} B "
                         f"(needs {HEADER_FIELDS_BYTES}..{frame_bytes} B)")
    if frame_bytes > available:
        raise FrameError(source, offset, f"truncated frame: header says {frame_bytes} B, {available} B available")
    if ftype not in ITEM_SIZE:
        return _new_tuple(FrameInfo, (offset, frame_bytes, block, 0, offset + header_bytes, 0, 1, evt,
                                      (t_hi << 32) | t_lo, cobo, asad, False, meta))
    if isize != ITEM_SIZE[ftype]:
        raise FrameError(source, offset, f"item size {isize} B does not match frame type {ftype} "
                                         f"(expects {ITEM_SIZE[ftype]} B)")
    capacity = (frame_bytes - header_bytes) // isize
    clamped = n_items > capacity
    if clamped:
        n_items = capacity
    return _new_tuple(FrameInfo, (offset, frame_bytes, block, ftype, offset + header_bytes, n_items, isize, evt,
                                  (t_hi << 32) | t_lo, cobo, asad, clamped, meta))


def peek_event_cobo(buf, offset: int = 0) -> tuple[int, int]:
    """(event id, CoBo id) of the frame header at ``offset``, unvalidated (needs :data:`CORE_BYTES`).

    What a receiver reads off a frame before handing it to the builder (which
    validates it): one unpack, no allocation.
    """
    return _EVENT_COBO.unpack_from(buf, offset + _EVENT_COBO_OFFSET)


@dataclasses.dataclass(frozen=True)
class FrameHeader:
    """Every field of a GRAW frame header (get_format.md 1.2). Sizes in blocks unless ``_bytes``."""

    meta_type: int
    frame_size: int
    data_source: int
    frame_type: int
    revision: int
    header_size: int
    item_size: int
    n_items: int  #: as written in the header (not clamped)
    event_time: int  #: 100 MHz ticks (u48)
    event_id: int
    cobo: int
    asad: int
    read_offset: int
    status: int
    #: (4, 68) bool: hit_patterns[aget, channel] is bit (67 - channel) of the AGET's 72-bit field.
    hit_patterns: np.ndarray = dataclasses.field(repr=False)
    #: Bits 68..71 of each AGET's hit pattern (not channels; bit 68 is set in real data), (4,) int.
    hit_spare_bits: tuple[int, int, int, int]
    multiplicity: tuple[int, int, int, int]
    window_out: int
    last_cell: tuple[int, int, int, int]

    @property
    def block_size(self) -> int:
        return 1 << (self.meta_type & 0x0F)

    @property
    def frame_bytes(self) -> int:
        return self.frame_size * self.block_size

    @property
    def header_bytes(self) -> int:
        return self.header_size * self.block_size

    @property
    def is_blob(self) -> bool:
        return bool(self.meta_type & BLOB_BIT)


def parse_header(buf, offset: int = 0, *, source: str = "<buffer>") -> FrameHeader:
    """Every header field of the frame at ``offset`` (no validation beyond having 87 bytes)."""
    if len(buf) - offset < HEADER_FIELDS_BYTES:
        raise FrameError(source, offset, f"truncated header: {len(buf) - offset} bytes, needs {HEADER_FIELDS_BYTES}")
    f = _FULL_HEADER.unpack_from(buf, offset)
    (word, src, ftype, rev, hsize, isize, n_items, t_hi, t_lo, evt, cobo, asad, roff, status, hit,
     m0, m1, m2, m3, wout, l0, l1, l2, l3) = f
    bits = np.unpackbits(np.frombuffer(hit, np.uint8).reshape(4, 9), axis=1)  # (4, 72), MSB first
    # Bit 67-c from the LSB is position 71-(67-c) = c+4 from the MSB.
    hits = bits[:, 4:].astype(bool)
    spare = tuple(int(v) for v in (bits[:, :4] * np.array([8, 4, 2, 1], np.uint8)).sum(axis=1))
    return FrameHeader(
        meta_type=word >> 24, frame_size=word & 0xFFFFFF, data_source=src, frame_type=ftype, revision=rev,
        header_size=hsize, item_size=isize, n_items=n_items, event_time=(t_hi << 32) | t_lo, event_id=evt,
        cobo=cobo, asad=asad, read_offset=roff, status=status, hit_patterns=hits,
        hit_spare_bits=spare,  # type: ignore[arg-type]
        multiplicity=(m0, m1, m2, m3), window_out=wout, last_cell=(l0, l1, l2, l3),
    )


def scan_frames(buf, *, source: str = "<buffer>", start: int = 0) -> Iterator[FrameInfo | FrameError]:
    """Hop frame sizes through ``buf``: yield each frame's :class:`FrameInfo`, or a
    :class:`FrameError` after which the scan resumes at the next plausible frame
    (see :func:`resync`), or stops when there is none."""
    offset, end = start, len(buf)
    while offset < end:
        try:
            info = check_frame(buf, offset, source=source)
        except FrameError as err:
            yield err
            nxt = resync(buf, offset + 1)
            if nxt is None:
                return
            offset = nxt
            continue
        yield info
        offset += info.frame_bytes


def resync(buf, start: int, meta_type: int = META_TYPE) -> int | None:
    """The first offset >= ``start`` where a plausible frame begins, or None.

    A candidate is a byte equal to ``meta_type`` whose header validates and whose
    implied end is the end of ``buf`` or another valid header (get_format.md 1.7).
    """
    data = np.frombuffer(buf, np.uint8)
    candidates = np.flatnonzero(data[start:] == meta_type) + start
    for pos in candidates.tolist():
        try:
            info = check_frame(buf, pos)
        except FrameError:
            continue
        nxt = pos + info.frame_bytes
        if nxt == len(buf):
            return pos
        try:
            check_frame(buf, nxt)
        except FrameError:
            continue
        return pos
    return None


# -- numpy decoding (reference; the fast path is conduit.get.decoder) --------------------------


def decode_items(buf, info: FrameInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(aget, channel, bucket, sample) int arrays of every item of a validated frame, in stream order.

    Full readout derives channel and bucket from per-AGET counters. Invalid items
    (channel > 67, bucket > 511) are included; callers drop them.
    """
    if info.frame_type == PARTIAL:
        words = np.frombuffer(buf, ">u4", info.n_items, info.data_offset).astype(np.uint32)
        aget = (words >> 30).astype(np.int64)
        channel = ((words >> 23) & 0x7F).astype(np.int64)
        bucket = ((words >> 14) & 0x1FF).astype(np.int64)
        sample = (words & 0xFFF).astype(np.int64)
        return aget, channel, bucket, sample
    if info.frame_type == FULL:
        words = np.frombuffer(buf, ">u2", info.n_items, info.data_offset).astype(np.uint16)
        aget = (words >> 14).astype(np.int64)
        sample = (words & 0xFFF).astype(np.int64)
        # k = rank of each item among the items of its AGET (a stable sort groups them in order).
        order = np.argsort(aget, kind="stable")
        counts = np.bincount(aget, minlength=N_AGETS)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        k = np.empty_like(aget)
        k[order] = np.arange(aget.size) - np.repeat(starts, counts)
        return aget, k % N_CHANNELS, k // N_CHANNELS, sample
    empty = np.zeros(0, np.int64)
    return empty, empty, empty, empty


@dataclasses.dataclass
class DecodedFrame:
    """One frame decoded into per-channel rows."""

    header: FrameHeader
    info: FrameInfo
    #: (m, 2) int16 [aget, channel] of every channel that carried items, sorted.
    channels: np.ndarray
    #: (m, 512) int16 samples; buckets without an item are 0.
    traces: np.ndarray
    #: (m, 512) bool: which buckets carried an item.
    present: np.ndarray
    #: Items dropped as invalid (channel > 67, bucket > 511).
    dropped: int

    @property
    def clamped(self) -> bool:
        return self.info.clamped


def decode_frame(buf, offset: int = 0, *, source: str = "<buffer>", available: int | None = None) -> DecodedFrame:
    """Validate and decode the frame at ``offset`` with vectorised numpy (all channels, FPN included)."""
    info = check_frame(buf, offset, available, source=source)
    header = parse_header(buf, offset, source=source)
    aget, channel, bucket, sample = decode_items(buf, info)
    valid = (channel < N_CHANNELS) & (bucket < N_BUCKETS) & (aget < N_AGETS)
    dropped = int(valid.size - np.count_nonzero(valid))
    key = aget[valid] * N_CHANNELS + channel[valid]
    keys, row = np.unique(key, return_inverse=True)
    traces = np.zeros((keys.size, N_BUCKETS), np.int16)
    present = np.zeros((keys.size, N_BUCKETS), bool)
    traces[row, bucket[valid]] = sample[valid]
    present[row, bucket[valid]] = True
    channels = np.stack([keys // N_CHANNELS, keys % N_CHANNELS], axis=1).astype(np.int16)
    return DecodedFrame(header, info, channels, traces, present, dropped)


# -- encoding -----------------------------------------------------------------------------------


def hit_pattern_bytes(channels: np.ndarray) -> bytes:
    """The 4 x 9 hit-pattern bytes with bit (67 - channel) set for every [aget, channel] row."""
    bits = np.zeros((N_AGETS, 72), np.uint8)
    channels = np.asarray(channels, np.int64).reshape(-1, 2)
    bits[channels[:, 0], channels[:, 1] + 4] = 1
    return np.packbits(bits, axis=1).tobytes()


def _header_bytes(*, meta_type: int, frame_blocks: int, header_blocks: int, frame_type: int, revision: int,
                  item_size: int, n_items: int, timestamp: int, event_id: int, cobo: int, asad: int,
                  hit: bytes, multiplicity, window_out: int, last_cell, read_offset: int, status: int,
                  data_source: int, block: int) -> bytes:
    fields = _FULL_HEADER.pack(
        (meta_type << 24) | frame_blocks, data_source, frame_type, revision, header_blocks, item_size, n_items,
        (timestamp >> 32) & 0xFFFF, timestamp & 0xFFFFFFFF, event_id, cobo, asad, read_offset, status, hit,
        *multiplicity, window_out, *last_cell,
    )
    return fields + bytes(header_blocks * block - len(fields))


def item_clocks(channels: np.ndarray) -> np.ndarray:
    """The readout clock, within bucket 0, of each [aget, channel] row of ``channels`` (n, 2).

    An AGET reads the channels it has in increasing order, one per clock: a channel's clock
    is its rank among its AGET's channels. Bucket ``b`` of an AGET with ``n`` channels starts
    at clock ``b * (n + IDLE_CLOCKS)`` (docs/formats.md "The order of the items").
    """
    channels = np.asarray(channels, np.int64).reshape(-1, 2)
    key = channels[:, 0] * N_CHANNELS + channels[:, 1]
    order = np.argsort(key, kind="stable")
    counts = np.bincount(channels[:, 0], minlength=N_AGETS)
    rank = np.empty(len(key), np.int64)
    rank[order] = np.arange(len(key)) - np.repeat(np.cumsum(counts) - counts, counts)
    return rank


def _first_per_clock(first_aget: int | np.ndarray, clock: np.ndarray) -> np.ndarray:
    """The first AGET served at each of ``clock`` (``first_aget``: one for all, or one per clock)."""
    first = np.asarray(first_aget, np.int64)
    if first.ndim == 0:
        return np.full(clock.shape, first, np.int64)
    if first.ndim != 1 or (clock.size and first.size <= clock.max()):
        raise ValueError(f"first_aget needs one value per readout clock (at least {int(clock.max()) + 1})")
    return first[clock]


def _cobo_order(aget: np.ndarray, clock: np.ndarray, first_aget: int | np.ndarray) -> np.ndarray:
    """The order in which the CoBo writes items of ``aget`` read at ``clock``: by clock, then AGET by AGET
    starting at the clock's first AGET (a stable sort: items of one AGET and clock keep their order)."""
    turn = (aget - _first_per_clock(first_aget, clock)) % N_AGETS
    return np.argsort(clock * N_AGETS + turn, kind="stable")


def encode_frame(
    *,
    cobo: int,
    asad: int,
    event_id: int,
    timestamp: int,
    channels: np.ndarray,
    samples: np.ndarray,
    mode: Literal["partial", "full"] = "partial",
    meta_type: int = META_TYPE,
    revision: int = 5,
    buckets: np.ndarray | None = None,
    hit_pattern: np.ndarray | None = None,
    multiplicity: tuple[int, int, int, int] = (0, 0, 0, 0),
    window_out: int = 0,
    last_cell: tuple[int, int, int, int] = (0, 0, 0, 0),
    read_offset: int = 0,
    status: int = 0,
    data_source: int = 0,
    first_aget: int | np.ndarray = 0,
) -> bytes:
    """One GRAW frame (bytes, padded to the block size) holding the given channel traces.

    ``channels`` is (n, 2) [aget, channel] (unique pairs), ``samples`` (n, 512) ADC values
    0..4095. Partial readout writes one 32-bit item per (channel, bucket) where
    ``buckets[i, b]`` is true (default: all 512: no zero suppression). Full readout writes
    all 4 x 68 x 512 16-bit items (channels not given are 0). The items are in the CoBo's
    order (:func:`item_clocks`): by readout clock, the items of one clock AGET by AGET
    starting at ``first_aget`` (0..3, or an array of one per clock: where the CoBo's merger
    stood; the real frame's drifts from 0 to 2). ``hit_pattern`` (an (m, 2) [aget, channel]
    array) defaults to the written channels. The header is 256 B (``256 // block`` blocks for
    blocks up to 256 B).
    """
    channels = np.asarray(channels, np.int64).reshape(-1, 2)
    samples = np.asarray(samples)
    n = channels.shape[0]
    if samples.shape != (n, N_BUCKETS):
        raise ValueError(f"samples must have shape ({n}, {N_BUCKETS}), got {samples.shape}")
    if n and (channels[:, 0].min() < 0 or channels[:, 0].max() >= N_AGETS
              or channels[:, 1].min() < 0 or channels[:, 1].max() >= N_CHANNELS):
        raise ValueError("channels must be [aget 0..3, channel 0..67]")
    keys = channels[:, 0] * N_CHANNELS + channels[:, 1]
    if np.unique(keys).size != n:
        raise ValueError("channels must be unique [aget, channel] pairs")
    if n and (samples.min() < 0 or samples.max() > 0xFFF):
        raise ValueError("samples must be 12-bit ADC values 0..4095")
    if not 0 <= timestamp < 1 << 48:
        raise ValueError("timestamp must fit in 48 bits")
    block = 1 << (meta_type & 0x0F)
    header_blocks = max(1, 256 // block)
    header_len = header_blocks * block
    samples = samples.astype(np.int64)

    if mode == "partial":
        if buckets is None:
            mask = np.ones((n, N_BUCKETS), bool)
        else:
            mask = np.asarray(buckets, bool)
            if mask.shape != (n, N_BUCKETS):
                raise ValueError(f"buckets must have shape ({n}, {N_BUCKETS}), got {mask.shape}")
        row, bucket = np.nonzero(mask)
        aget = channels[row, 0]
        chan = channels[row, 1]
        words = (aget << 30) | (chan << 23) | (bucket << 14) | samples[row, bucket]
        per_bucket = np.bincount(channels[:, 0], minlength=N_AGETS) + IDLE_CLOCKS  # clocks per bucket, per AGET
        clock = item_clocks(channels)[row] + bucket * per_bucket[aget]
        body = words[_cobo_order(aget, clock, first_aget)].astype(">u4").tobytes()
        frame_type, item_size = PARTIAL, 4
    elif mode == "full":
        if buckets is not None:
            raise ValueError("buckets (zero suppression) applies to partial readout only")
        # Every AGET reads all 68 channels: the clock of (bucket, channel) is the same for the four.
        data = np.zeros((N_BUCKETS, N_CHANNELS, N_AGETS), np.int64)  # [bucket, channel, aget]
        data[:, channels[:, 1], channels[:, 0]] = samples.T
        data |= np.arange(N_AGETS, dtype=np.int64) << 14
        if np.any(first_aget):  # each clock's four items starting at its first AGET
            clock = (np.arange(N_BUCKETS)[:, None] * (N_CHANNELS + IDLE_CLOCKS) + np.arange(N_CHANNELS)).reshape(-1)
            first = _first_per_clock(first_aget, clock)
            data = np.take_along_axis(data.reshape(-1, N_AGETS), (np.arange(N_AGETS) + first[:, None]) % N_AGETS, 1)
        body = data.astype(">u2").tobytes()
        frame_type, item_size = FULL, 2
    else:
        raise ValueError(f"mode must be 'partial' or 'full', got {mode!r}")

    n_items = len(body) // item_size
    frame_blocks = -(-(header_len + len(body)) // block)
    if frame_blocks >= 1 << 24:
        raise ValueError("frame too large for the 24-bit frame size field")
    hit = hit_pattern_bytes(channels if hit_pattern is None else hit_pattern)
    header = _header_bytes(
        meta_type=meta_type, frame_blocks=frame_blocks, header_blocks=header_blocks, frame_type=frame_type,
        revision=revision, item_size=item_size, n_items=n_items, timestamp=timestamp, event_id=event_id,
        cobo=cobo, asad=asad, hit=hit, multiplicity=multiplicity, window_out=window_out, last_cell=last_cell,
        read_offset=read_offset, status=status, data_source=data_source, block=block,
    )
    padding = frame_blocks * block - header_len - len(body)
    return header + body + bytes(padding)


def _fpn_for(fpn, key: tuple[int, int]) -> np.ndarray | None:
    if fpn is None:
        return None
    value = fpn.get(key) if isinstance(fpn, Mapping) else fpn
    if value is None:
        return None
    return np.broadcast_to(np.asarray(value), (N_AGETS, len(FPN_CHANNELS), N_BUCKETS))


def encode_event_frames(
    traces: np.ndarray,
    event_id: int,
    *,
    timestamp: int = 0,
    timestamp_other: int = 0,
    mode: Literal["partial", "full"] = "partial",
    fpn: np.ndarray | Mapping[tuple[int, int], np.ndarray] | None = None,
    asads: Iterable[tuple[int, int]] | None = None,
    buckets: np.ndarray | None = None,
    meta_type: int = META_TYPE,
    revision: int = 5,
    first_aget: int | np.ndarray = 0,
) -> dict[tuple[int, int], bytes]:
    """The frames of one event: ``{(cobo, asad): frame}``, sorted by (cobo, asad).

    ``traces`` is the (n, 517) event matrix (cobo, asad, aget, channel, pad, 512 samples;
    the pad column is ignored; samples 0..4095). ``asads`` lists (cobo, asad) pairs that
    produce a frame even without traces (a real DAQ sends one frame per AsAd per trigger);
    pairs present in ``traces`` always produce one. ``fpn`` gives the waveforms of the FPN
    channels 11, 22, 45, 56, written on every AGET of every frame: an array broadcastable
    to (4 agets, 4 fpn channels, 512), or a mapping (cobo, asad) -> such an array; None
    writes no FPN channels (full readout then leaves them 0). A trace row on an FPN
    channel overrides ``fpn``. CoBo 10 frames carry ``timestamp_other``, the others
    ``timestamp``. ``buckets`` (n, 512) bool selects the written buckets (partial only).
    ``first_aget`` is :func:`encode_frame`'s, for every frame.
    """
    traces = np.asarray(traces)
    if traces.ndim != 2 or traces.shape[1] != 5 + N_BUCKETS:
        raise ValueError(f"traces must be an (n, {5 + N_BUCKETS}) matrix, got shape {traces.shape}")
    mask_all = None if buckets is None else np.asarray(buckets, bool)
    pairs = {(int(c), int(a)) for c, a in traces[:, :2].tolist()} if traces.size else set()
    if asads is not None:
        pairs |= {(int(c), int(a)) for c, a in asads}
    fpn_channels = np.array(FPN_CHANNELS, np.int64)
    out: dict[tuple[int, int], bytes] = {}
    for cobo, asad in sorted(pairs):
        sel = np.flatnonzero((traces[:, 0] == cobo) & (traces[:, 1] == asad))
        chans = traces[sel, 2:4].astype(np.int64)
        samples = traces[sel, 5:].astype(np.int64)
        mask = None if mask_all is None else mask_all[sel]
        fpn_wave = _fpn_for(fpn, (cobo, asad))
        if fpn_wave is not None:
            fpn_chans = np.stack(np.meshgrid(np.arange(N_AGETS), fpn_channels, indexing="ij"), -1).reshape(-1, 2)
            have = set((chans[:, 0] * N_CHANNELS + chans[:, 1]).tolist())
            keep = np.array([a * N_CHANNELS + c not in have for a, c in fpn_chans.tolist()], bool)
            chans = np.concatenate([chans, fpn_chans[keep]])
            samples = np.concatenate([samples, fpn_wave.reshape(-1, N_BUCKETS)[keep].astype(np.int64)])
            if mask is not None:
                mask = np.concatenate([mask, np.ones((int(keep.sum()), N_BUCKETS), bool)])
        out[(cobo, asad)] = encode_frame(
            cobo=cobo, asad=asad, event_id=event_id,
            timestamp=timestamp_other if cobo == 10 else timestamp,
            channels=chans, samples=samples, mode=mode, meta_type=meta_type, revision=revision, buckets=mask,
            first_aget=first_aget,
        )
    return out
