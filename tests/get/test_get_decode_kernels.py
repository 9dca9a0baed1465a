"""The decode kernels against the previous ones, kept as a reference (``tests/reference_decode_kernels.py``), on hostile input.

Every case feeds both the same bytes and compares everything they produce: the rows returned,
every output row (samples and the five header columns), the FPN-subtracted rows, and both
counters (items dropped, unmapped channels). The inputs are made to break a fast path: random
32-bit items (invalid channels 68-127, bits 12-13 set, every AGET and bucket, the same (channel,
bucket) twice: the later item wins), unmapped and FPN channels, odd item counts and unaligned
starts, read-only and writable buffers, an output full of garbage, the real 2017 frame, and whole
simulated events with corrupted items built by the :class:`EventBuilder` with either kernel set.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference_decode_kernels as ref
from conduit.get import _kernels as new
from conduit.get.builder import EventBuilder
from conduit.get.decoder import ROWS_NEEDED
from conduit.get.frames import PARTIAL, check_frame, encode_event_frames, encode_frame

GARBAGE = np.int16(-12345)


def decode_both(kernel: str, buf, start: int, n: int, slots, cobo: int, asad: int, keep_fpn: bool):
    """Run the reference and the new kernel on the same input; return both (rows, out, stats)."""
    results = []
    for module in (ref, new):
        out = np.full((ROWS_NEEDED + 50, 517), GARBAGE, np.int16)  # 50 rows past ROWS_NEEDED: never written
        stats = np.array([7, 3], np.int64)  # counters accumulate
        rows = getattr(module, kernel)(buf, start, n, slots, cobo, asad, out[:ROWS_NEEDED], keep_fpn, stats)
        assert (out[ROWS_NEEDED:] == GARBAGE).all(), f"{module.__name__} wrote past its output"
        results.append((rows, out, stats))
    return results


def assert_same(results, keep_fpn: bool) -> int:
    (rows_a, out_a, stats_a), (rows_b, out_b, stats_b) = results
    assert rows_a == rows_b
    assert np.array_equal(out_a[:rows_a], out_b[:rows_b]), "rows differ"
    assert np.array_equal(stats_a, stats_b), (stats_a, stats_b)
    return rows_a


def hostile_items(rng, n: int) -> np.ndarray:
    """``n`` partial-readout items (uint32, big-endian on the wire): mostly valid channels of a few kinds,
    some invalid (channel > 67), unused bits set, repeated (channel, bucket) pairs."""
    aget = rng.integers(0, 4, n, dtype=np.uint32)
    channel = rng.choice(np.r_[np.arange(68), [11, 22, 45, 56] * 10, [68, 69, 100, 127]], n).astype(np.uint32)
    bucket = rng.integers(0, 512, n, dtype=np.uint32)
    sample = rng.integers(0, 1 << 14, n, dtype=np.uint32)  # bits 12-13 set in 3/4 of the items
    items = (aget << 30) | (channel << 23) | (bucket << 14) | sample
    repeat = rng.random(n) < 0.05  # the same place as an earlier item, another sample
    if n:
        earlier = rng.integers(0, max(n - 1, 1), n)
        items[repeat] = (items[earlier[repeat]] & np.uint32(0xFFFFC000)) | sample[repeat]
    wild = rng.random(n) < 0.02  # anything at all
    items[wild] = rng.integers(0, 1 << 32, int(wild.sum()), dtype=np.uint64).astype(np.uint32)
    return items


@pytest.mark.parametrize("keep_fpn", [False, True])
def test_random_hostile_items_decode_identically(emap, keep_fpn):
    rng = np.random.default_rng(2024)
    mapped = emap.slots(*emap.asads[0])
    assert (mapped == -2).any() and (mapped >= 0).any()
    sparse = mapped.copy()
    sparse[rng.random(sparse.size) < 0.3] = -1  # unmapped channels
    rows_seen = 0
    for case in range(400):
        n = int(rng.choice([0, 1, 2, 3, 4, 5, 7, 63, 300, 1000, 3001]))
        items = hostile_items(rng, n)
        start = int(rng.integers(0, 8))  # unaligned starts too
        raw = bytes(rng.integers(0, 256, start, dtype=np.uint8)) + items.astype(">u4").tobytes()
        raw += bytes(rng.integers(0, 256, 5, dtype=np.uint8))  # bytes after the items: never read
        buf = np.frombuffer(raw if case % 2 else bytearray(raw), np.uint8)
        slots = mapped if case % 3 else sparse
        rows_seen += assert_same(decode_both("decode_partial", buf, start, n, slots, 3, 1, keep_fpn), keep_fpn)
    assert rows_seen > 1000  # the cases did place rows


@pytest.mark.parametrize("keep_fpn", [False, True])
def test_real_frame_decodes_identically(emap, real_frame, keep_fpn):
    buf = np.frombuffer(real_frame, np.uint8)
    info = check_frame(buf)
    assert info.frame_type == PARTIAL and info.n_items == 8704
    for cobo, asad in ((info.cobo, info.asad), emap.asads[5]):
        results = decode_both("decode_partial", buf, info.data_offset, info.n_items, emap.slots(cobo, asad), cobo,
                              asad, keep_fpn)
        assert_same(results, keep_fpn)
    assert results[1][0] >= 1


@pytest.mark.parametrize("keep_fpn", [False, True])
def test_full_readout_decodes_identically(emap, keep_fpn):
    rng = np.random.default_rng(5)
    for n in (0, 1, 68 * 4 * 3 + 5, 4 * 68 * 512, 4 * 68 * 512 + 17):
        halves = rng.integers(0, 1 << 16, n, dtype=np.uint64).astype(np.uint16)
        if n == 4 * 68 * 512:  # the DAQ's order: the canonical fast path
            halves = (np.tile(np.arange(4, dtype=np.uint16), n // 4) << 14) | (halves & np.uint16(0xFFF))
        buf = np.frombuffer(halves.astype(">u2").tobytes(), np.uint8)
        assert_same(decode_both("decode_full", buf, 0, n, emap.slots(*emap.asads[2]), 2, 0, keep_fpn), keep_fpn)


def corrupt(frame: bytes, rng, share: float) -> bytes:
    """``frame`` with a share of its items' bits flipped (header intact)."""
    data = bytearray(frame)
    info = check_frame(frame)
    items = np.frombuffer(data, ">u4", info.n_items, info.data_offset).copy()
    hit = rng.random(items.size) < share
    items[hit] ^= rng.integers(1, 1 << 32, int(hit.sum()), dtype=np.uint64).astype(np.uint32)
    data[info.data_offset:info.data_offset + 4 * info.n_items] = items.astype(">u4").tobytes()
    return bytes(data)


