"""Events waiting a short, bounded time for an analysis place (``policy = "skip"``, ``[engine] backlog``).

A live event that finds every analysis place taken (``max_in_flight``) was skipped at once. Events come out
of the builder in bursts (after anything held the main process's reading back, every CoBo's frames of many
events are read at once), and a burst can take every place for a few ms while the workers have CPU to spare
on average. Here such an event waits instead, oldest first, in a queue of at most ``size`` events, each for
at most ``max_wait`` seconds of wall time; it is skipped (counted by reason) only when the queue is full
(:data:`FULL`) or when it has waited that long (:data:`WAITED`). The sinks see events in source order, so an
event waiting here holds back the recording of the events after it: never longer than ``max_wait`` beyond
the analysis itself.

The event keeps what it holds while it waits (its trace matrix, possibly in a shared trace slot): a backlog
of ``size`` events holds up to ``size`` more trace matrices in the main process.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Awaitable, Callable

import trio

__all__ = ["AnalysisBacklog", "FULL", "WAITED", "SKIP_REASONS"]

#: Skipped: every analysis place was taken and the backlog full (with no backlog: every place taken).
FULL = "full"
#: Skipped: waited in the backlog for ``max_wait`` and no analysis place came free.
WAITED = "waited"
#: Every reason an event is skipped, in the order the summary shows them.
SKIP_REASONS = (FULL, WAITED)


@dataclasses.dataclass
class _Waiting:
    event: Any
    spec: Any
    deadline: float  # trio clock (s)


class AnalysisBacklog:
    """At most ``size`` events waiting, oldest first, each at most ``max_wait`` seconds, for an analysis place."""

    def __init__(self, size: int, max_wait: float) -> None:
        self.size = size
        self.max_wait = max_wait
        self._items: collections.deque[_Waiting] = collections.deque()
        self._changed = trio.Event()
        self._closed = False
        #: Most events waiting at once so far.
        self.peak = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.max_wait > 0

    def offer(self, event: Any, spec: Any) -> bool:
        """Queue ``event`` (to be analysed with ``spec``) if there is room; False when the backlog is full."""
        if len(self._items) >= self.size or self._closed or self.max_wait <= 0:
            return False
        self._items.append(_Waiting(event, spec, trio.current_time() + self.max_wait))
        self.peak = max(self.peak, len(self._items))
        self._changed.set()
        return True

    def close(self) -> None:
        """No more events will be offered: :meth:`feed` returns once every waiting one is placed or expired."""
        self._closed = True
        self._changed.set()

    async def feed(self, places: trio.Semaphore, place: Callable[[Any, Any, float], Awaitable[None]],
                   expire: Callable[[Any], Awaitable[None]]) -> None:
        """Until closed and empty: give the oldest waiting event the next analysis place that comes free
        (``place(event, spec, waited s)``, called holding one of ``places``), or, once it has waited
        ``max_wait``, ``expire(event)`` it and every other event whose time is up."""
        while True:
            if not self._items:
                if self._closed:
                    return
                await self._changed.wait()
                self._changed = trio.Event()
                continue
            head = self._items[0]
            with trio.move_on_at(head.deadline) as waiting:
                await places.acquire()
            if not waiting.cancelled_caught:
                self._items.popleft()
                await place(head.event, head.spec, trio.current_time() - (head.deadline - self.max_wait))
                continue
            now = trio.current_time()
            while self._items and self._items[0].deadline <= now:
                await expire(self._items.popleft().event)
