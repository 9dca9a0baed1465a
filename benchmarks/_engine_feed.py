"""A source of prebuilt events for `engine_overhead.py`: the engine without the receive path.

Registered through ``CONDUIT_PLUGINS=_engine_feed`` (with this directory on
``PYTHONPATH``). It loads a pool of trace matrices (an ``.npz`` made by the
benchmark with the simulator's default mix) in ``warm_up`` and emits
``events`` events at ``rate`` per second as a live source does (never
waiting for the engine; a full queue is counted as dropped). Each event gets
its own id and a matrix of the pool (shared, as the builder hands over a
fresh one per event: the engine, the workers and the sinks only read it).

It writes the main process's CPU time (``os.times``: every thread, no
children) to ``cpu_file`` as JSON: ``start`` when it emits the first event
(and creates ``cpu_file.start`` then),
``end`` when the engine has taken the last one and its queue stayed empty for
``drain`` seconds.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from conduit.event import Event
from conduit.hookspecs import hookimpl
from conduit.params import Params, param
from conduit.source import Source


class FeedParams(Params):
    pool: str = param(doc="the .npz of trace matrices (arr_0, arr_1, ...)")
    events: int = param(2000, "events to emit", ge=1)
    rate: float = param(200.0, "events per second", gt=0)
    run: int = param(1, "run number")
    cpu_file: str = param("", "where to write the main process's CPU times (JSON); '' = nowhere")
    drain: float = param(2.0, "seconds to wait, once the queue is empty after the last event, before `end`", ge=0)


class PrebuiltSource(Source):
    """Prebuilt events at a fixed rate (live: a full engine queue drops and counts)."""

    kind = "prebuilt"
    live = True
    Params = FeedParams

    def run_number(self):
        return self.params.run

    def total(self):
        return self.params.events

    def warm_up(self) -> None:
        with np.load(self.params.pool) as data:
            self._pool = [np.ascontiguousarray(data[k]) for k in sorted(data.files, key=lambda k: int(k[4:]))]

    async def run(self) -> None:
        import trio

        cpu = {"start": _cpu()}
        if self.params.cpu_file:  # the benchmark counts the other processes' CPU from here too
            open(self.params.cpu_file + ".start", "w").close()
        t0 = time.monotonic()
        period = 1.0 / self.params.rate
        n = 0
        while n < self.params.events:
            due = min(self.params.events, int((time.monotonic() - t0) / period) + 1)
            while n < due:
                await self.emit(Event(id=n, traces=self._pool[n % len(self._pool)], timestamp=1000 * n,
                                      timestamp_other=1000 * n))
                n += 1
            await trio.sleep(max(0.0, t0 + n * period - time.monotonic()))
        stats = self._queue.channel.statistics
        while stats().current_buffer_used:
            await trio.sleep(0.01)
        await trio.sleep(self.params.drain)
        cpu["end"] = _cpu()
        cpu["seconds"] = time.monotonic() - t0
        if self.params.cpu_file:
            with open(self.params.cpu_file, "w") as f:
                json.dump(cpu, f)


def _cpu() -> list[float]:
    times = os.times()
    return [times.user, times.system]


@hookimpl
def conduit_register_sources(register) -> None:
    register(PrebuiltSource)
