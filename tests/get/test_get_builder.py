"""The event builder: completeness, depth and time limits, late and duplicate frames, restarts."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conduit.get.builder import EventBuilder
from conduit.get.frames import FPN_CHANNELS, encode_event_frames, encode_frame
from conduit.get.maps import parse_electronics_map


def random_event(emap, rng, n_pads=60) -> np.ndarray:
    """An (n, 517) trace matrix on random pads of ``emap`` (rows sorted like the builder's output)."""
    pads = rng.choice(emap.n_pads, n_pads, replace=False)
    hw = emap.hardware_of(pads)
    traces = np.zeros((n_pads, 517), np.int16)
    traces[:, :4] = hw
    traces[:, 4] = pads
    traces[:, 5:] = rng.integers(0, 4096, (n_pads, 512))
    return traces[np.lexsort((traces[:, 3], traces[:, 2], traces[:, 1], traces[:, 0]))]


def canonical(traces: np.ndarray) -> np.ndarray:
    return traces[np.lexsort((traces[:, 3], traces[:, 2], traces[:, 1], traces[:, 0]))]


def frames_of(emap, traces, event_id, **kw):
    return encode_event_frames(traces, event_id, asads=emap.asads, **kw)


def test_complete_event_from_shuffled_frames(emap):
    rng = np.random.default_rng(1)
    traces = random_event(emap, rng)
    frames = frames_of(emap, traces, 17, timestamp=111, timestamp_other=222, fpn=np.full(512, 300))
    assert len(frames) == 40
    b = EventBuilder(emap)
    order = rng.permutation(len(frames))
    items = list(frames.items())
    out = []
    for i in order:
        (cobo, asad), frame = items[i]
        out += b.add_frame(frame, now=0.0, source=f"cobo{cobo}")
    assert len(out) == 1
    ev = out[0]
    assert ev.id == 17 and ev.complete and ev.missing == ()
    assert (ev.timestamp, ev.timestamp_other) == (111, 222)
    assert ev.traces.dtype == np.int16 and np.array_equal(canonical(ev.traces), traces)
    assert not np.isin(ev.traces[:, 3], FPN_CHANNELS).any()
    c = b.counter_dict()
    assert c["frames"] == 40 and c["complete_events"] == 1 and c["bad_frames"] == 0
    assert c["bytes"] == sum(len(f) for f in frames.values())
    assert b.held == 0


def test_depth_limit_emits_incomplete_with_missing(emap):
    rng = np.random.default_rng(2)
    b = EventBuilder(emap, max_depth=3, timeout=None)
    out = []
    for evt in range(1, 7):
        frames = frames_of(emap, random_event(emap, rng, 10), evt)
        for key, frame in frames.items():
            if evt == 2 and key in ((0, 0), (7, 3)):
                continue  # these AsAds lost event 2
            out += b.add_frame(frame, now=float(evt))
    ids = [(e.id, e.complete) for e in out]
    # Event 2 waits until an event more than 3 ids newer (6) arrives.
    assert ids == [(1, True), (3, True), (4, True), (5, True), (2, False), (6, True)]
    two = out[4]
    assert two.missing == ((0, 0), (7, 3))
    assert not np.isin(two.traces[:, 0] * 10 + two.traces[:, 1], [0, 73]).any()
    assert b.counters.incomplete_events == 1 and b.counters.complete_events == 5


def test_time_limit_and_flush(emap):
    rng = np.random.default_rng(3)
    b = EventBuilder(emap, timeout=2.0)
    frames = frames_of(emap, random_event(emap, rng, 10), 5)
    keys = list(frames)
    for key in keys[:30]:
        assert b.add_frame(frames[key], now=100.0) == []
    assert b.poll(101.9) == []
    [ev] = b.poll(102.5)
    assert ev.id == 5 and not ev.complete and ev.missing == tuple(sorted(keys[30:]))
    # End of input flushes what is held, in id order.
    for evt, key in ((9, keys[0]), (8, keys[1])):
        fr = frames_of(emap, random_event(emap, rng, 5), evt)
        b.add_frame(fr[key], now=103.0)
    assert [e.id for e in b.flush()] == [8, 9] and b.held == 0


def test_late_and_duplicate_frames_are_counted_not_built(emap):
    rng = np.random.default_rng(4)
    b = EventBuilder(emap, max_depth=2, timeout=None)
    frames = {evt: frames_of(emap, random_event(emap, rng, 10), evt) for evt in range(1, 6)}
    out = []
    for evt in (1, 2):
        for key, frame in frames[evt].items():
            if key != (3, 1):  # AsAd (3, 1) lags behind
                out += b.add_frame(frame, now=0)
    dup = frames[2][(0, 0)]
    out += b.add_frame(dup, now=0)  # duplicate (0, 0) of held event 2
    assert b.counters.duplicate_frames == 1
    for key, frame in frames[4].items():
        if key != (3, 1):
            out += b.add_frame(frame, now=0)  # the consensus reaches 4: 4 - 1 > 2, event 1 goes out incomplete
    assert [(e.id, e.complete) for e in out] == [(1, False)]
    late = b.add_frame(frames[1][(3, 1)], now=0)  # the lagging AsAd's frame of event 1 is late
    late += b.add_frame(frames[4][(5, 0)], now=0)  # a second frame of held event 4: a duplicate
    assert late == [] and b.counters.late_frames == 1 and b.counters.duplicate_frames == 2
    assert b.held == 2  # events 2 and 4 still wait for (3, 1)
    assert [e.id for e in b.add_frame(frames[2][(3, 1)], now=0)] == [2]
    assert [e.id for e in b.add_frame(frames[4][(3, 1)], now=0)] == [4]
    late = b.add_frame(frames[4][(5, 0)], now=0)  # a frame of an emitted complete event
    assert late == [] and b.counters.late_frames == 2
    assert b.losses() == {"bad_frames": 0, "late_frames": 2, "duplicate_frames": 2, "quarantined_ahead": 0,
                          "quarantined_behind": 0, "restart_frames": 0, "wrong_cobo_frames": 0, "items_dropped": 0}
    assert b.cobo_losses[3]["late_frames"] == 1 and b.cobo_losses[5]["late_frames"] == 1
    # the same per AsAd: every frame offered, and the ones lost by reason
    per_asad = b.asad_counters()
    assert per_asad[(3, 1)] == {"frames": 3, "late_frames": 1}
    assert per_asad[(5, 0)] == {"frames": 5, "late_frames": 1, "duplicate_frames": 1}
    assert per_asad[(0, 0)] == {"frames": 4, "duplicate_frames": 1}
    assert per_asad[(6, 1)] == {"frames": 3}
    assert sum(c["frames"] for c in per_asad.values()) == b.counters.frames


def test_frames_from_unexpected_asads(emap):
    rng = np.random.default_rng(5)
    b = EventBuilder(emap)
    traces = random_event(emap, rng, 10)
    extra = encode_frame(cobo=2, asad=3, event_id=7, timestamp=0, channels=[[0, 1]], samples=np.ones((1, 512), int))
    assert b.add_frame(extra, now=0) == []  # CoBo 2 AsAd 3 carries no pads in the default map
    out = []
    for frame in frames_of(emap, traces, 7).values():
        out += b.add_frame(frame, now=0)
    assert len(out) == 1 and out[0].complete
    assert np.array_equal(canonical(out[0].traces), traces)  # unmapped channel dropped
    c = b.counter_dict()
    assert c["unexpected_frames"] == 1 and c["unmapped_channels"] == 1


def test_expected_override_and_offline_cobo(emap):
    rng = np.random.default_rng(6)
    traces = random_event(emap, rng, 40)
    frames = frames_of(emap, traces, 3)
    b = EventBuilder(emap, expected=[(0, 0), (1, 0)])
    out = b.add_frame(frames[(0, 0)], now=0)
    assert out == []
    out = b.set_offline(1)  # CoBo 1's connection died: stop waiting for it
    assert [(e.id, e.complete, e.missing) for e in out] == [(3, False, ((1, 0),))]
    b.set_offline(1, False)
    out = b.add_frame(frames_of(emap, traces, 4)[(0, 0)], now=0)
    assert out == []


def test_restart_of_event_counter(emap, caplog):
    """Every stream goes back from 5002 to 0: one restart, nothing lost, the new run's event 0 built."""
    rng = np.random.default_rng(7)
    b = EventBuilder(emap, timeout=None)
    for evt in (5000, 5001):
        for frame in frames_of(emap, random_event(emap, rng, 5), evt).values():
            b.add_frame(frame, now=0)
    held = frames_of(emap, random_event(emap, rng, 5), 5002)
    b.add_frame(held[(0, 0)], now=0)
    with caplog.at_level(logging.WARNING):
        out = []
        for frame in frames_of(emap, random_event(emap, rng, 5), 0).values():
            out += b.add_frame(frame, now=0, source="cobo0")
    assert [(e.id, e.complete) for e in out] == [(5002, False), (0, True)]
    assert b.counters.restarts == 1 and "restarted its event counter" in caplog.text
    assert b.epoch == 1 and sum(b.losses().values()) == 0


def test_bad_frames_are_counted_and_named(emap, real_frame, caplog):
    b = EventBuilder(emap)
    with caplog.at_level(logging.WARNING):
        assert b.add_frame(b"\x08\x00\x00", now=0, source="run_0007/mm4/f.graw") == []
        assert b.add_frame(real_frame[:1000], offset=0, now=0, source="192.168.41.64:46491") == []
        assert b.add_frame(real_frame, length=40_000, now=0, source="h:1") == []
    assert b.counters.bad_frames == 3
    assert "run_0007/mm4/f.graw @ byte 0: truncated" in b.errors[0]
    assert "192.168.41.64:46491 @ byte 0" in caplog.text
    assert "the stream delivered 40000 B" in b.errors[2]
    out = b.add_frame(real_frame, now=0)  # a good frame still builds
    assert b.held == 1 and out == []


def test_clamped_frame_is_a_warning_not_an_error(emap):
    good = encode_frame(cobo=4, asad=0, event_id=1, timestamp=0, channels=[[3, 23]],
                        samples=np.full((1, 512), 9, int))
    bad = bytearray(good)
    bad[12:16] = (10_000).to_bytes(4, "big")
    b = EventBuilder(emap, expected=[(4, 0)])
    [ev] = b.add_frame(bytes(bad), now=0, source="x")
    assert b.counters.clamped_frames == 1 and b.counters.bad_frames == 0
    assert ev.n_traces == 1 and (ev.traces[0, 5:] == 9).all()


def test_cobo_override_for_old_firmware(emap):
    """Old firmware wrote CoBo 0 in every header: the caller's CoBo (from the mm folder) wins."""
    pad = int(emap.pad_of(6, 1, 2, 30))
    frame = encode_frame(cobo=0, asad=1, event_id=2, timestamp=0, channels=[[2, 30]],
                         samples=np.full((1, 512), 5, int))
    b = EventBuilder(emap, expected=[(6, 1)])
    [ev] = b.add_frame(frame, now=0, cobo=6)
    assert ev.complete and ev.traces[0, :5].tolist() == [6, 1, 2, 30, pad]


def test_fpn_subtraction_through_the_builder(emap):
    rng = np.random.default_rng(8)
    traces = random_event(emap, rng, 20)
    fpn = rng.integers(200, 300, (4, 4, 512))
    frames = frames_of(emap, traces, 1, fpn=fpn)
    b = EventBuilder(emap, fpn_subtraction=True)
    out = []
    for frame in frames.values():
        out += b.add_frame(frame, now=0)
    [ev] = out
    got = canonical(ev.traces)
    mean = fpn.mean(axis=1)  # (aget, 512)
    expected = np.round(traces[:, 5:] - mean[traces[:, 2]]).astype(np.int16)
    assert np.array_equal(got[:, :5], traces[:, :5]) and np.array_equal(got[:, 5:], expected)


def test_small_custom_map_and_close_before():
    emap = parse_electronics_map("0,0,0,0,5\n0,0,0,1,6\n1,2,3,4,7\n", "tiny.csv")
    assert emap.asads == ((0, 0), (1, 2))
    b = EventBuilder(emap, timeout=None)
    f = encode_frame(cobo=0, asad=0, event_id=9, timestamp=1, channels=[[0, 0], [0, 1], [0, 2]],
                     samples=np.full((3, 512), 7, int))
    assert b.add_frame(f, now=0) == []
    [ev] = b.close_before(10)
    assert not ev.complete and ev.missing == ((1, 2),) and ev.traces[:, 4].tolist() == [5, 6]
    assert b.counter_dict()["unmapped_channels"] == 1


def test_bad_builder_options(emap):
    with pytest.raises(ValueError):
        EventBuilder(emap, max_depth=-1)


def test_restart_after_fewer_events_than_the_depth(emap, caplog):
    """Run 0 has 5 events, then every stream counts from 0 again: the new run's ids were built moments ago,
    yet nothing is taken as late: one restart, 12 complete events."""
    rng = np.random.default_rng(9)
    b = EventBuilder(emap, timeout=None)
    out = []
    with caplog.at_level(logging.WARNING):
        for evt in list(range(5)) + list(range(7)):
            for frame in frames_of(emap, random_event(emap, rng, 5), evt).values():
                out += b.add_frame(frame, now=0)
        out += b.flush()
    assert [(e.id, e.complete) for e in out] == [(i, True) for i in range(5)] + [(i, True) for i in range(7)]
    assert b.counters.restarts == 1 and sum(b.losses().values()) == 0
    assert caplog.text.count("the DAQ restarted its event counter") == 1


def test_a_glitch_behind_within_the_depth_is_attached(emap):
    """A stream's frame arrives after the same stream's next one (out of order, within the depth): it goes back,
    proposes a restart, the next frame withdraws it, and the frame joins its still-held event."""
    rng = np.random.default_rng(10)
    b = EventBuilder(emap, timeout=None, expected=[(0, 0), (1, 0)])
    f = {evt: frames_of(emap, random_event(emap, rng, 5), evt) for evt in (1, 2, 3)}
    out = b.add_frame(f[1][(1, 0)], now=0) + b.add_frame(f[2][(1, 0)], now=0) + b.add_frame(f[2][(0, 0)], now=0)
    assert [e.id for e in out] == [2]
    out = b.add_frame(f[1][(0, 0)], now=0)  # (0, 0) goes back from 2 to 1: held aside, event 1 not waiting on it
    out += b.add_frame(f[3][(0, 0)], now=0)  # ... and resumes: a glitch; its frame of event 1 joins event 1
    assert [(e.id, e.complete) for e in out] == [(1, True)]
    assert sum(b.losses().values()) == 0 and b.counters.restarts == 0 and b.counters.lone_restarts == 0


def test_outliers_never_move_the_depth_window(emap):
    """A frame 500 ids ahead is quarantined: held events stay held, later frames of them still count."""
    rng = np.random.default_rng(11)
    b = EventBuilder(emap, max_depth=3, timeout=None)
    frames = {evt: frames_of(emap, random_event(emap, rng, 5), evt) for evt in (1, 2, 501)}
    out = []
    for evt in (1, 2):
        for key, frame in frames[evt].items():
            if key != (2, 0):
                out += b.add_frame(frame, now=0)
    out += b.add_frame(frames[501][(6, 1)], now=0)
    assert out == [] and b.held == 2 and b.counters.quarantined_ahead == 1
    out = b.add_frame(frames[1][(2, 0)], now=0) + b.add_frame(frames[2][(2, 0)], now=0)
    assert [(e.id, e.complete) for e in out] == [(1, True), (2, True)]


def test_hold_back_tells_a_reader_when_to_wait(emap):
    b = EventBuilder(emap, max_depth=10, timeout=2.0)
    rng = np.random.default_rng(12)
    for evt in range(20):
        for frame in frames_of(emap, random_event(emap, rng, 2), evt).values():
            b.add_frame(frame, now=0.0)
    assert b.consensus == 19
    assert b.hold_back(3, 24) is None  # 5 ahead: within max_depth / 2
    assert b.hold_back(3, 25) == ("consensus", 19)
    assert b.hold_back(3, 19 + 101) is None  # an outlier is quarantined, never waited for
    assert b.hold_back(3, 3) is None  # behind: never waits


def test_losses_are_logged_once_then_rate_limited(emap, caplog):
    rng = np.random.default_rng(13)
    b = EventBuilder(emap, timeout=None, expected=[(0, 0)])
    f = frames_of(emap, random_event(emap, rng, 5), 4)[(0, 0)]
    with caplog.at_level(logging.WARNING):
        b.add_frame(f, now=0)
        for _ in range(50):
            b.add_frame(f, now=0)  # event 4 was built: late, 50 times
    assert b.counters.late_frames == 50
    assert caplog.text.count("is late") == 1 and b.rate_log.held_back("late_frames") == 49


def test_a_lone_restarted_stream_rejoins_when_the_daq_restarts(emap):
    """Stream (2, 0) restarts alone at event 5 (ids 0..), the others go on to 140; then the whole DAQ restarts.
    (2, 0)'s frames are restart_frames until it goes back with the others; the new run is complete again."""
    b = EventBuilder(emap, timeout=None, expected=[(0, 0), (1, 0), (2, 0)])
    rng = np.random.default_rng(14)
    out = []

    def send(evt, key, header_id=None):
        frame = frames_of(emap, random_event(emap, rng, 3), evt if header_id is None else header_id)[key]
        out.extend(b.add_frame(frame, now=0))

    for evt in range(140):
        for key in ((0, 0), (1, 0), (2, 0)):
            send(evt, key, header_id=evt - 5 if key == (2, 0) and evt >= 5 else None)
    assert b.counters.lone_restarts == 1 and b.counters.restart_frames == 135
    send(140, (2, 0), header_id=135)  # its own sequence, read just after the others went back below
    for evt in range(3):
        for key in ((0, 0), (1, 0), (2, 0)):
            send(evt, key)
            if evt == 0 and key == (1, 0):
                send(141, (2, 0), header_id=136)  # a late frame of its old sequence: still not built
    out += b.flush()
    assert b.counters.restarts == 1 and b.counters.restart_frames == 137
    assert [(e.id, e.complete) for e in out[-3:]] == [(0, True), (1, True), (2, True)]
    assert all(not e.complete and e.missing == ((2, 0),) for e in out[5:140])


@pytest.mark.parametrize("fpn", [False, True])
def test_events_decoded_in_place_equal_the_frame_by_frame_rows(emap, fpn):
    """Frames of interleaved events, small and large (larger than a new event's first matrix: it grows), decoded
    straight into each event's matrix: every event's traces equal its frames decoded one by one and
    concatenated in (cobo, asad) order (the old path), row for row; events already emitted are never touched by
    later frames."""
    from conduit.get.decoder import FrameDecoder
    from conduit.get.frames import check_frame

    rng = np.random.default_rng(11)
    sizes = [5, 2500, 700, 60, 2600, 1, 900]
    events = {evt: frames_of(emap, random_event(emap, rng, n), evt, fpn=300 + rng.integers(-5, 5, (4, 4, 512)))
              for evt, n in enumerate(sizes)}
    reference = FrameDecoder(emap, fpn_subtraction=fpn)
    expected = {}
    for evt, frames in events.items():
        parts = [reference.decode(np.frombuffer(f, np.uint8), check_frame(f)) for _, f in sorted(frames.items())]
        expected[evt] = np.concatenate(parts)
    # Two events in flight at a time, their frames shuffled together.
    b = EventBuilder(emap, timeout=None, fpn_subtraction=fpn)
    out = []
    for first in range(0, len(sizes), 2):
        batch = [(evt, f) for evt in range(first, min(first + 2, len(sizes))) for f in events[evt].values()]
        for i in rng.permutation(len(batch)):
            out += b.add_frame(batch[i][1])
    out += b.flush()
    assert sorted(e.id for e in out) == list(range(len(sizes))) and all(e.complete for e in out)
    for ev in out:
        assert ev.traces.shape == expected[ev.id].shape and np.array_equal(ev.traces, expected[ev.id])
        assert ev.traces.flags.c_contiguous and ev.traces.flags.owndata


def test_checked_frames_build_what_add_frame_builds(emap):
    """``add_checked`` (a receiver's validated frames, events appended to one list per read) builds the same events
    and counts as ``add_frame``, for frames arriving a CoBo at a time (its AsAds in order: the working matrix holds
    runs of parts in order) with the CoBos and two events interleaved, duplicates among them."""
    from conduit.get.decoder import FrameDecoder
    from conduit.get.frames import check_frame

    rng = np.random.default_rng(21)
    events = {evt: frames_of(emap, random_event(emap, rng, 300), evt, timestamp=evt, timestamp_other=evt + 1)
              for evt in range(8)}
    arrivals = []
    for first in range(0, 8, 2):
        per_cobo = [(cobo, [(evt, f) for evt in (first, first + 1) for (c, _), f in sorted(events[evt].items())
                            if c == cobo]) for cobo in range(11)]
        tick = [x for i in rng.permutation(11) for x in per_cobo[i][1]]
        tick.insert(1, tick[0])  # a duplicate (the same id again): its event is still held
        arrivals += tick
    by_frame, by_checked = EventBuilder(emap, timeout=5.0), EventBuilder(emap, timeout=5.0)
    out_frame: list = []
    out_checked: list = []
    for k, (_evt, frame) in enumerate(arrivals):
        out_frame += by_frame.add_frame(frame, now=0.001 * k, source="x")
        array = np.frombuffer(bytearray(frame), np.uint8)
        info = check_frame(array, 0, len(frame))
        by_checked.add_checked(array, info, info.cobo, 0.001 * k, "x", out_checked)
    out_frame += by_frame.flush()
    out_checked += by_checked.flush()
    assert [e.id for e in out_checked] == [e.id for e in out_frame] == list(range(8))
    for a, b in zip(out_frame, out_checked):
        assert (a.complete, a.missing, a.timestamp, a.timestamp_other) == (b.complete, b.missing, b.timestamp,
                                                                            b.timestamp_other)
        assert a.complete and np.array_equal(a.traces, b.traces)
    # Row for row what the frames decoded one by one and concatenated in (cobo, asad) order give.
    reference = FrameDecoder(emap)
    for e in out_checked:
        parts = [reference.decode(np.frombuffer(f, np.uint8), check_frame(f)) for _, f in sorted(events[e.id].items())]
        assert np.array_equal(e.traces, np.concatenate(parts))
    assert by_checked.counter_dict() == by_frame.counter_dict()
    c = by_checked.counter_dict()
    assert (c["frames"], c["duplicate_frames"], c["complete_events"]) == (324, 4, 8), c
