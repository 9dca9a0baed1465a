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
