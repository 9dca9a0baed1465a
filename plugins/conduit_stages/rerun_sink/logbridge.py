"""A logging handler that queues conduit's log records for the viewer's log view.

Records can come from any thread; the sink drains the queue from its own
calls (``consume`` / ``on_metrics``) so that every Rerun call happens in one
place, with the right timelines set.
"""

from __future__ import annotations

import collections
import logging

__all__ = ["QueueHandler"]


class QueueHandler(logging.Handler):
    """Keeps the newest ``capacity`` records as (level name, formatted text)."""

    def __init__(self, level: int | str = logging.INFO, capacity: int = 2000):
        super().__init__(level)
        self.records: collections.deque[tuple[str, str]] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.levelname, self.format(record)))
        except Exception:  # a log handler must never raise into the code that logged
            self.handleError(record)

    def drain(self) -> list[tuple[str, str]]:
        """Every queued record, oldest first; the queue is left empty."""
        out = []
        while True:
            try:
                out.append(self.records.popleft())
            except IndexError:
                return out