@pytest.mark.parametrize("fpn", [False, True])
def test_events_with_corrupted_items_are_built_identically(emap, fpn):
    """Whole events (700 signal channels and the FPN channels of 40 AsAds), a share of their items corrupted,
    frames shuffled, some duplicated: the builder with the new kernels emits the same events (traces, missing,
    timestamps) and counters as with the reference kernels."""
    rng = np.random.default_rng(77)
    stream = []
    for evt in range(6):
        pads = rng.choice(emap.n_pads, 700, replace=False)
        traces = np.zeros((700, 517), np.int16)
        traces[:, :4] = emap.hardware_of(pads)
        traces[:, 4] = pads
        traces[:, 5:] = rng.integers(0, 4096, (700, 512))
        frames = encode_event_frames(traces, evt, timestamp=100 * evt, timestamp_other=100 * evt + 1,
                                     fpn=300 + rng.integers(-8, 8, (4, 4, 512)), asads=emap.asads)
        batch = [corrupt(f, rng, [0.0, 0.001, 0.05][evt % 3]) for key, f in sorted(frames.items())
                 if not (evt == 4 and key == emap.asads[7])]  # one AsAd missing: an incomplete event
        batch += batch[:2]  # duplicates
        stream += [batch[i] for i in rng.permutation(len(batch))]
    built = []
    for kernels in (ref, new):
        builder = EventBuilder(emap, timeout=None, fpn_subtraction=fpn)
        builder.decoder._kernels = {1: kernels.decode_partial, 2: kernels.decode_full}
        events = [e for f in stream for e in builder.add_frame(f)] + builder.flush()
        built.append((events, builder.counter_dict()))
    (events_a, counts_a), (events_b, counts_b) = built
    assert counts_a == counts_b and counts_a["items_dropped"] > 0 and counts_a["duplicate_frames"] + counts_a["late_frames"] == 12
    assert len(events_a) == len(events_b) == 6
    for a, b in zip(events_a, events_b):
        assert (a.id, a.complete, a.missing, a.timestamp, a.timestamp_other) == \
               (b.id, b.complete, b.missing, b.timestamp, b.timestamp_other)
        assert a.traces.shape == b.traces.shape and np.array_equal(a.traces, b.traces)
    assert sum(not e.complete for e in events_b) == 1


