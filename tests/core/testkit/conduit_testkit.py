"""A small third-party-style plugin used by the core tests.

It is installed by the tests as a real distribution (a ``.dist-info`` with an
entry point in the ``conduit`` group) on a temporary ``sys.path`` entry, so
discovery goes through exactly the same path as any experiment's package.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import trio

from conduit.event import Event
from conduit.hookspecs import hookimpl
from conduit.params import Params, param
from conduit.source import Source
from conduit.stage import SinkStage, TransformStage


class CountingParams(Params):
    events: int = param(100, "number of events (0 = endless)", ge=0)
    traces: int = param(4, "traces per event", ge=0)
    rate: float = param(0.0, "events per second (0 = as fast as possible)", ge=0)
    run: int = param(7, "run number")
    grow: int = param(0, "event i has traces + grow * (i % 4) traces", ge=0)
    release_file: str = param("", "after the last event, once the engine has taken every event from its queue, "
                                  "create this file (what testkit.gate waits for); '' = never")
    fail_after: int = param(-1, "after this many events, fail inside a task of a nursery, as a source with one "
                                "task per connection does (-1 = never)", ge=-1)


def _event(i: int, n_traces: int) -> Event:
    traces = np.zeros((n_traces, 517), dtype=np.int16)
    traces[:, 4] = np.arange(n_traces)
    traces[:, 5:] = (i % 100) + np.arange(512, dtype=np.int16)[None, :] % 7
    return Event(id=i, traces=traces, timestamp=1000 * i)


class CountingSource(Source):
    """Events 0, 1, 2, ... with tiny deterministic traces (file-like: waits for the engine)."""

    kind = "counting"
    Params = CountingParams

    def total(self):
        return self.params.events or None

    def run_number(self):
        return self.params.run

    async def run(self) -> None:
        i = 0
        period = 1.0 / self.params.rate if self.params.rate else 0.0
        while self.params.events == 0 or i < self.params.events:
            if i == self.params.fail_after:
                async with trio.open_nursery() as connections:
                    connections.start_soon(self._fail)
            await self.emit(_event(i, self.params.traces + self.params.grow * (i % 4)))
            i += 1
            if period:
                await trio.sleep(period)
            elif i % 64 == 0:
                await trio.sleep(0)
        if self.params.release_file:
            await self._release_when_drained()

    async def _fail(self) -> None:
        raise ConnectionResetError(104, "connection reset by peer")

    async def _release_when_drained(self) -> None:
        """The engine's dispatcher has taken (and dispatched) every event once it waits on an empty queue."""
        stats = self._queue.channel.statistics
        while not (stats().current_buffer_used == 0 and stats().tasks_waiting_receive > 0):
            await trio.sleep(0.001)
        with open(self.params.release_file, "w"):
            pass

    def counters(self):
        return {"events emitted": self.emitted}


class LiveCountingSource(CountingSource):
    """Like ``counting`` but live: never waits for the engine (a DAQ stand-in)."""

    kind = "counting_live"
    live = True


class DoubleStage(TransformStage):
    """Stores 2 * event id as artifact ``doubled``."""

    name = "testkit.double"
    provides = ("doubled",)

    def process(self, event):
        event.artifacts["doubled"] = 2 * event.id


class ChecksumStage(TransformStage):
    """Stores the sum of the trace matrix and its shape, as the stage saw them (``checksum``)."""

    name = "testkit.checksum"
    provides = ("checksum",)

    def process(self, event):
        event.artifacts["checksum"] = (int(event.traces.astype(np.int64).sum()), list(event.traces.shape))


def expected_checksum(i: int, n_traces: int) -> tuple[int, list[int]]:
    """What ``testkit.checksum`` reports for event ``i`` of the counting source with ``n_traces`` traces."""
    traces = _event(i, n_traces).traces
    return int(traces.astype(np.int64).sum()), list(traces.shape)


class SlowParams(Params):
    seconds: float = param(0.01, "time spent per event (s)", ge=0)


class SlowStage(TransformStage):
    """Sleeps for a fixed time per event (a stand-in for expensive analysis)."""

    name = "testkit.slow"
    provides = ("slow",)
    Params = SlowParams

    def process(self, event):
        time.sleep(self.params.seconds)
        event.artifacts["slow"] = True


class GateParams(Params):
    release_file: str = param(doc="the first event waits until this file exists (the source creates it)")
    timeout: float = param(60.0, "give up waiting after this long (s)", gt=0)


class GateStage(TransformStage):
    """Holds the first event it sees until a file appears: the analysis is busy while the source runs on."""

    name = "testkit.gate"
    provides = ("gated",)
    Params = GateParams

    def __init__(self, params, context):
        super().__init__(params, context)
        self.waited = False

    def process(self, event):
        if not self.waited:
            self.waited = True
            deadline = time.monotonic() + self.params.timeout
            while not os.path.exists(self.params.release_file):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.params.release_file} never appeared")
                time.sleep(0.002)
        event.artifacts["gated"] = True


class FailParams(Params):
    fail_ids: list[int] = param([], "event ids on which to raise")


class FailStage(TransformStage):
    """Raises ValueError on chosen events."""

    name = "testkit.fail"
    requires = ("doubled",)
    provides = ("checked",)
    Params = FailParams

    def process(self, event):
        if event.id in self.params.fail_ids:
            raise ValueError(f"deliberate failure on {event.id}")
        event.artifacts["checked"] = event.artifacts["doubled"] // 2 == event.id


class CollectParams(Params):
    path: str = param("collected_{run}.jsonl", "JSON-lines file (template with {run})")
    lossless: bool = param(False, "never drop events for this sink")
    delay: float = param(0.0, "time spent per event (s)", ge=0)


class CollectSink(SinkStage):
    """Writes one JSON line per event (id, analysed, artifact names) and 'closed' at the end."""

    name = "testkit.collect"
    Params = CollectParams

    def is_lossless(self):
        return self.params.lossless

    def open(self):
        self.path = self.context.format_path(self.params.path)
        self.file = open(self.path, "w")

    def consume(self, event):
        if self.params.delay:
            time.sleep(self.params.delay)
        record = {"id": event.id, "analysed": event.analysed, "artifacts": sorted(event.artifacts),
                  "doubled": event.artifacts.get("doubled"), "run": event.run, "complete": event.complete}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def on_reset(self):
        self.file.write('"reset"\n')
        self.file.flush()

    def close(self):
        self.file.write('"closed"\n')
        self.file.close()

    def outputs(self):
        return [str(self.path)]


DESCRIPTION = "Print a greeting and exit with the status asked for (a plugin's own sub-command)."


def add_arguments(parser):
    parser.add_argument("--name", default="world")
    parser.add_argument("--status", type=int, default=0)


def main(args):
    print(f"hello {args.name} from testkit")
    return args.status


@hookimpl
def conduit_register_commands(register):
    register("testkit-hello", "conduit_testkit", "greet (testkit's own command)")


@hookimpl
def conduit_register_sources(register):
    register(CountingSource)
    register(LiveCountingSource)


@hookimpl
def conduit_register_stages(register):
    for cls in (DoubleStage, ChecksumStage, SlowStage, GateStage, FailStage, CollectSink):
        register(cls)
