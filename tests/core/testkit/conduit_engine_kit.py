"""Stages and a source for the engine's main-process paths (tests/core/test_core_engine_paths.py).

* ``enginekit.threads`` / ``enginekit.threads_inline``: lossless sinks writing, per event, its id and
  whether ``consume`` ran in the main thread (the engine's event loop) or another, and ``reset`` lines;
  the inline one raises StopRun on event ``stop_at``.
* ``enginekit.fn_source``: a live source whose events carry a lambda (``scale``) in their artifacts,
  which only cloudpickle can send to a worker; ``enginekit.apply_fn`` applies it (``scaled``).
"""

from __future__ import annotations

import threading

import numpy as np
import trio

from conduit.event import Event
from conduit.hookspecs import hookimpl
from conduit.params import Params, param
from conduit.source import Source
from conduit.stage import SinkStage, StopRun, TransformStage


class ThreadsParams(Params):
    path: str = param("threads.txt", "one line per event: its id and 'main' or 'thread'; 'reset' lines")
    stop_at: int = param(-1, "raise StopRun on this event id (-1 = never)")


class ThreadsSink(SinkStage):
    """Writes which thread each call ran in."""

    name = "enginekit.threads"
    Params = ThreadsParams
    lossless = True

    def open(self):
        self.file = open(self.context.format_path(self.params.path), "w")

    def consume(self, event):
        if event.id == self.params.stop_at:
            raise StopRun(f"stopped at event {event.id}")
        where = "main" if threading.current_thread() is threading.main_thread() else "thread"
        self.file.write(f"{event.id} {where}\n")

    def on_reset(self):
        self.file.write("reset\n")

    def close(self):
        self.file.close()


class InlineThreadsSink(ThreadsSink):
    name = "enginekit.threads_inline"
    inline = True


class FnParams(Params):
    events: int = param(50, "events to emit", ge=1)
    rate: float = param(500.0, "events per second", gt=0)


class FnSource(Source):
    """Live events carrying a lambda in their artifacts (``scale``: x -> 3 x)."""

    kind = "enginekit_fn"
    live = True
    Params = FnParams
    provides = ("scale",)

    def run_number(self):
        return 3

    async def run(self):
        for i in range(self.params.events):
            traces = np.zeros((4, 517), dtype=np.int16)
            traces[:, 5:] = i
            await self.emit(Event(id=i, traces=traces, artifacts={"scale": lambda x: 3 * x}))
            await trio.sleep(1.0 / self.params.rate)


class ApplyFn(TransformStage):
    """``scaled`` = scale(first sample of the traces) (the traces come through shared memory)."""

    name = "enginekit.apply_fn"
    requires = ("scale",)
    provides = ("scaled",)

    def process(self, event):
        event.artifacts["scaled"] = event.artifacts["scale"](int(event.traces[0, 5]))


class ScaledParams(Params):
    path: str = param("scaled.txt", "one line per event: id, analysed, scaled")


class ScaledSink(SinkStage):
    name = "enginekit.scaled"
    Params = ScaledParams
    lossless = True

    def open(self):
        self.file = open(self.context.format_path(self.params.path), "w")

    def consume(self, event):
        self.file.write(f"{event.id} {int(event.analysed)} {event.artifacts.get('scaled')}\n")

    def close(self):
        self.file.close()


@hookimpl
def conduit_register_sources(register):
    register(FnSource)


@hookimpl
def conduit_register_stages(register):
    for cls in (ThreadsSink, InlineThreadsSink, ApplyFn, ScaledSink):
        register(cls)
