"""Rate-limited logging of losses: the first at once, then one line per interval saying how many were held back."""

from __future__ import annotations

import logging

from conduit.ratelog import RateLimitedLog


def test_first_message_then_one_per_interval(caplog):
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("conduit.test"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="conduit.test"):
        for i in range(5):
            rl("late", logging.WARNING, "frame %d late", i)
        rl("dup", logging.WARNING, "a duplicate")  # another kind is not held back by the first
        now[0] = 10.5
        rl("late", logging.WARNING, "frame %d late", 99)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["frame 0 late (similar messages: at most one per 10 s)",
                     "a duplicate (similar messages: at most one per 10 s)",
                     "frame 99 late (and 4 more like it in the last 10 s)"]
    assert rl.held_back("late") == 0
