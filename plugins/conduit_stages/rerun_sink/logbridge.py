"""A logging handler that queues conduit's log records for the viewer's log view, rate-limited.

Records can come from any thread; the sink drains the queue from its own
calls (``consume`` / ``on_metrics``) so that every Rerun call happens in one
place, with the right timelines set.

Rate limit: each message *template* (logger + format string, so "event 12
failed" and "event 13 failed" are the same message) passes at most ``burst``
times per ``window`` seconds. Further copies are counted and reported once when
the window ends ("... and 57 more like it in the last 60 s"), so a flood of
warnings neither hides the rest nor floods the recording.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

__all__ = ["QueueHandler"]


class QueueHandler(logging.Handler):
    """Keeps the newest ``capacity`` records as (level name, formatted text)."""

    def __init__(self, level: int | str = logging.INFO, capacity: int = 2000, *, burst: int = 5,
                 window: float = 60.0, clock=time.monotonic):
        super().__init__(level)
        self.records: collections.deque[tuple[str, str]] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.burst = burst
        self.window = window
        self.clock = clock
        self._mutex = threading.Lock()
        #: template -> [window start, passed, suppressed, level, example text]
        self._seen: dict[tuple[str, str], list] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            key = (record.name, str(record.msg))
            now = self.clock()
            with self._mutex:
                self._flush_windows(now)
                entry = self._seen.get(key)
                if entry is None:
                    entry = self._seen[key] = [now, 0, 0, record.levelname, record.name]
                if entry[1] < self.burst:
                    entry[1] += 1
                    self.records.append((record.levelname, text))
                else:
                    entry[2] += 1
        except Exception:  # a log handler must never raise into the code that logged
            self.handleError(record)

    def _flush_windows(self, now: float, everything: bool = False) -> None:
        """Report what each ended window (every window with ``everything``) suppressed, and forget it."""
        for key in [k for k, e in self._seen.items() if everything or now - e[0] >= self.window]:
            start, _, suppressed, level, name = self._seen.pop(key)
            if suppressed:
                self.records.append((level, f"{name}: ... and {suppressed} more like \"{key[1]}\" in the last "
                                            f"{now - start:.0f} s"))

    def pending(self) -> bool:
        """True when records wait to be drained (a lock-free peek: a record appended meanwhile waits for the
        next drain)."""
        return bool(self.records)

    def drain(self, final: bool = False) -> list[tuple[str, str]]:
        """Every queued record, oldest first; the queue is left empty.

        ``final`` also reports every suppressed count (at the end of the run).
        """
        with self._mutex:
            self._flush_windows(self.clock(), everything=final)
            out = list(self.records)
            self.records.clear()
        return out
