"""The engine: one trio nursery that runs a pipeline from its source to its sinks.

::

    source task --events--> dispatcher --(slot free?)--> analysis tasks (worker pool)
                                 |  no slot, policy skip                 |
                                 v                                       v
                            done channel  <------------------------------+
                                 |
                             deliverer (restores source order)
                                 |--> sink task 1 (consume in a thread, one call at a time)
                                 |--> sink task 2 ...

Shutdown (end of input, ``--max-events``, SIGINT/SIGTERM): the source task is
cancelled or returns, its channel closes, in-flight events finish, sinks drain
and are closed, and a :class:`RunSummary` is returned. A second signal exits
the process at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

import trio

from ..config.pipeline import Pipeline
from ..event import Event
from ..source import Source
from ..stage import SinkStage, StageContext
from .metrics import Metrics, MetricsSnapshot
from .pool import ChainSpec, open_pool
from .status import StatusReporter

__all__ = ["run_pipeline", "RunSummary", "StopRun", "Engine"]

log = logging.getLogger("conduit.engine")


class StopRun(Exception):
    """Raised by a stage or sink that cannot go on (disk full, ...): the run stops cleanly."""


@dataclasses.dataclass
class RunSummary:
    """What a run did, for the summary table and for tests."""

    received: int
    analysed: int
    skipped: int
    delivered: int
    dropped: int
    complete: int
    incomplete: int
    failed: dict[str, int]
    stage_ms: dict[str, tuple[int, float, float]]  # stage -> (calls, mean ms, p99 ms)
    wall_seconds: float  # from the end of start-up (sinks open, workers warm) to the end of the run
    startup_seconds: float
    source_counters: dict[str, int]
    outputs: list[str]
    interrupted: bool
    error: str | None
    sink_dropped: dict[str, int]
    #: Everything lost, by reason (the source's frame losses, events dropped by the engine and sinks).
    losses: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.error else 0


def _resolve_workers(requested: int) -> int:
    if requested >= 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Engine:
    """One run of one pipeline. Use :func:`run_pipeline`."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_events: int | None = None,
        status_stream: Any = None,
        handle_signals: bool = True,
        on_event: Callable[[Event], None] | None = None,
    ):
        self.pipeline = pipeline
        self.engine_params = pipeline.engine
        self.max_events = max_events if max_events is not None else (pipeline.engine.max_events or None)
        self.handle_signals = handle_signals
        self.on_event = on_event
        self.metrics = Metrics()
        self.context = StageContext(detector=pipeline.detector, base_dir=pipeline.base_dir.resolve())
        self.source: Source = pipeline.source.cls(pipeline.source.params, self.context)
        self.context.run = self.source.run_number()
        if self.context.run is None:
            self.context.run = getattr(pipeline.source.params, "run", None)
        self.live = self.source.live
        policy = pipeline.engine.policy
        self.policy = ("skip" if self.live else "wait") if policy == "auto" else policy
        self.workers = _resolve_workers(pipeline.engine.workers)
        self.max_in_flight = pipeline.engine.max_in_flight or max(2 * self.workers, 2)
        self.sinks: list[SinkStage] = []
        self.status = StatusReporter(status_stream if status_stream is not None else sys.stderr,
                                     interval=pipeline.engine.status_interval)
        self.error: str | None = None
        self.interrupted = False
        self._source_scope = trio.CancelScope()
        self._stop_requested = False
        self._queue_stats: Callable[[], int] = lambda: 0
        self._last_snapshot: MetricsSnapshot | None = None
        self._resets = 0  # SIGUSR1 count; each sink task catches up with it
        self._total: int | None = None  # events expected (progress bar), once known
        self.startup_seconds = 0.0

    # -- control ---------------------------------------------------------------

    def request_stop(self, reason: str | None = None, *, error: bool = False) -> None:
        """Stop reading the source; everything already received is still processed."""
        if error and self.error is None:
            self.error = reason
        if not self._stop_requested:
            self._stop_requested = True
            if reason:
                (log.error if error else log.info)(reason)
        self._source_scope.cancel()

    def losses(self) -> dict[str, int]:
        """Everything lost so far, by reason: the source's (frames), then events the engine dropped
        (``queue_full_events``: a live source outran the engine queue) and each sink could not take."""
        losses = dict(self.source.losses())
        losses["queue_full_events"] = self.source.dropped
        for name, dropped in self.metrics.sink_dropped.items():
            losses[f"sink_{name}_dropped"] = dropped
        return losses

    # -- run -------------------------------------------------------------------

    async def run(self) -> RunSummary:
        transforms = [(s.cls, s.params) for s in self.pipeline.transforms]
        spec = ChainSpec.create(transforms, self.context)
        try:
            self._open_sinks()
        except Exception as err:
            self.error = f"{err}"
            log.error("%s", err)
            self._close_sinks()
            return self._summary()
        try:
            async with open_pool(spec, self.workers) as pool:
                # Source kernels compile in a thread while the workers start and load theirs.
                async with trio.open_nursery() as warming:
                    warming.start_soon(trio.to_thread.run_sync, self.source.warm_up)
                    warm = await pool.warm_up()
                if warm > 0.05:
                    log.info("workers ready in %.2f s (%d %s)", warm, max(self.workers, 1),
                             "processes" if self.workers else "thread")
                # Rates and wall time count from here: start-up is reported on its own.
                self.startup_seconds = self.metrics.elapsed()
                self.metrics.restart_clock()
                await self._run_graph(pool)
        except* Exception as group:
            for err in _leaves(group):
                if self.error is None:
                    self.error = f"{type(err).__name__}: {err}" if not isinstance(err, (StopRun, OSError)) else str(err)
                log.error("run stopped: %s", self.error)
                log.debug("details", exc_info=err)
        finally:
            self._close_sinks()
        return self._summary()

    async def _run_graph(self, pool) -> None:
        events_send, events_recv = trio.open_memory_channel[Event](self.engine_params.queue_size)
        done_send, done_recv = trio.open_memory_channel[Event](self.max_in_flight + self.engine_params.queue_size)
        sink_channels = [trio.open_memory_channel[Event](self.engine_params.sink_queue_size) for _ in self.sinks]
        self._queue_stats = lambda: events_recv.statistics().current_buffer_used
        self.source.attach(events_send)

        async with trio.open_nursery() as helpers:
            if self.handle_signals:
                helpers.start_soon(self._watch_signals)
            helpers.start_soon(self._metrics_ticker)
            async with trio.open_nursery() as work:
                for sink, (_, recv) in zip(self.sinks, sink_channels):
                    work.start_soon(self._sink_task, sink, recv)
                work.start_soon(self._source_task, events_send)
                work.start_soon(self._dispatch, pool, events_recv, done_send)
                work.start_soon(self._deliver, done_recv, [s for s, _ in sink_channels])
            # Everything drained and every sink saw its last event: stop the helpers.
            helpers.cancel_scope.cancel()

    async def _source_task(self, events_send) -> None:
        async with events_send:
            with self._source_scope:
                try:
                    await self.source.run()
                except Exception as err:
                    self.error = f"source '{self.pipeline.source.kind}': {err}"
                    log.error("%s", self.error)

    async def _dispatch(self, pool, events_recv, done_send) -> None:
        slots = trio.Semaphore(self.max_in_flight)
        async with done_send, events_recv:
            async with trio.open_nursery() as analysing:
                async for event in events_recv:
                    if self.max_events is not None and self.metrics.received >= self.max_events:
                        self.request_stop(f"reached --max-events {self.max_events}")
                        continue  # drain what the source already queued, without processing it
                    event.sequence = self.metrics.received
                    self.metrics.received += 1
                    if event.complete:
                        self.metrics.complete += 1
                    else:
                        self.metrics.incomplete += 1
                    if self.max_events is not None and self.metrics.received >= self.max_events:
                        self.request_stop()
                    if not self.pipeline.transforms:
                        await done_send.send(event)
                        continue
                    if self.policy == "skip":
                        try:
                            slots.acquire_nowait()
                        except trio.WouldBlock:
                            self.metrics.skipped += 1
                            await done_send.send(event)
                            continue
                    else:
                        await slots.acquire()
                    self.metrics.in_flight += 1
                    analysing.start_soon(self._analyse, pool, event, slots, done_send.clone())

    async def _analyse(self, pool, event: Event, slots: trio.Semaphore, done_send) -> None:
        async with done_send:
            try:
                result = await pool.analyse(event)
            except Exception as err:  # a worker crashed: count it against the chain
                log.error("event %d: analysis worker failed: %s", event.id, err)
                self.metrics.times("engine.worker").failures += 1
                if self.engine_params.on_stage_error == "stop":
                    self.request_stop(f"event {event.id}: worker failed: {err}", error=True)
            else:
                event.analysed = True
                self.metrics.analysed += 1
                for stage, seconds in result.seconds.items():
                    self.metrics.times(stage).add(seconds)
                for failure in result.failures:
                    self.metrics.times(failure.stage).failures += 1
                    log.error("event %d: stage %s failed: %s", event.id, failure.stage, failure.error)
                    log.debug("%s", failure.traceback)
                    if self.engine_params.on_stage_error == "stop":
                        self.request_stop(f"stopping: stage {failure.stage} failed on event {event.id} "
                                          f"(on_stage_error = \"stop\")", error=True)
            finally:
                self.metrics.in_flight -= 1
                slots.release()
            await done_send.send(event)

    async def _deliver(self, done_recv, sink_sends) -> None:
        pending: dict[int, Event] = {}
        next_sequence = 0
        async with done_recv:
            try:
                async for event in done_recv:
                    pending[event.sequence] = event
                    while next_sequence in pending:
                        ready = pending.pop(next_sequence)
                        next_sequence += 1
                        await self._fan_out(ready, sink_sends)
                # Events whose predecessors never came (cannot happen unless a task died): flush in order.
                for sequence in sorted(pending):
                    await self._fan_out(pending.pop(sequence), sink_sends)
            finally:
                for send in sink_sends:
                    await send.aclose()

    async def _fan_out(self, event: Event, sink_sends) -> None:
        self.metrics.delivered += 1
        if self.on_event is not None:
            self.on_event(event)
        for sink, send in zip(self.sinks, sink_sends):
            if self.policy == "skip" and not sink.is_lossless():
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    self.metrics.sink_dropped[sink.name] = self.metrics.sink_dropped.get(sink.name, 0) + 1
            else:
                await send.send(event)

    async def _sink_task(self, sink: SinkStage, recv) -> None:
        limiter = trio.CapacityLimiter(1)  # calls to one sink never overlap
        times = self.metrics.times(sink.name)
        seen_snapshot = None
        resets_seen = 0
        stopped = False
        async with recv:
            while True:
                event = None
                try:
                    with trio.move_on_after(0.25):
                        event = await recv.receive()
                except trio.EndOfChannel:
                    if not stopped:  # the source is done: its final counts (losses ...) before close()
                        await self._last_metrics_to(sink, limiter)
                    break
                if event is not None and stopped:
                    self.metrics.sink_dropped[sink.name] = self.metrics.sink_dropped.get(sink.name, 0) + 1
                elif event is not None:
                    t0 = time.perf_counter()
                    try:
                        await trio.to_thread.run_sync(sink.consume, event, limiter=limiter)
                    except StopRun as err:
                        times.failures += 1
                        stopped = True  # the sink said it cannot go on: stop feeding it
                        self.request_stop(f"{sink.name}: {err}", error=True)
                    except Exception as err:
                        times.failures += 1
                        log.error("event %d: sink %s failed: %s", event.id, sink.name, err)
                        if self.engine_params.on_stage_error == "stop":
                            self.request_stop(f"stopping: sink {sink.name} failed on event {event.id}", error=True)
                    finally:
                        times.add(time.perf_counter() - t0)
                if resets_seen < self._resets and not stopped:
                    resets_seen = self._resets
                    await trio.to_thread.run_sync(sink.on_reset, limiter=limiter)
                snap = self._last_snapshot
                if snap is not None and snap is not seen_snapshot and not stopped:
                    seen_snapshot = snap
                    try:
                        await trio.to_thread.run_sync(sink.on_metrics, snap, limiter=limiter)
                    except Exception as err:  # a metrics display must never stop a run
                        log.debug("sink %s on_metrics failed: %s", sink.name, err)

    async def _last_metrics_to(self, sink: SinkStage, limiter: trio.CapacityLimiter) -> None:
        """One last snapshot for a sink whose events are all delivered (the source is done: its losses are
        final), before it is closed: the hdf5 sink records the final loss counts from it."""
        snap = self._snapshot(self._total)
        try:
            await trio.to_thread.run_sync(sink.on_metrics, snap, limiter=limiter)
        except Exception as err:  # a metrics display must never stop a run
            log.debug("sink %s on_metrics failed: %s", sink.name, err)

    async def _metrics_ticker(self) -> None:
        total = self.source.total()
        if self.max_events is not None and total is not None:
            total = min(total, self.max_events)
        elif self.max_events is not None:
            total = self.max_events
        self._total = total
        self.status.start(total)
        while True:
            self._last_snapshot = self._snapshot(total)
            self.status.update(self._last_snapshot)
            await trio.sleep(1.0 if not self.status.is_tty else 0.25)

    def _snapshot(self, total: int | None) -> MetricsSnapshot:
        return self.metrics.snapshot(
            queue_depth=self._queue_stats(),
            source_status=self.source.status(),
            byte_counts=self.source.byte_counts(),
            dropped=self.source.dropped,
            total=total,
            losses=self.losses(),
        )

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    self._resets += 1
                    log.info("SIGUSR1: resetting histograms and running totals")
                elif not self.interrupted:
                    self.interrupted = True
                    self.status.clear()
                    print(f"\n{signal.Signals(signum).name}: finishing events in flight and closing outputs "
                          "(again to exit at once)", file=sys.stderr, flush=True)
                    self.request_stop()
                else:
                    print("interrupted again: exiting now", file=sys.stderr, flush=True)
                    os._exit(130)

    # -- sinks -------------------------------------------------------------------

    def _open_sinks(self) -> None:
        for config in self.pipeline.sinks:
            sink = config.cls(config.params, self.context)
            try:
                sink.open()
            except Exception as err:
                raise RuntimeError(f"sink {config.use}: cannot open: {err}") from err
            self.sinks.append(sink)

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:
                log.error("sink %s: error while closing: %s", sink.name, err)
                if self.error is None:
                    self.error = f"sink {sink.name}: {err}"

    def _summary(self) -> RunSummary:
        self.status.clear()
        stage_ms = {
            name: (t.count, t.mean_ms(), t.p99_ms()) for name, t in self.metrics.stage_times.items()
        }
        outputs = [o for s in self.sinks for o in s.outputs()]
        return RunSummary(
            received=self.metrics.received,
            analysed=self.metrics.analysed,
            skipped=self.metrics.skipped,
            delivered=self.metrics.delivered,
            dropped=self.source.dropped,
            complete=self.metrics.complete,
            incomplete=self.metrics.incomplete,
            failed={n: t.failures for n, t in self.metrics.stage_times.items() if t.failures},
            stage_ms=stage_ms,
            wall_seconds=self.metrics.elapsed(),
            startup_seconds=self.startup_seconds,
            source_counters=self.source.counters(),
            outputs=outputs,
            interrupted=self.interrupted,
            error=self.error,
            sink_dropped=dict(self.metrics.sink_dropped),
            losses=self.losses(),
        )


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out = []
    for err in group.exceptions:
        if isinstance(err, BaseExceptionGroup):
            out.extend(_leaves(err))
        else:
            out.append(err)
    return out


def run_pipeline(pipeline: Pipeline, **kwargs: Any) -> RunSummary:
    """Run ``pipeline`` to completion in a fresh trio loop and return its summary."""
    engine = Engine(pipeline, **kwargs)
    return trio.run(engine.run)
