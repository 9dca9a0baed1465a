"""GRAW frames: the real frame, hand-built frames, bad frames, and the encode/decode round trip."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.get.decoder import ROWS_NEEDED, FrameDecoder
from conduit.get.frames import (
    FPN_CHANNELS,
    FULL_ITEMS,
    IDLE_CLOCKS,
    FrameError,
    check_frame,
    decode_frame,
    decode_items,
    encode_event_frames,
    encode_frame,
    item_clocks,
    parse_header,
    resync,
    scan_frames,
)

# -- the real frame ---------------------------------------------------------------------------


def test_real_frame_header(real_frame):
    h = parse_header(real_frame)
    assert (h.meta_type, h.frame_size, h.data_source, h.frame_type, h.revision) == (8, 137, 0, 1, 5)
    assert (h.header_size, h.item_size, h.n_items) == (1, 4, 8704)
    assert h.event_time == 5_038_469_404
    assert (h.event_id, h.cobo, h.asad, h.read_offset, h.status) == (8, 4, 0, 0, 0)
    assert h.multiplicity == (0, 0, 0, 0)
    assert h.window_out == 20
    assert h.last_cell == (477, 477, 477, 391)
    assert h.block_size == 256 and h.frame_bytes == 35_072 == len(real_frame) and h.header_bytes == 256
    # Hit patterns: bit 67-c set for channel c; AGET 3 channel 23 <-> bit 44 (get_format.md 1.4).
    assert h.hit_patterns.shape == (4, 68)
    raw = int.from_bytes(real_frame[31 + 3 * 9:31 + 4 * 9], "big")
    assert raw >> 44 & 1 == 1 and h.hit_patterns[3, 23]
    for aget in range(4):
        word = int.from_bytes(real_frame[31 + 9 * aget:40 + 9 * aget], "big")
        expected = [bool(word >> (67 - c) & 1) for c in range(68)]
        assert h.hit_patterns[aget].tolist() == expected
        assert word >> 68 & 1 == 1  # the spare bit set in real data
    assert h.hit_spare_bits == (1, 1, 1, 1)
    # Real data set hit bits for AGET 3 channels 8, 9, 10, 41 that carry no items (1.4).
    assert {8, 9, 10, 41} <= set(np.flatnonzero(h.hit_patterns[3]).tolist())


def _by_hand(frame: bytes, index: int) -> tuple[int, int, int, int]:
    """Item ``index`` read straight off the bytes: big-endian u32 at 256 + 4 i, fields by mask."""
    b = frame[256 + 4 * index:260 + 4 * index]
    word = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
    return word >> 30, (word & 0x3F800000) >> 23, (word & 0x007FC000) >> 14, word & 0xFFF


def test_real_frame_items(real_frame):
    expected = [(0, 11, 0, 311), (1, 11, 0, 428), (2, 11, 0, 350), (3, 11, 0, 315), (0, 22, 0, 350)]
    assert [_by_hand(real_frame, i) for i in range(5)] == expected
    info = check_frame(real_frame)
    assert (info.frame_type, info.n_items, info.clamped, info.data_offset) == (1, 8704, False, 256)
    aget, ch, tb, s = decode_items(real_frame, info)
    assert list(zip(aget[:5].tolist(), ch[:5].tolist(), tb[:5].tolist(), s[:5].tolist())) == expected
    # A few more items far into the frame, by hand.
    for i in (17, 1000, 8703):
        assert (aget[i], ch[i], tb[i], s[i]) == _by_hand(real_frame, i)

    d = decode_frame(real_frame)
    fpn = {(a, c) for a in range(4) for c in FPN_CHANNELS}
    assert {tuple(x) for x in d.channels.tolist()} == fpn | {(3, 23)}
    assert d.present.all() and d.dropped == 0  # every channel has all 512 buckets
    assert d.traces.min() == 248 and d.traces.max() == 477
    row = {tuple(x): i for i, x in enumerate(d.channels.tolist())}
    assert d.traces[row[(0, 11)], 0] == 311 and d.traces[row[(1, 11)], 0] == 428
    assert d.traces[row[(0, 22)], 0] == 350


def test_real_frame_fast_decoder(real_frame, emap):
    """The numba decoder keeps only the signal channel (AGET 3 ch 23), mapped to its pad."""
    dec = FrameDecoder(emap)
    buf = np.frombuffer(real_frame, np.uint8)
    rows = dec.decode(buf, check_frame(buf))
    assert rows.shape == (1, 517)
    pad = int(emap.pad_of(4, 0, 3, 23))
    assert rows[0, :5].tolist() == [4, 0, 3, 23, pad]
    ref = decode_frame(real_frame)
    i = ref.channels.tolist().index([3, 23])
    assert np.array_equal(rows[0, 5:], ref.traces[i])
    assert dec.items_dropped == 0 and dec.unmapped_channels == 0


def test_real_frame_fpn_subtraction(real_frame, emap):
    dec = FrameDecoder(emap, fpn_subtraction=True)
    buf = np.frombuffer(real_frame, np.uint8)
    rows = dec.decode(buf, check_frame(buf))
    ref = decode_frame(real_frame)
    idx = {tuple(x): i for i, x in enumerate(ref.channels.tolist())}
    fpn_mean = np.mean([ref.traces[idx[(3, c)]] for c in FPN_CHANNELS], axis=0)
    expected = np.round(ref.traces[idx[(3, 23)]] - fpn_mean).astype(np.int16)
    assert np.array_equal(rows[0, 5:], expected)


# -- hand-built frames --------------------------------------------------------------------------


def _header(*, meta=8, frame_size, ftype=1, hsize=1, isize=4, n_items, evt=1, cobo=2, asad=3, time=77) -> bytes:
    """A header written field by field from get_format.md 1.2 (independent of the encoder)."""
    block = 1 << (meta & 0x0F)
    h = bytearray(hsize * block)
    h[0] = meta
    h[1:4] = frame_size.to_bytes(3, "big")
    h[4] = 0
    h[5:7] = ftype.to_bytes(2, "big")
    h[7] = 5
    h[8:10] = hsize.to_bytes(2, "big")
    h[10:12] = isize.to_bytes(2, "big")
    h[12:16] = n_items.to_bytes(4, "big")
    h[16:22] = time.to_bytes(6, "big")
    h[22:26] = evt.to_bytes(4, "big")
    h[26] = cobo
    h[27] = asad
    h[75:79] = (9).to_bytes(4, "big")
    h[79:87] = struct.pack(">4H", 1, 2, 3, 4)
    return bytes(h)


def _partial_item(aget, ch, tb, sample) -> bytes:
    return ((aget << 30) | (ch << 23) | (tb << 14) | sample).to_bytes(4, "big")


def test_hand_built_partial_with_padding():
    items = _partial_item(1, 5, 7, 100) + _partial_item(0, 67, 511, 4095) + _partial_item(1, 5, 8, 101)
    body = items + bytes(256 - len(items))  # zero padding to the block
    frame = _header(frame_size=2, n_items=3) + body
    d = decode_frame(frame)
    assert d.info.n_items == 3 and not d.clamped and d.dropped == 0
    assert d.channels.tolist() == [[0, 67], [1, 5]]
    assert d.traces[0, 511] == 4095 and d.present[0].sum() == 1
    assert d.traces[1, 7] == 100 and d.traces[1, 8] == 101 and d.present[1].sum() == 2
    assert (d.header.event_id, d.header.cobo, d.header.asad, d.header.event_time) == (1, 2, 3, 77)
    assert d.header.window_out == 9 and d.header.last_cell == (1, 2, 3, 4)


def test_item_count_larger_than_frame_is_clamped_not_padding(emap):
    # Header claims 100 items; the frame (2 blocks) holds 64. Items 3.. are zero padding.
    items = _partial_item(1, 5, 7, 100) + _partial_item(1, 5, 8, 101) + _partial_item(1, 5, 9, 102)
    frame = _header(frame_size=2, n_items=100) + items + bytes(256 - len(items))
    info = check_frame(frame)
    assert info.clamped and info.n_items == 64
    d = decode_frame(frame)
    # Zero padding decodes as (aget 0, ch 0, tb 0, 0): clamping keeps that to one harmless item,
    # but no item past the frame is read.
    assert d.info.n_items == 64
    with pytest.raises(FrameError, match="truncated"):
        check_frame(frame[:300])


def test_invalid_channel_items_are_dropped(emap):
    items = _partial_item(1, 5, 7, 100) + _partial_item(2, 68, 7, 5) + _partial_item(3, 127, 0, 1)
    frame = _header(frame_size=2, n_items=3) + items + bytes(256 - len(items))
    d = decode_frame(frame)
    assert d.dropped == 2 and d.channels.tolist() == [[1, 5]]
    dec = FrameDecoder(emap)
    buf = np.frombuffer(frame, np.uint8)
    rows = dec.decode(buf, check_frame(buf))
    assert dec.items_dropped == 2 and rows.shape[0] == (1 if emap.pad_of(2, 3, 1, 5) >= 0 else 0)


def test_hand_built_full_readout():
    # AGET a, item k -> channel k % 68, bucket k // 68; write sample = (a * 1000 + k) % 4096.
    k = np.arange(68 * 512)
    items = np.empty((68 * 512, 4), np.uint16)
    for a in range(4):
        items[:, a] = (a << 14) | ((a * 1000 + k) % 4096)
    body = items.astype(">u2").tobytes()  # interleaved: item k of AGET 0, 1, 2, 3, then k+1 ...
    frame = _header(frame_size=1089, ftype=2, isize=2, n_items=FULL_ITEMS) + body
    assert len(frame) == 278_784
    d = decode_frame(frame)
    assert d.traces.shape == (272, 512) and d.present.all() and d.dropped == 0
    row = {tuple(x): i for i, x in enumerate(d.channels.tolist())}
    for a, ch, tb in [(0, 0, 0), (1, 67, 0), (2, 5, 300), (3, 67, 511)]:
        assert d.traces[row[(a, ch)], tb] == (a * 1000 + tb * 68 + ch) % 4096


def test_full_readout_order_independent(emap):
    """Per-AGET counters: a non-interleaved order (all of AGET 3 first) decodes the same."""
    rng = np.random.default_rng(3)
    chans = np.array([[a, c] for a in range(4) for c in range(68)])
    samples = rng.integers(0, 4096, (272, 512))
    frame = encode_frame(cobo=0, asad=0, event_id=5, timestamp=1, channels=chans, samples=samples, mode="full")
    words = np.frombuffer(frame, ">u2", offset=256)
    reordered = np.concatenate([words[(words >> 14) == a] for a in (3, 1, 0, 2)])
    frame2 = frame[:256] + reordered.astype(">u2").tobytes()
    d1, d2 = decode_frame(frame), decode_frame(frame2)
    assert np.array_equal(d1.traces, d2.traces) and np.array_equal(d1.channels, d2.channels)
    dec = FrameDecoder(emap)
    r1 = dec.decode(np.frombuffer(frame, np.uint8), check_frame(frame))
    r2 = dec.decode(np.frombuffer(frame2, np.uint8), check_frame(frame2))
    assert np.array_equal(r1[np.lexsort(r1[:, 3::-1].T)], r2[np.lexsort(r2[:, 3::-1].T)])


def test_full_readout_merger_start_changes_the_order_not_the_content(emap):
    """Full readout: the four items of a clock start at first_aget; the per-AGET counters decode the same."""
    rng = np.random.default_rng(3)
    chans = np.array([[0, 5], [1, 11], [3, 67]])
    samples = rng.integers(0, 4096, (3, 512))
    plain = encode_frame(cobo=1, asad=2, event_id=3, timestamp=4, channels=chans, samples=samples, mode="full")
    first = rng.integers(0, 4, 512 * 70)
    turned = encode_frame(cobo=1, asad=2, event_id=3, timestamp=4, channels=chans, samples=samples, mode="full",
                          first_aget=first)
    aget = decode_items(turned, check_frame(turned))[0]
    assert aget[:4].tolist() == [(first[0] + j) % 4 for j in range(4)] and turned != plain
    assert aget[4 * 68:4 * 68 + 4].tolist() == [(first[70] + j) % 4 for j in range(4)]  # bucket 1: clock 70
    assert np.array_equal(decode_frame(turned).traces, decode_frame(plain).traces)
    dec = FrameDecoder(emap)
    rows = [dec.decode(np.frombuffer(f, np.uint8), check_frame(f)) for f in (turned, plain)]
    rows = [r[np.lexsort((r[:, 3], r[:, 2]))] for r in rows]  # rows come in order of first appearance
    assert len(rows[0]) > 0 and np.array_equal(rows[0], rows[1])


def test_full_readout_too_many_items_for_an_aget(emap):
    # AGET 0 delivers 68 * 512 + 3 items: the 3 past bucket 511 are invalid.
    n = 68 * 512 + 3
    body = np.full(n, (0 << 14) | 7, np.uint16).astype(">u2").tobytes()
    block = 256
    size = -(-(256 + len(body)) // block)
    frame = _header(frame_size=size, ftype=2, isize=2, n_items=n) + body + bytes(size * block - 256 - len(body))
    d = decode_frame(frame)
    assert d.dropped == 3 and d.traces.shape == (68, 512) and (d.traces == 7).all()
    dec = FrameDecoder(emap)
    dec.decode(np.frombuffer(frame, np.uint8), check_frame(frame))
    assert dec.items_dropped == 3


def test_meta_type_6_frame():
    """Old format: 64-byte blocks, header of 4 blocks (256 B), revision 4."""
    items = _partial_item(2, 30, 100, 1234) + _partial_item(2, 30, 101, 1235)
    body = items + bytes(64 - len(items))
    frame = _header(meta=6, frame_size=5, hsize=4, n_items=2) + body
    assert len(frame) == 5 * 64
    info = check_frame(frame)
    assert (info.block, info.frame_bytes, info.data_offset, info.n_items) == (64, 320, 256, 2)
    d = decode_frame(frame)
    assert d.channels.tolist() == [[2, 30]] and d.traces[0, 100] == 1234 and d.traces[0, 101] == 1235
    # The encoder writes the same layout.
    enc = encode_frame(cobo=2, asad=3, event_id=1, timestamp=77, channels=[[2, 30]],
                       samples=d.traces, mode="partial", meta_type=6, buckets=d.present)
    assert check_frame(enc).frame_bytes == 320 and parse_header(enc).header_size == 4
    assert enc[256:] == frame[256:]


@pytest.mark.parametrize("cut", [0, 3, 27, 200, 256, 35_071])
def test_truncated_frame(real_frame, cut):
    with pytest.raises(FrameError, match="truncated") as err:
        check_frame(real_frame[:cut], source="run_0001/mm4/x.graw")
    assert "run_0001/mm4/x.graw @ byte 0" in str(err.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda h: h.__setitem__(0, 0x88), "little-endian"),
        (lambda h: h.__setitem__(0, 0x02), "implausible meta type"),
        (lambda h: h.__setitem__(slice(1, 4), b"\0\0\0"), "frame size is 0"),
        (lambda h: h.__setitem__(slice(8, 10), (200).to_bytes(2, "big")), "header size"),
        (lambda h: h.__setitem__(slice(8, 10), b"\0\0"), "header size"),
        (lambda h: h.__setitem__(slice(10, 12), (2).to_bytes(2, "big")), "item size 2 B does not match frame type 1"),
    ],
)
def test_bad_headers(real_frame, mutate, message):
    frame = bytearray(real_frame)
    mutate(frame)
    with pytest.raises(FrameError, match=message):
        check_frame(bytes(frame), source="host:1")


def test_unknown_frame_type_and_blob_are_skipped_by_size(real_frame):
    unknown = bytearray(real_frame)
    unknown[5:7] = (0xFF01).to_bytes(2, "big")
    info = check_frame(bytes(unknown))
    assert info.skip and info.frame_bytes == 35_072
    blob = bytearray(8 * 256)
    blob[0], blob[1:4] = 0x48, (8).to_bytes(3, "big")
    stream = bytes(blob) + real_frame
    infos = list(scan_frames(stream))
    assert [i.skip for i in infos] == [True, False] and infos[1].offset == 2048 and infos[1].event_id == 8


def test_random_bytes_never_crash():
    rng = np.random.default_rng(11)
    errors = 0
    for _ in range(300):
        data = rng.integers(0, 256, rng.integers(0, 600), dtype=np.uint8).tobytes()
        try:
            info = check_frame(data, source="noise")
        except FrameError as err:
            assert str(err).startswith("noise @ byte 0: ")
            errors += 1
            continue
        assert info.frame_bytes <= len(data)  # anything accepted lies within the buffer
        decode_frame(data)
    assert errors > 250


def test_scan_resyncs_after_garbage(real_frame):
    stream = real_frame + b"\x08garbage-bytes!!" + real_frame + real_frame
    results = list(scan_frames(stream, source="s.graw"))
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["FrameInfo", "FrameError", "FrameInfo", "FrameInfo"]
    assert results[1].offset == 35_072 and "s.graw @ byte 35072" in str(results[1])
    assert results[2].offset == 35_072 + 16
    assert resync(stream, 35_073) == 35_072 + 16


# -- round trip ---------------------------------------------------------------------------------


@st.composite
def _frames(draw):
    n = draw(st.integers(0, 20))
    keys = draw(st.lists(st.integers(0, 271), min_size=n, max_size=n, unique=True))
    chans = np.array([[k // 68, k % 68] for k in keys], np.int64).reshape(-1, 2)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, 4096, (n, 512))
    mode = draw(st.sampled_from(["partial", "full"]))
    meta = draw(st.sampled_from([8, 6]))
    zs = mode == "partial" and draw(st.booleans())
    buckets = rng.random((n, 512)) < 0.3 if zs else None
    return chans, samples, mode, meta, buckets, draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**48 - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames())
def test_round_trip_random_frames(emap, case):
    chans, samples, mode, meta, buckets, evt, time = case
    frame = encode_frame(cobo=7, asad=2, event_id=evt, timestamp=time, channels=chans, samples=samples,
                         mode=mode, meta_type=meta, buckets=buckets)
    block = 1 << meta
    assert len(frame) % block == 0
    d = decode_frame(frame)
    assert (d.header.event_id, d.header.event_time, d.header.cobo, d.header.asad) == (evt, time, 7, 2)
    assert d.dropped == 0 and not d.clamped
    expected = samples if buckets is None else np.where(buckets, samples, 0)
    if mode == "full":
        assert d.traces.shape == (272, 512)
        full = np.zeros((272, 512), np.int64)
        full[chans[:, 0] * 68 + chans[:, 1]] = samples
        assert np.array_equal(d.traces, full)
    else:
        has = np.ones(len(chans), bool) if buckets is None else buckets.any(axis=1)
        order = np.argsort(chans[has, 0] * 68 + chans[has, 1])
        assert np.array_equal(d.channels, chans[has][order])
        assert np.array_equal(d.traces, expected[has][order])
        assert d.header.hit_patterns.sum() == len(chans)
        assert all(d.header.hit_patterns[a, c] for a, c in chans)
    # The numba decoder agrees with the numpy decoder for every mapped signal channel.
    dec = FrameDecoder(emap)
    rows = dec.decode(np.frombuffer(frame, np.uint8), check_frame(frame))
    pads = emap.pad_of(7, 2, d.channels[:, 0], d.channels[:, 1])
    keep = pads >= 0
    order = np.lexsort((rows[:, 3], rows[:, 2]))
    assert np.array_equal(rows[order, 2:4], d.channels[keep])
    assert np.array_equal(rows[order, 4], pads[keep])
    assert np.array_equal(rows[order, 5:], d.traces[keep])


def test_partial_item_order_is_the_cobo_clock_order():
    """By hand: AGET 0 reads 2 channels (4 clocks per bucket), AGET 3 one (3 clocks per bucket)."""
    chans = np.array([[0, 1], [0, 2], [3, 4]])
    samples = np.tile(np.arange(512), (3, 1))
    frame = encode_frame(cobo=0, asad=0, event_id=0, timestamp=0, channels=chans, samples=samples)
    aget, ch, tb, _ = decode_items(frame, check_frame(frame))
    # clock 0: (0,1,b0) (3,4,b0); 1: (0,2,b0); 2: idle; 3: (3,4,b1); 4: (0,1,b1); 5: (0,2,b1); 6: (3,4,b2) ...
    assert list(zip(aget[:7].tolist(), ch[:7].tolist(), tb[:7].tolist())) == [
        (0, 1, 0), (3, 4, 0), (0, 2, 0), (3, 4, 1), (0, 1, 1), (0, 2, 1), (3, 4, 2)]
    # AGET 3's last bucket is at clock 1533, with AGET 0's bucket 383; AGET 0 then sends buckets 384..511 alone.
    assert aget[-257] == 3 and tb[-257] == 511 and aget[-256:].tolist() == [0] * 256 and tb[-256] == 384
    for a in (0, 3):  # within an AGET: increasing bucket, then channel
        sel = aget == a
        assert np.all(np.diff(tb[sel] * 68 + ch[sel]) > 0)
    # The items of one clock start at first_aget (one value, or one per clock).
    for first in (3, np.full(2048, 3)):
        frame = encode_frame(cobo=0, asad=0, event_id=0, timestamp=0, channels=chans, samples=samples,
                             first_aget=first)
        aget, ch, tb, _ = decode_items(frame, check_frame(frame))
        assert list(zip(aget[:3].tolist(), ch[:3].tolist())) == [(3, 4), (0, 1), (0, 2)]
    with pytest.raises(ValueError, match="one value per readout clock"):
        encode_frame(cobo=0, asad=0, event_id=0, timestamp=0, channels=chans, samples=samples,
                     first_aget=np.zeros(2045, int))


def _real_clocks(real_frame, idle: int = IDLE_CLOCKS):
    """(aget, readout clock) of every item of the real frame, the clock by the rule of docs/formats.md."""
    d = decode_frame(real_frame)
    aget, ch, tb, _ = decode_items(real_frame, d.info)
    rank = dict(zip(map(tuple, d.channels.tolist()), item_clocks(d.channels).tolist()))
    per_bucket = np.bincount(d.channels[:, 0], minlength=4) + idle
    return aget, np.array([rank[k] for k in zip(aget.tolist(), ch.tolist())]) + tb * per_bucket[aget]


def test_real_frame_items_are_in_readout_clock_order(real_frame):
    """All 8,704 items: the clock never goes back, and the items of one clock are AGETs in cyclic order
    (0123, 1230, 2301, ...: where the CoBo's merger stood). With 1 or 3 idle clocks per bucket the rule fails."""
    aget, clock = _real_clocks(real_frame)
    assert np.all(np.diff(clock) >= 0)
    starts = np.flatnonzero(np.r_[True, np.diff(clock) > 0, True])
    turns = set()
    for lo, hi in zip(starts[:-1], starts[1:]):
        group = aget[lo:hi].tolist()
        assert group == sorted(group, key=lambda a: (a - group[0]) % 4), group
        turns.add(group[0]) if len(group) == 4 else None
    assert turns == {0, 1, 2}  # the merger's start drifts over the frame
    for idle in (1, 3):
        assert np.any(np.diff(_real_clocks(real_frame, idle)[1]) < 0)


def test_encoding_the_real_frames_content_gives_the_real_frame(real_frame):
    """Encoding the decoded real frame reproduces its items: exactly with the real merger's start per clock
    (the one thing not determined by the content), and clock by clock with the default start, AGET 0."""
    d = decode_frame(real_frame)
    h = d.header
    given = dict(cobo=h.cobo, asad=h.asad, event_id=h.event_id, timestamp=h.event_time, channels=d.channels,
                 samples=d.traces, revision=h.revision, hit_pattern=np.argwhere(h.hit_patterns),
                 multiplicity=h.multiplicity, window_out=h.window_out, last_cell=h.last_cell,
                 read_offset=h.read_offset, status=h.status, data_source=h.data_source)
    aget, clock = _real_clocks(real_frame)
    starts = np.flatnonzero(np.r_[True, np.diff(clock) > 0])
    first = np.zeros(clock.max() + 1, np.int64)
    first[clock[starts]] = aget[starts]
    frame = encode_frame(**given, first_aget=first)
    assert len(frame) == len(real_frame) and frame[256:] == real_frame[256:]
    # The header too, but for hit-pattern bits 68-71 (set in the real frame, not channels: the encoder writes 0).
    spare = [31 + 9 * a for a in range(4)]
    assert [i for i in range(256) if frame[i] != real_frame[i]] == spare
    assert all(frame[i] == real_frame[i] & 0x0F for i in spare)
    plain = encode_frame(**given)
    items, real_items = (np.frombuffer(f, ">u4", 8704, 256) for f in (plain, real_frame))
    assert np.array_equal(items[:382], real_items[:382]) and not np.array_equal(items, real_items)
    by_clock = np.lexsort((aget, clock))  # the real frame with every clock's items from AGET 0 up
    assert np.array_equal(items, real_items[by_clock])


def test_encoder_rejects_bad_input():
    with pytest.raises(ValueError, match="12-bit"):
        encode_frame(cobo=0, asad=0, event_id=0, timestamp=0, channels=[[0, 0]], samples=np.full((1, 512), 4096))
    with pytest.raises(ValueError, match="unique"):
        encode_frame(cobo=0, asad=0, event_id=0, timestamp=0, channels=[[0, 0], [0, 0]],
                     samples=np.zeros((2, 512), int))
    with pytest.raises(ValueError, match="channel 0..67"):
        encode_frame(cobo=0, asad=0, event_id=0, timestamp=0, channels=[[0, 68]], samples=np.zeros((1, 512), int))


def test_encode_event_frames_splits_by_asad():
    rng = np.random.default_rng(5)
    traces = np.zeros((3, 517), np.int16)
    traces[:, :5] = [[0, 1, 2, 3, 99], [0, 1, 0, 0, 98], [10, 0, 1, 2, 97]]
    traces[:, 5:] = rng.integers(0, 4096, (3, 512))
    fpn = np.arange(512) % 4096
    frames = encode_event_frames(traces, 42, timestamp=1000, timestamp_other=2000, fpn=fpn,
                                 asads=[(5, 3), (0, 1)])
    assert list(frames) == [(0, 1), (5, 3), (10, 0)]
    d = decode_frame(frames[(0, 1)])
    assert (d.header.event_id, d.header.event_time, d.header.cobo, d.header.asad) == (42, 1000, 0, 1)
    got = {tuple(c): d.traces[i] for i, c in enumerate(d.channels.tolist())}
    assert np.array_equal(got[(2, 3)], traces[0, 5:]) and np.array_equal(got[(0, 0)], traces[1, 5:])
    assert all(np.array_equal(got[(a, c)], fpn) for a in range(4) for c in FPN_CHANNELS)
    assert len(got) == 2 + 16
    empty = decode_frame(frames[(5, 3)])  # no traces: FPN only
    assert len(empty.channels) == 16
    other = decode_frame(frames[(10, 0)])
    assert other.header.event_time == 2000  # CoBo 10 carries timestamp_other
    full = encode_event_frames(traces, 42, mode="full")
    assert set(full) == {(0, 1), (10, 0)} and all(len(f) == 278_784 for f in full.values())


def test_decode_into_a_matrix_equals_decode(real_frame, emap):
    """decode_into writes the same rows as decode, at the given place of a bigger matrix, and nothing before it;
    on the real frame and on simulated partial and full readout frames, with and without FPN subtraction."""
    rng = np.random.default_rng(5)
    channels = np.array([[a, c] for a in range(4) for c in range(68)])
    frames = [real_frame]
    for mode in ("partial", "full"):
        pick = channels[rng.choice(len(channels), 120, replace=False)]
        frames.append(encode_frame(cobo=2, asad=1, event_id=9, timestamp=5, channels=pick,
                                   samples=rng.integers(0, 4096, (120, 512)), mode=mode))
    for fpn in (False, True):
        for frame in frames:
            buf = np.frombuffer(frame, np.uint8)
            info = check_frame(buf)
            expected = FrameDecoder(emap, fpn_subtraction=fpn).decode(buf, info)
            matrix = np.full((1000, 517), -7, np.int16)
            dec = FrameDecoder(emap, fpn_subtraction=fpn)
            n = dec.decode_into(buf, info, matrix[300:300 + ROWS_NEEDED])
            assert n == expected.shape[0] > 0
            assert np.array_equal(matrix[300:300 + n], expected)
            assert (matrix[:300] == -7).all() and (matrix[300 + ROWS_NEEDED:] == -7).all()
