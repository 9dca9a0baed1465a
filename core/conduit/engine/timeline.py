"""What happens to the first events of a run, event by event (``[engine] timeline = "PATH"``; off by default).

For the first :data:`FIRST_EVENTS` events (by event id): when the dispatcher received it, skipped it or sent it
to a worker, when the answer came, the worker's wall and CPU time and minor page faults for the job, and each
sink's CPU time for it; for the whole run, every garbage collection of the main process (``gc.callbacks``:
when, generation, CPU seconds of the collecting thread). Written as JSON when the run ends (``benchmarks/end_to_end.py online --timeline``
summarises it). Timestamps are ``time.time()`` seconds; ``cpu`` and ``faults`` are the main process's so far.
"""

from __future__ import annotations

import gc
import json
import resource
import time
from pathlib import Path
from typing import Any

__all__ = ["Timeline", "FIRST_EVENTS", "job_usage"]

#: Events (by id) whose steps are noted.
FIRST_EVENTS = 2000


def job_usage() -> tuple[float, float, int]:
    """(wall s, this thread's CPU s, this process's minor page faults) now: a worker's job costs the difference."""
    return time.perf_counter(), time.thread_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Timeline:
    """The steps of the first events and every collection of the garbage collector, written to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.steps: list[tuple[int, str, float, float, int, Any]] = []
        self.collections: list[tuple[float, int, float, int]] = []  # (time, generation, CPU s, collected)
        self._gc_started = 0.0

    def start(self) -> None:
        """Watch the garbage collector from now on (until :meth:`write`)."""
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()  # CPU time: on a loaded machine wall time measures waiting
        else:
            self.collections.append((time.time(), info["generation"], time.thread_time() - self._gc_started,
                                     info.get("collected", 0)))

    def note(self, event_id: int, step: str, extra: Any = None) -> None:
        """Event ``event_id`` reached ``step`` now ("received", "skipped", "sent", "answered", "sink NAME")."""
        if event_id < FIRST_EVENTS:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.steps.append((event_id, step, time.time(), usage.ru_utime + usage.ru_stime, usage.ru_minflt,
                               extra))

    def write(self, **more: Any) -> None:
        """Stop watching the collector; write every step, every collection and ``more`` (JSON) to the path."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        data = {"columns": ["event", "step", "time", "cpu", "faults", "extra"], "steps": self.steps,
                "gc_columns": ["time", "generation", "cpu", "collected"], "gc": self.collections, **more}
        self.path.write_text(json.dumps(data))