# -- frames in the CoBo's order: the sealed loop ------------------------------------------------


def takes_sealed_loop(buf, start: int, n: int, slots, keep_fpn: bool) -> bool:
    """Whether the new kernel decodes this frame with its table sealed after the prefix (no fallback)."""
    if n <= new.OPEN_PREFIX:
        return False
    out = np.full((ROWS_NEEDED, 517), GARBAGE, np.int16)
    words = buf[start:start + 4 * n].view(np.uint32)
    rows = new._decode_sealed(words, np.uint64(n), slots, out, 0, 0, np.zeros(2, np.int64), np.zeros((4, 4), np.bool_),
                              keep_fpn)
    return rows >= 0


def cobo_order_frame(rng, *, n_channels: int | None = None, zero_suppressed: bool = False) -> tuple[bytes, np.ndarray]:
    """A partial-readout frame in the CoBo's order (random channels, FPN among them, a random merger start per
    clock or a drifting one) and its (n, 2) channels."""
    keys = rng.choice(272, n_channels if n_channels is not None else int(rng.integers(1, 120)), replace=False)
    if rng.random() < 0.5:  # the FPN channels of every AGET, as the DAQ reads them
        keys = np.union1d(keys, [a * 68 + c for a in range(4) for c in (11, 22, 45, 56)])
    chans = np.stack([keys // 68, keys % 68], 1)
    samples = rng.integers(0, 4096, (len(chans), 512))
    clock = np.arange(512 * 70)
    first = [0, int(rng.integers(0, 4)), rng.integers(0, 4, clock.size), (clock // 1200 + (clock % 7 == 0)) % 4][
        int(rng.integers(0, 4))]
    buckets = rng.random((len(chans), 512)) < 0.9 if zero_suppressed else None
    if buckets is not None:
        buckets[:, 0] = True  # every channel still starts in bucket 0
    frame = encode_frame(cobo=3, asad=1, event_id=1, timestamp=0, channels=chans, samples=samples, buckets=buckets,
                         first_aget=first)
    return frame, chans


def item_words(frame: bytes) -> np.ndarray:
    info = check_frame(frame)
    return np.frombuffer(frame, ">u4", info.n_items, info.data_offset).astype(np.uint32)


def check_cobo_items(words: np.ndarray, slots, keep_fpn: bool, start: int, sealed: bool | None):
    """Both kernels on ``words`` (uint32 items) written big-endian at byte ``start`` of a buffer: the same bytes;
    and whether the new kernel's sealed loop took them, when ``sealed`` says."""
    buf = np.frombuffer(bytearray(bytes(range(start)) + words.astype(">u4").tobytes()), np.uint8)
    assert_same(decode_both("decode_partial", buf, start, words.size, slots, 3, 1, keep_fpn), keep_fpn)
    if sealed is not None:
        assert takes_sealed_loop(buf, start, words.size, slots, keep_fpn) == sealed


def slot_tables(emap, rng):
    mapped = emap.slots(*emap.asads[0])
    sparse = mapped.copy()
    sparse[rng.random(sparse.size) < 0.3] = -1
    return [mapped, sparse, np.full_like(mapped, -1)]


@pytest.mark.parametrize("keep_fpn", [False, True])
def test_cobo_order_frames_take_the_sealed_loop_and_decode_identically(emap, keep_fpn):
    """Frames as the CoBo writes them (any merger start, zero suppression after bucket 0, 1 to all 272
    channels, unaligned starts, mapped / 30 % unmapped / all unmapped channels): the sealed loop, same bytes."""
    rng = np.random.default_rng(11)
    tables = slot_tables(emap, rng)
    for case in range(48):
        n_channels = [None, 1, 68, 272][case % 4]
        frame, _ = cobo_order_frame(rng, n_channels=n_channels, zero_suppressed=case % 3 == 2)
        words = item_words(frame)
        check_cobo_items(words, tables[case % 3], keep_fpn, case % 4, words.size > new.OPEN_PREFIX)


def mutate(rng, words: np.ndarray, chans: np.ndarray, how: str) -> tuple[np.ndarray, bool]:
    """``words`` with one change past the prefix; whether the sealed loop must still take it."""
    words = words.copy()
    i = int(rng.integers(new.OPEN_PREFIX, words.size))
    seen = set((chans[:, 0] * 68 + chans[:, 1]).tolist())
    unseen = [k for k in range(272) if k not in seen]
    if how == "new channel" and unseen:  # sample 0 and bits 12-13 clear: the stored half is (bucket & 3) << 14
        k = int(rng.choice(unseen))
        words[i] = (k // 68 << 30) | (k % 68 << 23) | (words[i] & np.uint32(0x7FC000))
        return words, False
    if how == "invalid channel":
        words[i] = (words[i] & np.uint32(0xC07FFFFF)) | (np.uint32(rng.integers(68, 128)) << np.uint32(23))
        return words, False
    if how == "extra item of a new channel" and unseen:
        k = int(rng.choice(unseen))
        item = np.uint32((k // 68 << 30) | (k % 68 << 23) | int(rng.integers(0, 512)) << 14 | int(rng.integers(0, 1 << 14)))
        return np.insert(words, i, item), False
    if how == "aget bits":  # another AGET: a seen channel or not
        words[i] ^= np.uint32(int(rng.integers(1, 4)) << 30)
        top = int(words[i] >> 23)
        return words, top // 128 * 68 + top % 128 in seen
    if how == "bucket":  # a seen channel at another bucket: a duplicate and a hole
        words[i] ^= np.uint32(int(rng.integers(1, 512)) << 14)
        return words, True
    if how == "swap":
        j = int(rng.integers(new.OPEN_PREFIX, words.size))
        words[[i, j]] = words[[j, i]]
        return words, True
    if how == "missing":
        return np.delete(words, i), True
    if how == "sample bits 12-13":
        words[i] |= np.uint32(0x3000)
        return words, True
    return words, True


MUTATIONS = ["new channel", "invalid channel", "extra item of a new channel", "aget bits", "bucket", "swap",
             "missing", "sample bits 12-13"]


@pytest.mark.parametrize("keep_fpn", [False, True])
@pytest.mark.parametrize("how", MUTATIONS)
def test_cobo_order_frames_with_one_item_changed(emap, keep_fpn, how):
    """One item changed past the prefix: a channel not seen yet or an invalid one leaves the sealed loop (the
    general loop decodes the frame from scratch, nothing counted twice); the others stay in it. Same bytes."""
    rng = np.random.default_rng(MUTATIONS.index(how))
    tables = slot_tables(emap, rng)
    for case in range(20):
        frame, chans = cobo_order_frame(rng, n_channels=int(rng.integers(2, 100)))
        words, sealed = mutate(rng, item_words(frame), chans, how)
        check_cobo_items(words, tables[case % 3], keep_fpn, case % 4, sealed)


@pytest.mark.parametrize("keep_fpn", [False, True])
def test_channel_first_seen_after_the_prefix(emap, keep_fpn):
    """Zero suppression that starts a channel late (its first item past item 272): the general loop, same bytes."""
    rng = np.random.default_rng(4)
    chans = np.array([[0, 11], [0, 30], [1, 22], [3, 56], [3, 60]])
    buckets = np.ones((5, 512), bool)
    buckets[1, :300] = False
    frame = encode_frame(cobo=3, asad=1, event_id=1, timestamp=0, channels=chans,
                         samples=rng.integers(0, 4096, (5, 512)), buckets=buckets)
    for slots in slot_tables(emap, rng):
        check_cobo_items(item_words(frame), slots, keep_fpn, 1, False)


@pytest.mark.parametrize("keep_fpn", [False, True])
def test_real_frame_takes_the_sealed_loop(emap, real_frame, keep_fpn):
    buf = np.frombuffer(real_frame, np.uint8)
    info = check_frame(buf)
    assert takes_sealed_loop(buf, info.data_offset, info.n_items, emap.slots(info.cobo, info.asad), keep_fpn)


def test_rows_needed_has_room_for_the_scratch_rows():
    """The decoder's ROWS_NEEDED (kept apart so that importing it does not load numba) matches the kernels'."""
    assert ROWS_NEEDED == new.N_SLOTS + new.EXTRA_ROWS and new.SENTINEL_ROW == new.EXTRA_ROWS - 1
