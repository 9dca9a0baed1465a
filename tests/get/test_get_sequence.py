"""The sequencer's in-step shortcut (:meth:`Sequencer.advance`) against its general rule (:meth:`Sequencer.judge`).

Streams of ids with every fault the DAQ produces (gaps, reordering, duplicates, ids far ahead,
streams going back alone or together, silences and disconnections) are fed frame by frame to
two copies of one sequencer: whenever ``advance`` takes a frame, ``judge`` must have filed it
under the current run, with nothing to drop or withdraw, and left the same state behind;
whenever ``advance`` declines, it must have changed nothing.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from conduit.get.sequence import Sequencer

STREAMS = [(c, a) for c in range(5) for a in range(4)]


def _state(seq: Sequencer) -> tuple:
    streams = tuple(sorted((k, tuple(sorted(vars(s).items()))) for k, s in seq.streams.items()))
    return (streams, tuple(seq._heads), seq.consensus, seq.epoch, seq._newest, seq.version, seq._proposing,
            seq.old_open, seq._first, seq._waiting_for_unheard, seq._unheard_stale)


def _faulty_frames(seed: int):
    """(stream, event id, time) of a 250-event run with faults, in arrival order."""
    rng = np.random.default_rng(seed)
    restart_at = int(rng.integers(100, 200))
    frames = []
    for event in range(250):
        run_id = event if event < restart_at else event - restart_at
        for stream in STREAMS:
            r = rng.random()
            if r < 0.01:
                continue  # lost
            frames.append((stream, run_id))
            if r > 0.995:
                frames.append((stream, run_id))  # duplicate
            elif r > 0.99:
                frames.append((stream, run_id + int(rng.integers(150, 400))))  # far ahead
            elif r > 0.985:
                frames.append((stream, max(run_id - int(rng.integers(1, 40)), 0)))  # goes back (a glitch)
    keys = np.arange(len(frames)) + rng.uniform(0, 30, len(frames))  # local reordering
    frames = [frames[i] for i in np.argsort(keys, kind="stable")]
    lone = STREAMS[int(rng.integers(len(STREAMS)))]
    count = 0
    for i in range(len(frames) // 2, len(frames)):  # one stream restarts alone half-way
        if frames[i][0] == lone:
            frames[i] = (lone, count)
            count += 1
    now, out = 0.0, []
    for stream, event_id in frames:
        now += float(rng.exponential(1e-4))
        if rng.random() < 0.001:
            now += 12.0  # everybody silent for a while (streams go stale)
        out.append((stream, event_id, now))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_advance_is_judge_for_the_frames_it_takes(seed):
    seq = Sequencer(max_depth=10, outlier_gap=100, timeout=2.0, stale_after=10.0, expected=STREAMS)
    taken = judged = 0
    for i, (stream, event_id, now) in enumerate(_faulty_frames(seed)):
        if i % 500 == 250:
            seq.set_offline(3, i % 1000 == 250)  # CoBo 3 disconnects, then comes back
        if i % 97 == 0:
            seq.refresh(now)
        reference = copy.deepcopy(seq)
        before = _state(seq)
        if seq.advance(stream, event_id, now):
            taken += 1
            assert reference.judge(stream, event_id, now) == (reference.epoch, None, False)
            assert _state(seq) == _state(reference)
        else:
            judged += 1
            assert _state(seq) == before
            seq.judge(stream, event_id, now)
        decision = seq.decide(now)
        if decision is not None:
            if decision[0] == "restart":
                seq.declare_restart()
            else:
                seq.diverge(decision[1])
    assert taken > judged > 0  # the shortcut is the common case, and the faults reached judge
