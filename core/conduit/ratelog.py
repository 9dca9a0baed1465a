"""Rate-limited logging: the first message of each kind at once, then at most one line per interval.

Losses (late frames, quarantined frames, dropped events ...) can happen thousands of
times a second when something upstream goes wrong; one log line each would bury the
shift log. :class:`RateLimitedLog` logs the first occurrence (or the first few) of
each *kind* in full, then at most one line per ``interval`` seconds per kind, saying
how many similar messages were held back. The counters in the run summary carry the exact totals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Log messages by kind: the first ``first`` at once, then at most one per ``interval`` seconds (wall clock)."""

    def __init__(self, logger: logging.Logger, *, interval: float = 30.0, first: int = 1,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.first = max(first, 1)
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held_back: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._level: dict[str, int] = {}

    def __call__(self, kind: str, level: int, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``first`` of this ``kind`` were logged and the last less than
        ``interval`` s ago."""
        now = self._clock()
        seen = self._seen.get(kind, 0)
        self._seen[kind] = seen + 1
        last = self._last.get(kind)
        if seen >= self.first and last is not None and now - last < self.interval:
            self._held_back[kind] = self._held_back.get(kind, 0) + 1
            self._level[kind] = level
            return
        held = self._held_back.pop(kind, 0)
        if held:
            message += f" (and {held} more like it in the last {now - last:.0f} s)"
        elif seen == self.first - 1 and self.interval > 0:
            message += f" (similar messages: at most one per {self.interval:g} s)"
        self._last[kind] = now
        self.logger.log(level, message, *args)

    def flush(self) -> None:
        """Say how many messages of each kind were held back since the last one logged (at the end of a run)."""
        now = self._clock()
        for kind, held in self._held_back.items():
            self.logger.log(self._level[kind], "%s: %d more like it not logged (in the %.0f s after the last one)",
                            kind, held, now - self._last[kind])
        self._held_back.clear()

    def held_back(self, kind: str) -> int:
        """Messages of ``kind`` not logged since the last one that was."""
        return self._held_back.get(kind, 0)
