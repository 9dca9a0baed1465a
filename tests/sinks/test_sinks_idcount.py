"""The recorder's repeat counter: the same answers as a dict, in about one bit per event id."""

from __future__ import annotations

import numpy as np

from conduit_stages.hdf5_sink.idcount import IdCounter


def test_counts_repeats_like_a_dict():
    rng = np.random.default_rng(3)
    ids = np.concatenate([np.arange(100_000), np.arange(500), rng.integers(0, 2**32, 2000), [2**40, 2**40]])
    counter, reference = IdCounter(), {}
    for i in ids.tolist():
        assert counter.add(i) == reference.get(i, 0)
        reference[i] = reference.get(i, 0) + 1
    copy = counter.copy()
    assert copy.add(7) == 2 and counter.add(7) == 2  # copies are independent
    assert copy.add(7) == 3
    assert sum(len(b) for b in counter._blocks.values()) <= (100_500 // 1024 + 1 + 2002) * 128  # bits, not entries


def test_remove_undoes_the_last_add():
    """A failed write rolls back the events of its batch (recorder.Target.rollback): their ids as never added."""
    counter = IdCounter()
    for i in (5, 6, 6, 6, 2**40):
        counter.add(i)
    for i in (6, 2**40, 5):
        counter.remove(i)
    assert [counter.add(i) for i in (5, 6, 2**40, 7)] == [0, 2, 0, 0]
    counter.remove(6)
    counter.remove(6)
    assert counter.add(6) == 1 and counter.add(6) == 2
