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

Start-up: every sink opens (claiming its output paths, touching no existing
file), the workers and the source warm up, then every sink *begins* (moves an
existing output aside and creates its files). A signal or an error before that
point leaves every existing file as it was.

Shutdown (end of input, ``--max-events``, SIGINT/SIGTERM): the source task is
cancelled or returns, its channel closes, in-flight events finish, sinks drain
and are closed (in a thread, so signals are still seen), and a
:class:`RunSummary` is returned. A second signal exits the process at once,
also while the sinks close (an hdf5 recording then stays readable as file +
parts and is consolidated at the next run on its path).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from functools import partial
from typing import Any, Callable

import trio

from ..config.pipeline import Pipeline
from ..event import Event
from ..ratelog import RateLimitedLog
from ..source import Source, SourceError
from ..shared import Shared
from ..stage import RunContext, RunNumberMissing, SinkStage, StopRun
from .backlog import FULL, WAITED, AnalysisBacklog
from .control import EngineControl, ParameterChange, RunSwitch
from .metrics import Metrics, MetricsSnapshot
from .outcomes import StageOutcomes
from .pool import WORKER_NICENESS, ChainSpec, StageSetupError, default_in_flight, open_pool
from .status import StatusReporter
from .timeline import Timeline

__all__ = ["run_pipeline", "RunSummary", "StopRun", "Engine"]

log = logging.getLogger("conduit.engine")


@dataclasses.dataclass
class _SinkNote:
    """What every sink is told between the same two events, in delivery order: a reset, or a parameter change."""

    change: ParameterChange | None = None  # None: reset
    params: dict[int, Any] = dataclasses.field(default_factory=dict)  # sink index -> new parameters

    def apply(self, sink: SinkStage, index: int) -> None:
        if self.change is None:
            sink.on_reset()
            return
        if index in self.params:
            sink.update_params(self.params[index])
        sink.on_parameters(self.change)


@dataclasses.dataclass
class _Delivery:
    """The deliverer's place in the event sequence (kept across new runs)."""

    pending: dict[int, Event] = dataclasses.field(default_factory=dict)
    next: int = 0
    ended: bool = False


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
    sink_dropped: dict[str, int]  # events the engine never passed to the sink (it was behind or had stopped)
    sink_lost: dict[str, int] = dataclasses.field(default_factory=dict)  # consumed, then lost in a failed write
    #: False when the run ended (error or signal) before its first event could flow.
    started: bool = True
    #: Everything lost, by reason (the source's frame losses, events dropped by the engine and sinks).
    losses: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Events not analysed while analysis was paused (the control API); recorded all the same.
    paused: int = 0
    #: Events taken from the queue after an error stopped the run (StopRun, on_stage_error = "stop"):
    #: recorded without analysis.
    halted: int = 0
    #: Per stage: ``events``, ``failed``, ``skipped``, ``empty``, ``counts`` by reason
    #: (:meth:`conduit.engine.metrics.StageTimes.report`).
    stages: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: The skipped events by reason (``full``: every analysis place and the backlog taken; ``waited``: waited
    #: ``[engine] backlog_ms`` in the backlog); their sum is ``skipped``.
    skipped_by: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Events analysed after waiting in the backlog, and the most that waited at once.
    backlogged: int = 0
    backlog_peak: int = 0

    @property
    def exit_code(self) -> int:
        """1 on an error, 130 when interrupted during start-up, else 0 (also after Ctrl-C mid-run)."""
        if self.error:
            return 1
        return 130 if self.interrupted and not self.started else 0

    def not_written(self, sink: str) -> int:
        """Events a sink received from the engine's point of view but did not keep."""
        return self.sink_dropped.get(sink, 0) + self.sink_lost.get(sink, 0)


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
        run: int | None = None,
    ):
        self.pipeline = pipeline
        self.engine_params = pipeline.engine
        self.max_events = max_events if max_events is not None else (pipeline.engine.max_events or None)
        self.handle_signals = handle_signals
        self.on_event = on_event
        self.metrics = Metrics()
        #: Per-event errors (a stage or sink failing on every event): the first few of each, then a count.
        self.error_log = RateLimitedLog(log, interval=10.0, first=3)
        self.context = RunContext(detector=pipeline.detector, base_dir=pipeline.base_dir.resolve(),
                                    pipeline=tuple((s.use, s.params) for s in pipeline.stages),
                                    existing_outputs=pipeline.engine.existing_outputs)
        self.source: Source = pipeline.source.cls(pipeline.source.params, self.context)
        self.context.run = run if run is not None else self.source.run_number()
        if self.context.run is None:
            self.context.run = getattr(pipeline.source.params, "run", None)
        self.live = self.source.live
        self.context.live = self.live
        # A live run's output names never get a silent run 0000 (see RunContext.format_path).
        self.context.require_run = self.live
        policy = pipeline.engine.policy
        self.policy = ("skip" if self.live else "wait") if policy == "auto" else policy
        self.workers = _resolve_workers(pipeline.engine.workers)
        self.max_in_flight = pipeline.engine.max_in_flight or default_in_flight(self.workers)
        #: Live events that find every analysis place taken wait here a bounded time (policy skip).
        self._backlog = AnalysisBacklog(pipeline.engine.backlog, pipeline.engine.backlog_ms / 1e3)
        self.sinks: list[SinkStage] = []
        self.status = StatusReporter(status_stream if status_stream is not None else sys.stderr,
                                     interval=pipeline.engine.status_interval)
        self.error: str | None = None
        self.interrupted = False
        self.phase = "starting"  # then "running", then "closing"
        self.started = False
        self._closing: str | None = None  # the sink being closed
        self._startup_scope = trio.CancelScope()
        self._source_scope = trio.CancelScope()
        self._stop_requested = False
        self._queue_stats: Callable[[], int] = lambda: 0
        self._last_snapshot: MetricsSnapshot | None = None
        self._total: int | None = None  # events expected (progress bar), once known
        self.startup_seconds = 0.0
        #: Analysis paused by the control API (events are still received and recorded).
        self.paused = False
        #: The transform chain new events are analysed with (replaced when parameters change).
        self._spec: ChainSpec | None = None
        #: Notes for the sinks, each due before the event of its sequence number (resets, parameter changes).
        self._notes: list[tuple[int, _SinkNote]] = []
        #: Changes waiting for their first event (to learn its id).
        self._awaiting: list[ParameterChange] = []
        #: A new run requested through the control API (done by the deliverer at an event boundary).
        self.switch: RunSwitch | None = None
        #: Runs closed by a new-run switch: {"run", "outputs", "last_sequence", "closed_at"}.
        self.closed_runs: list[dict[str, Any]] = []
        self._closed_outputs: list[str] = []
        self._closed_lost: dict[str, int] = {}
        #: What each transform stage did with its events (skips, empty outputs, counts), and warnings about it.
        self.outcomes = StageOutcomes(self.metrics, [(s.use, *s.cls.artifacts(s.params))
                                                     for s in pipeline.transforms])
        #: Set when an error stops the run: what is still queued is recorded without analysis.
        self._halted = False
        self._analysed_at_halt = 0
        self.control = EngineControl(self)
        #: The first events' steps, when ``[engine] timeline`` names a file.
        self.timeline = Timeline(pipeline.engine.timeline) if pipeline.engine.timeline else None

    # -- control (the public API is .control.EngineControl) --------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def request_stop(self, reason: str | None = None, *, error: bool = False) -> None:
        """Stop reading the source; everything already received is still processed.

        With ``error`` (a StopRun, ``on_stage_error = "stop"``) analysis stops
        too: events in flight finish, what is still queued is recorded unanalysed.
        """
        if error and self.error is None:
            self.error = reason
        if error and not self._halted:
            self._halted = True
            self._analysed_at_halt = self.metrics.analysed
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

    def request_reset(self, who: str) -> int:
        """Every sink's ``on_reset`` (histograms zeroed) before the next event; return that event's sequence number."""
        sequence = self.metrics.received
        self._notes.append((sequence, _SinkNote()))
        log.info("%s: resetting histograms and running totals from event #%d on", who, sequence)
        return sequence

    def interrupt(self, who: str) -> None:
        """Stop as Ctrl-C does: during start-up nothing is begun; running, events in flight finish."""
        self.interrupted = True
        self.status.clear()
        if self.phase == "starting":
            _say(f"\n{who} during start-up: stopping; nothing is recorded and existing files are "
                 "left as they were (again to exit at once)")
            self._startup_scope.cancel()
            self._source_scope.cancel()
        elif self.phase == "running":
            _say(f"\n{who}: finishing events in flight and closing outputs (again to exit at once)")
            self.request_stop()
        else:
            _say(f"\n{who}: closing outputs{self._closing_note()} (again to exit at once)")

    def apply_parameters(self, fresh: Pipeline, changed: list[int], change: ParameterChange) -> None:
        """Take the changed stages of ``fresh`` (validated by the control API) from the next event on."""
        for index in changed:
            self.pipeline.stages[index] = fresh.stages[index]
        self.context.pipeline = tuple((s.use, s.params) for s in self.pipeline.stages)
        # Always a new chain, also for a sink's change: a transform may read another stage's settings through
        # context.pipeline (kinematics: the histogram stage's gates). The workers build it when its first event
        # reaches them: every event from `change.sequence` on is analysed with it, every earlier one without.
        self._spec = ChainSpec.create([(s.cls, s.params) for s in self.pipeline.transforms], self.context)
        positions = {self.pipeline.stages[i].position for i in changed}
        params = {j: config.params for j, config in enumerate(self.pipeline.sinks) if config.position in positions}
        self._notes.append((change.sequence, _SinkNote(change, params)))
        self._awaiting.append(change)

    async def run(self) -> RunSummary:
        """Start up, run, close every sink; signals are watched from the first moment to the last."""
        async with trio.open_nursery() as guard:
            if self.handle_signals:
                await guard.start(self._watch_signals)
            try:
                await self._start_services(guard)
                await self._start_and_run()
            except* Exception as group:
                for err in _leaves(group):
                    if self.error is None:
                        self.error = self._describe(err)
                    log.error("run stopped: %s", self.error)
                    log.debug("details", exc_info=err)
            finally:
                self.phase = "closing"
                self.error_log.flush()  # the counts of per-event errors not logged since the last one
                with trio.CancelScope(shield=True):
                    if self.started:
                        self._final_metrics()
                    # In a thread, so that a second Ctrl-C during a long close (consolidation) is seen.
                    await trio.to_thread.run_sync(self._close_sinks)
                    if self.started:
                        self._judge_run()
                self.phase = "ended"
            guard.cancel_scope.cancel()
        return self._summary()

    async def _start_services(self, nursery) -> None:
        """Start every enabled service (the control panel ...) in ``nursery``; it runs until the run has ended."""
        for config in self.pipeline.services.values():
            if config.cls.enabled(config.params):
                service = config.cls(config.params, self.control)
                await nursery.start(self._run_service, service)

    async def _run_service(self, service, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """A service that fails to start stops the run before anything is opened; one failing later is logged."""
        started = False

        class _Status:
            def started(self, value=None) -> None:
                nonlocal started
                started = True
                task_status.started(value)

        try:
            await service.run(task_status=_Status())
        except Exception as err:
            if not started:
                raise RuntimeError(f"{service.name}: {error_text(err)}") from err
            log.error("%s stopped: %s (the run goes on)", service.name, error_text(err))

    def _describe(self, err: BaseException) -> str:
        """One line for an error that ended the run."""
        if isinstance(err, SourceError):  # a source names its file or host itself
            return f"source '{self.pipeline.source.kind}': {err}"
        return error_text(err)

    async def _start_and_run(self) -> None:
        """Open the sinks, start and warm the workers and the source, begin the sinks, then run.

        Nothing may replace or create an output before every sink has opened and
        the source and workers are ready: sinks do that in ``begin()``. A signal
        during start-up cancels ``_startup_scope``; the sinks are then closed
        without having begun, so every existing file stays as it was.
        """
        transforms = [(s.cls, s.params) for s in self.pipeline.transforms]
        spec = self._spec = ChainSpec.create(transforms, self.context)
        async with contextlib.AsyncExitStack() as stack:
            polling = await self._hold_signals(stack)
            niceness = WORKER_NICENESS if self.live else 0  # a replay has no receivers to protect
            # Entered here, outside the start-up scope: the pool's nursery lives until the run ends. Its
            # processes start in warm_up(), below.
            pool = await stack.enter_async_context(open_pool(spec, self.workers, niceness=niceness))
            share = getattr(self.source, "share_trace_memory", None)  # frame sources: traces built in the slots
            # Trace slots made during start-up, not in the first second of serving (their page faults): one per
            # event a frame source may build in them at a time, else one per event in flight.
            slots = self.max_in_flight
            if share is not None and pool.trace_memory is not None:
                share(pool.trace_memory)
                slots = pool.slots.max_lent
            with self._startup_scope:
                try:
                    await trio.to_thread.run_sync(self._open_sinks)
                except Exception as err:
                    self.error = f"{err}"
                    log.error("%s", err)
                    return
                # Source kernels compile in a thread while the workers start and load theirs. With no worker
                # process the chain compiles in this process too: one after the other, because numba compiling
                # in two threads at once trips CPython 3.11's parser ("AST constructor recursion depth
                # mismatch", cpython#106905).
                async with trio.open_nursery() as warming:
                    warm_source = partial(trio.to_thread.run_sync, self.source.warm_up, abandon_on_cancel=True)
                    if self.workers:
                        warming.start_soon(warm_source)
                    else:
                        await warm_source()
                    warm = await pool.warm_up(slots)
                if warm > 0.05:
                    log.info("workers ready in %.2f s (%d %s)", warm, max(self.workers, 1),
                             "processes" if self.workers else "thread")
                with trio.CancelScope(shield=True):  # begun or not: never half of it
                    await trio.to_thread.run_sync(self._begin_sinks)
                self.started = True
            if not self.started:
                return  # interrupted during start-up: nothing was begun
            if polling is not None:
                polling.cancel()
                _release_held_signals()
            self.phase = "running"
            # Rates and wall time count from here: start-up is reported on its own.
            self.startup_seconds = self.metrics.elapsed()
            self.metrics.restart_clock()
            if self.timeline is None:
                await self._run_graph(pool)
                return
            self.timeline.start()
            try:
                await self._run_graph(pool)
            finally:
                made = pool.slots
                self.timeline.write(trace_slots=None if made is None else {
                    "segments": made.segments, "lent": made.lent, "handed": made.handed, "copies": made.copies})

    async def _hold_signals(self, stack: contextlib.AsyncExitStack) -> trio.CancelScope | None:
        """Hold SIGINT/SIGTERM in this thread for start-up; return the scope of the task that takes them.

        Worker processes start during start-up; a terminal's Ctrl-C reaches the
        whole process group, and a worker still importing would die with a
        traceback. Holding the signals in this thread holds them in every thread
        and process started from now on (masks are inherited); the workers
        ignore them for good once they run, and ``_poll_held_signals`` takes
        them from the pending set for this process. (multiprocessing's resource
        tracker, started with the first worker, unblocks them in the thread that
        starts it: start it first. CPython protects the tracker the same way,
        bpo-33613.)
        """
        if not (self.handle_signals and _CAN_HOLD):
            return None
        if self.workers > 0:
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
        stack.enter_context(_held_signals())
        holder = await stack.enter_async_context(trio.open_nursery())
        polling = await holder.start(self._poll_held_signals)
        stack.callback(polling.cancel)
        return polling

    async def _run_graph(self, pool) -> None:
        events_send, events_recv = trio.open_memory_channel[Event](self.engine_params.queue_size)
        done_send, done_recv = trio.open_memory_channel[Event](self.max_in_flight + self.engine_params.queue_size)
        self._queue_stats = lambda: events_recv.statistics().current_buffer_used
        self.source.attach(events_send)

        async with trio.open_nursery() as helpers:
            helpers.start_soon(self._metrics_ticker)
            async with trio.open_nursery() as work:
                work.start_soon(self._source_task, events_send)
                work.start_soon(self._dispatch, pool, events_recv, done_send)
                work.start_soon(self._deliver, done_recv)
            # Everything drained and every sink saw its last event: stop the helpers.
            helpers.cancel_scope.cancel()
        if self._halted:
            log.warning("stopped after an error: %d events in flight finished their analysis, %d events still "
                        "queued were recorded without analysis", self.metrics.analysed - self._analysed_at_halt,
                        self.metrics.halted)

    async def _source_task(self, events_send) -> None:
        async with events_send:
            with self._source_scope:
                try:
                    await self.source.run()
                except Exception as err:
                    self.error = f"source '{self.pipeline.source.kind}': {_what_failed(err)}"
                    log.error("%s", self.error, exc_info=log.isEnabledFor(logging.DEBUG))

    async def _dispatch(self, pool, events_recv, done_send) -> None:
        slots = trio.Semaphore(self.max_in_flight)
        # A fixed set of analysis tasks, one per place, fed through a channel: not a new task per analysed
        # event. An event is handed over only once it holds a place, so the hand-over never waits.
        to_analyse, analyse_recv = trio.open_memory_channel[tuple[Event, ChainSpec]](self.max_in_flight)
        backlog = self._backlog
        async with done_send, events_recv:
            async with trio.open_nursery() as analysing:
                async with to_analyse:  # closed once the dispatcher and the backlog are done: the tasks end
                    with analyse_recv:
                        for _ in range(self.max_in_flight if self.pipeline.transforms else 0):
                            analysing.start_soon(self._analyser, pool, analyse_recv.clone(), slots, done_send)
                    async with trio.open_nursery() as dispatching:
                        if self.policy == "skip" and backlog.enabled and self.pipeline.transforms:
                            dispatching.start_soon(
                                backlog.feed, slots, partial(self._place_waiting, slots, to_analyse, done_send),
                                partial(self._skip_waiting, done_send))
                        try:
                            await self._dispatch_events(events_recv, done_send, slots, to_analyse)
                        finally:
                            backlog.close()  # what waits is still placed or skipped, then the feeder ends

    async def _dispatch_events(self, events_recv, done_send, slots: trio.Semaphore, to_analyse) -> None:
        """Number each event from the source, then hand it to an analysis place, the backlog, or the sinks."""
        backlog = self._backlog
        while (event := await _next(events_recv)) is not None:
            if self.max_events is not None and self.metrics.received >= self.max_events:
                self.request_stop(f"reached --max-events {self.max_events}")
                continue  # drain what the source already queued, without processing it
            event.sequence = self.metrics.received
            if self.timeline is not None:
                self.timeline.note(event.id, "received")
            self.metrics.received += 1
            spec = self._spec  # taken with the sequence number: a parameter change applies from here
            if self._awaiting:
                self._first_event_of_change(event)
            if event.complete:
                self.metrics.complete += 1
            else:
                self.metrics.incomplete += 1
            if self.max_events is not None and self.metrics.received >= self.max_events:
                self.request_stop()
            if not self.pipeline.transforms:
                await _pass_on(done_send, event)
                continue
            if self._halted:  # an error stopped the run: record what is queued, analyse no more
                await self._record_unanalysed(event, done_send)
                continue
            if self.paused:  # recorded all the same, counted apart from the skipped ones
                self.metrics.paused += 1
                await _pass_on(done_send, event)
                continue
            if self.policy == "skip":
                # Oldest first: while events wait in the backlog, a place that frees goes to the oldest of them.
                if len(backlog) or not _acquired(slots):
                    if backlog.offer(event, spec):
                        self.metrics.backlog_peak = backlog.peak
                        if self.timeline is not None:
                            self.timeline.note(event.id, "waiting")
                    else:
                        self._skip(event, FULL)
                        await _pass_on(done_send, event)
                    continue
            else:
                await slots.acquire()
                if self._halted:  # the run stopped while this event waited for a slot
                    slots.release()
                    await self._record_unanalysed(event, done_send)
                    continue
            self.metrics.in_flight += 1
            to_analyse.send_nowait((event, spec))

    def _skip(self, event: Event, reason: str) -> None:
        """Count ``event`` as skipped for ``reason`` (it goes to the sinks unanalysed)."""
        self.metrics.skip(reason)
        if self.timeline is not None:
            self.timeline.note(event.id, "skipped", reason)

    async def _place_waiting(self, slots: trio.Semaphore, to_analyse, done_send, event: Event, spec: ChainSpec,
                             waited: float) -> None:
        """An event from the backlog got an analysis place (held) after ``waited`` s: analyse it, unless an
        error stopped the analysis meanwhile."""
        if self._halted:
            slots.release()
            await self._record_unanalysed(event, done_send)
            return
        self.metrics.backlogged += 1
        if self.timeline is not None:
            self.timeline.note(event.id, "placed", waited)
        self.metrics.in_flight += 1
        to_analyse.send_nowait((event, spec))

    async def _skip_waiting(self, done_send, event: Event) -> None:
        """An event waited in the backlog as long as it may: skipped (or, after an error stopped the
        analysis, recorded unanalysed as the other queued events are)."""
        if self._halted:
            await self._record_unanalysed(event, done_send)
            return
        self._skip(event, WAITED)
        await _pass_on(done_send, event)

    async def _record_unanalysed(self, event: Event, done_send) -> None:
        """After an error stopped the run: the event goes to the sinks without analysis, counted."""
        self.metrics.halted += 1
        await done_send.send(event)

    def _first_event_of_change(self, event: Event) -> None:
        """Name the event a parameter change applies from, and log it."""
        for change in [c for c in self._awaiting if c.sequence == event.sequence]:
            change.event = event.id
            self._awaiting.remove(change)
            log.info("parameters in force from event %d (#%d): %s", event.id, event.sequence, change.describe())

    async def _analyser(self, pool, events, slots: trio.Semaphore, done_send) -> None:
        """One of the dispatcher's analysis tasks: analyse the events handed to it until the dispatcher ends."""
        async with events:
            async for event, spec in events:
                await self._analyse(pool, event, slots, done_send, spec)

    async def _analyse(self, pool, event: Event, slots: trio.Semaphore, done_send, spec: ChainSpec) -> None:
        # done_send is the dispatcher's own: it closes after this nursery, i.e. after every analysis ended
        if self.timeline is not None:
            self.timeline.note(event.id, "sent")
        try:
            result = await pool.analyse(event, spec)
            if self.timeline is not None:
                self.timeline.note(event.id, "answered", result.job)
        except Exception as err:  # a worker crashed: count it against the chain
            self.error_log("worker", logging.ERROR, "event %d: analysis worker failed: %s", event.id,
                           error_text(err))
            self.metrics.times("engine.worker").failures += 1
            event.failures["engine.worker"] = f"{type(err).__name__}: {err}"  # what sinks and HDF5 see
            if self.engine_params.on_stage_error == "stop":
                self.request_stop(f"event {event.id}: worker failed: {err}", error=True)
        else:
            event.analysed = True
            self.metrics.analysed += 1
            for stage, seconds in result.seconds.items():
                self.metrics.times(stage).add(seconds)
            self.outcomes.account(result)
            for failure in result.failures:
                self.metrics.times(failure.stage).failures += 1
                self.error_log(f"stage {failure.stage}", logging.ERROR, "event %d: stage %s failed: %s",
                               event.id, failure.stage, failure.error)
                log.debug("%s", failure.traceback)
                if failure.stop:  # the stage cannot go on
                    self.request_stop(f"stage {failure.stage}: {failure.error.removeprefix('StopRun: ')}",
                                      error=True)
                elif self.engine_params.on_stage_error == "stop":
                    self.request_stop(f"stopping: stage {failure.stage} failed on event {event.id} "
                                      f"(on_stage_error = \"stop\")", error=True)
        finally:
            self.metrics.in_flight -= 1
            slots.release()
        await done_send.send(event)

    async def _deliver(self, done_recv) -> None:
        """Hand events to the sinks in source order; between two events, switch to a new run when asked."""
        state = _Delivery()
        async with done_recv:
            while not await self._deliver_to_sinks(done_recv, state):
                await self._switch_run()

    async def _deliver_to_sinks(self, done_recv, state: _Delivery) -> bool:
        """Run the current sinks' tasks and feed them until the input ends (True) or a new run is due (False)."""
        channels = [trio.open_memory_channel[Event](self.engine_params.sink_queue_size) for _ in self.sinks]
        sends = [send for send, _ in channels]
        async with trio.open_nursery() as sink_tasks:
            for index, (sink, (_, recv)) in enumerate(zip(self.sinks, channels)):
                sink_tasks.start_soon(self._sink_task, sink, recv, index)
            try:
                while True:
                    await self._send_notes(state.next, sends)
                    if self.switch is not None and self.switch.sequence <= state.next:
                        return False
                    if state.next in state.pending:
                        ready = state.pending.pop(state.next)
                        state.next += 1
                        await self._fan_out(ready, sends)
                        continue
                    if state.ended:
                        # Events whose predecessors never came (cannot happen unless a task died): in order.
                        for sequence in sorted(state.pending):
                            await self._fan_out(state.pending.pop(sequence), sends)
                        return True
                    # Wake now and then so that a control request is carried out when no event comes.
                    try:
                        event = done_recv.receive_nowait()  # no trip round the loop per event while busy
                    except trio.WouldBlock:
                        with trio.move_on_after(0.1):
                            try:
                                event = await done_recv.receive()
                            except trio.EndOfChannel:
                                state.ended = True
                            else:
                                state.pending[event.sequence] = event
                    except trio.EndOfChannel:
                        state.ended = True
                    else:
                        state.pending[event.sequence] = event
            finally:
                for send in sends:
                    await send.aclose()

    async def _send_notes(self, sequence: int, sends) -> None:
        """Give every sink the notes due before event #``sequence`` (never dropped, even for a lossy sink)."""
        limit = min(sequence, self.switch.sequence) if self.switch is not None else sequence
        while self._notes and self._notes[0][0] <= limit:
            _, note = self._notes.pop(0)
            for send in sends:
                await send.send(note)

    async def _switch_run(self) -> None:
        """Close every sink (files complete), then open and begin them again for the requested run."""
        switch = self.switch
        assert switch is not None
        previous = self.context.run
        try:
            with trio.CancelScope(shield=True):  # never half of it
                await trio.to_thread.run_sync(self._final_metrics)
                closing = list(self.sinks)
                await trio.to_thread.run_sync(self._close_sinks)
                outputs = [o for sink in closing for o in sink.outputs()]
                switch.closed = outputs
                self._closed_outputs.extend(outputs)
                for sink in closing:
                    if lost := _unwritten(sink):
                        self._closed_lost[sink.name] = self._closed_lost.get(sink.name, 0) + lost
                self.closed_runs.append({"run": previous, "outputs": outputs, "last_sequence": switch.sequence - 1,
                                         "closed_at": time.time()})
                self.sinks = []
                self.context.run = switch.run
                self.context.shared = Shared()  # what sinks share (the histograms) belongs to one run
                try:
                    await trio.to_thread.run_sync(self._open_sinks)
                    await trio.to_thread.run_sync(self._begin_sinks)
                except Exception as err:
                    switch.error = f"run {switch.run}: {err}"
                    self.request_stop(switch.error, error=True)
                    return
            log.info("run %s ended after event #%d (%s); run %d started", previous, switch.sequence - 1,
                     ", ".join(outputs) or "no files", switch.run)
        finally:
            self.switch = None
            switch.done.set()

    async def _fan_out(self, event: Event, sink_sends) -> None:
        self.metrics.delivered += 1
        if self.closed_runs and event.run != self.context.run:
            event.run = self.context.run  # received before a new-run switch, recorded after it
        if self.on_event is not None:
            self.on_event(event)
        for sink, send in zip(self.sinks, sink_sends):
            if self.policy == "skip" and not sink.is_lossless():
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    self._sink_dropped(sink.name)
            else:
                await _pass_on(send, event)

    async def _sink_task(self, sink: SinkStage, recv, index: int = 0) -> None:
        """Feed one sink, in a thread, one call at a time: the events waiting in its queue go in one call
        (at most :data:`SINK_BATCH`, in order, never across a note), so a sink that is behind costs one
        thread hand-off per batch rather than per event. A batch not full waits :data:`SINK_LINGER` for
        more events first: a thread hand-off costs the main process ~0.1 ms of CPU, more than a cheap
        sink's call, and at a live rate events come one at a time."""
        limiter = trio.CapacityLimiter(1)  # calls to one sink never overlap
        seen_snapshot = None
        stopped = False
        carried = None  # a note that ended the previous batch
        async with recv:
            while True:
                item = carried
                carried = None
                if item is None:
                    try:
                        try:
                            item = recv.receive_nowait()  # while busy, no cancel scope per batch
                            if sink.inline:
                                await trio.lowlevel.checkpoint()  # its calls do not yield: let the others run
                        except trio.WouldBlock:
                            with trio.move_on_after(0.25):
                                item = await recv.receive()
                    except trio.EndOfChannel:
                        break  # the final snapshot (losses ...) comes from _final_metrics, before close()
                if isinstance(item, _SinkNote):
                    if not stopped:
                        try:
                            await _call_sink(sink, limiter, item.apply, sink, index)
                        except Exception as err:  # a note must never stop the run
                            what = "reset" if item.change is None else "parameter change"
                            log.error("sink %s: %s not taken: %s", sink.name, what, error_text(err))
                elif item is not None and stopped:
                    self._sink_dropped(sink.name)
                elif item is not None:
                    batch = [item]
                    carried = _take_queued(recv, batch)
                    if carried is None and len(batch) < SINK_BATCH and SINK_LINGER > 0:
                        await trio.sleep(SINK_LINGER)
                        carried = _take_queued(recv, batch)
                    stopped = await self._consume(sink, batch, limiter)
                snap = self._last_snapshot
                if snap is not None and snap is not seen_snapshot and not stopped:
                    seen_snapshot = snap
                    try:
                        await _call_sink(sink, limiter, sink.on_metrics, snap)
                    except Exception as err:  # a metrics display must never stop a run
                        log.debug("sink %s on_metrics failed: %s", sink.name, err)

    async def _consume(self, sink: SinkStage, batch: list[Event], limiter) -> bool:
        """Give ``batch`` to ``sink`` in one thread call; count times and failures; True when the sink stopped
        (StopRun: the events after it are counted as not passed to it)."""
        times = self.metrics.times(sink.name)
        results = await _call_sink(sink, limiter, _consume_all, sink, batch)
        stopped = False
        for event, (seconds, err) in zip(batch, results):
            times.add(seconds)
            if self.timeline is not None:
                self.timeline.note(event.id, f"sink {sink.name}", seconds)
            if err is None:
                continue
            times.failures += 1
            if isinstance(err, StopRun):
                stopped = True  # the sink said it cannot go on: stop feeding it
                self.request_stop(f"{sink.name}: {err}", error=True)
            else:
                self.error_log(f"sink {sink.name}", logging.ERROR, "event %d: sink %s failed: %s",
                               event.id, sink.name, error_text(err))
                if self.engine_params.on_stage_error == "stop":
                    self.request_stop(f"stopping: sink {sink.name} failed on event {event.id}", error=True)
        for _ in batch[len(results):]:
            self._sink_dropped(sink.name)
        return stopped

    def _sink_dropped(self, name: str) -> None:
        self.metrics.sink_dropped[name] = self.metrics.sink_dropped.get(name, 0) + 1

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
            try:
                self.control.on_tick(self._last_snapshot)
            except Exception as err:  # the panel's figures must never stop a run
                log.debug("control tick failed: %s", err, exc_info=True)
            self.outcomes.check()
            await trio.sleep(1.0 if not self.status.is_tty else 0.25)

    def _snapshot(self, total: int | None, final: bool = False) -> MetricsSnapshot:
        return self.metrics.snapshot(
            queue_depth=self._queue_stats(),
            source_status=self.source.status(),
            byte_counts=self.source.byte_counts(),
            dropped=self.source.dropped,
            total=total,
            source_counters=self.source.counters(),
            final=final,
            losses=self.losses(),
            asad_counters=self.source.asad_counters(),
        )

    def _final_metrics(self) -> None:
        """Give every open sink the run's final totals (``final`` set), e.g. for an end-of-run summary."""
        if not self.sinks:
            return
        try:
            final = self._snapshot(self.source.total(), final=True)
        except Exception as err:  # a source that cannot report any more must not stop the shutdown
            log.debug("final metrics unavailable: %s", err)
            return
        for sink in self.sinks:
            try:
                sink.on_metrics(final)
            except Exception as err:  # a metrics display must never stop a run
                log.debug("sink %s final on_metrics failed: %s", sink.name, err)

    async def _watch_signals(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(*_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                self._on_signal(signum)

    async def _poll_held_signals(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """During start-up the main thread holds (blocks) SIGINT/SIGTERM: take them from the pending set.

        Reports its own cancel scope through ``task_status``: cancel it when start-up ends.
        """
        with trio.CancelScope() as scope:
            task_status.started(scope)
            while True:
                await trio.sleep(0.1)
                for signum in signal.sigpending() & set(_HELD):
                    if signal.sigtimedwait({signum}, 0) is not None:
                        self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGUSR1:
            self.request_reset(name)
        elif not self.interrupted:
            self.interrupt(name)
        else:
            _say(f"interrupted again: exiting now{self._closing_note()}; an output left unfinished "
                 "stays readable and is completed at the next run on its path (docs/outputs.md)")
            sys.stdout.flush()
            os._exit(130)

    def _closing_note(self) -> str:
        return f" while sink {self._closing} closes" if self.phase == "closing" and self._closing else ""

    # -- sinks -------------------------------------------------------------------

    def _open_sinks(self) -> None:
        for config in self.pipeline.stages:  # what stages offer the sinks (kinematic curves ...)
            try:
                config.cls.publish_shared(config.params, self.context)
            except Exception as err:
                raise RuntimeError(f"stage {config.use}: cannot publish its shared objects: {error_text(err)}") \
                    from err
        for config in self.pipeline.sinks:
            sink = config.cls(config.params, self.context)
            try:
                sink.open()
            except Exception as err:
                try:  # release what it claimed or prepared before failing
                    sink.close()
                except Exception as close_err:
                    log.debug("sink %s: close after a failed open: %s", config.use, close_err)
                raise RuntimeError(f"sink {config.use}: cannot open: {error_text(err)}") from err
            self.sinks.append(sink)

    def _begin_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.begin()
            except Exception as err:
                raise RuntimeError(f"sink {sink.name}: cannot start: {error_text(err)}") from err

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            self._closing = sink.name
            try:
                sink.close()
            except Exception as err:
                log.error("sink %s: error while closing: %s", sink.name, error_text(err))
                if self.error is None:
                    self.error = f"sink {sink.name}: {error_text(err)}"
        self._closing = None

    def _sink_lost(self) -> dict[str, int]:
        """Events each sink took and then lost in a failed write (this run's and closed runs'); ask after close()."""
        lost = dict(self._closed_lost)
        for sink in self.sinks:
            if n := _unwritten(sink):
                lost[sink.name] = lost.get(sink.name, 0) + n
        return lost

    def _judge_run(self) -> None:
        """After the last sink closed: warn about stages that produced nothing, and fail the run (exit status 1)
        when a sink lost events it had taken, or, with ``[engine] fail_if_stage_always_fails``, when a stage
        failed on every event it ran on."""
        self.outcomes.check(final=True)
        lost = self._sink_lost()
        if self.error is None and lost:
            self.error = "; ".join(f"sink {name}: {n} events it took were lost in a failed write"
                                   for name, n in lost.items())
            log.error("%s", self.error)
        if self.error is None and self.engine_params.fail_if_stage_always_fails:
            failing = self.outcomes.always_failing()
            if failing:
                self.error = "; ".join(f"stage {name} failed on every one of the {self.metrics.times(name).count} "
                                       f"events it ran on" for name in failing) + \
                             " ([engine] fail_if_stage_always_fails = true)"
                log.error("%s", self.error)

    def _summary(self) -> RunSummary:
        self.status.clear()
        stage_ms = {
            name: (t.count, t.mean_ms(), t.p99_ms()) for name, t in self.metrics.stage_times.items() if t.count
        }  # stages that ran (one never run, its inputs missing, is in `stages` with its `skipped` count)
        outputs = self._closed_outputs + [o for s in self.sinks for o in s.outputs()]
        sink_lost = self._sink_lost()
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
            sink_lost=sink_lost,
            started=self.started,
            losses={**self.losses(), **{f"sink_{name}_lost": lost for name, lost in sink_lost.items()}},
            paused=self.metrics.paused,
            halted=self.metrics.halted,
            stages=self.metrics.stage_reports(),
            skipped_by=dict(self.metrics.skipped_by),
            backlogged=self.metrics.backlogged,
            backlog_peak=self.metrics.backlog_peak,
        )


async def _next(channel):
    """The next item of a memory channel, None at its end. Taken at once while one waits: the receivers
    share this trio loop, and an ``await`` per event would let each of them read a whole batch of frames
    between two events (the engine queue then fills up while the CPU is busy)."""
    try:
        return channel.receive_nowait()
    except trio.WouldBlock:
        try:
            return await channel.receive()
        except trio.EndOfChannel:
            return None
    except trio.EndOfChannel:
        return None


def _acquired(places: trio.Semaphore) -> bool:
    """Take one of ``places`` if one is free now (never waits)."""
    try:
        places.acquire_nowait()
    except trio.WouldBlock:
        return False
    return True


async def _pass_on(channel, item) -> None:
    """Send ``item`` at once when the channel has room, else wait for room (see :func:`_next`)."""
    try:
        channel.send_nowait(item)
    except trio.WouldBlock:
        await channel.send(item)


#: Most events one thread call gives a sink (the ones waiting in its queue).
SINK_BATCH = 16
#: How long a sink's batch that is not full waits for more events before its thread call (s): at 200
#: events/s about 10 events per call instead of 1. A sink sees its events this much later, never fewer.
#: A thread call costs the main process 0.13-0.17 ms of CPU (loaded machine, 2026-12-07): at 20 ms, two
#: threaded sinks made ~100 calls/s at 200 events/s (~0.075 ms per event), at 50 ms ~40 (~0.03).
SINK_LINGER = 0.05


def _take_queued(recv, batch: list[Event]) -> _SinkNote | None:
    """Append the events waiting in ``recv`` to ``batch`` (up to :data:`SINK_BATCH`); return the note that
    ended it, if one did (a batch never crosses a note), else None. The channel's end is left for the
    next receive to see."""
    while len(batch) < SINK_BATCH:
        try:
            more = recv.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None
        if isinstance(more, _SinkNote):
            return more
        batch.append(more)
    return None


async def _call_sink(sink: SinkStage, limiter: trio.CapacityLimiter, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` for ``sink``: in a thread (one call at a time, through ``limiter``), or here in the event
    loop for an :attr:`~conduit.stage.SinkStage.inline` sink."""
    if sink.inline:
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter)


def _consume_all(sink: SinkStage, events: list[Event]) -> list[tuple[float, Exception | None]]:
    """``sink.consume`` each event in this thread, in order, up to the first StopRun; per event, the CPU time
    of this thread (s) and the error or None.

    A sink's time is its thread's CPU time, not the wall time of the call: with the receivers, the
    dispatcher and the other sinks' threads sharing the GIL, wall time mostly measures waiting for it.
    """
    results: list[tuple[float, Exception | None]] = []
    clock = time.thread_time
    t0 = clock()  # one clock reading per event: each event's time ends where the next one's begins
    for event in events:
        try:
            sink.consume(event)
        except Exception as err:
            t1 = clock()
            results.append((t1 - t0, err))
            if isinstance(err, StopRun):
                break
        else:
            t1 = clock()
            results.append((t1 - t0, None))
        t0 = t1
    return results


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
_HELD = (signal.SIGINT, signal.SIGTERM)
#: Holding signals during start-up needs both (Linux has them; elsewhere start-up is not held).
_CAN_HOLD = hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigtimedwait")


@contextlib.contextmanager
def _held_signals():
    """Block SIGINT/SIGTERM in this thread (and so in threads and processes it starts) for the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _release_held_signals() -> None:
    """Unblock SIGINT/SIGTERM in this thread now (a pending one is then delivered to the watcher)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)


def _unwritten(sink: SinkStage) -> int:
    try:
        return int(sink.unwritten())
    except Exception as err:  # a counter must never hide the run's summary
        log.debug("sink %s: unwritten() failed: %s", sink.name, err)
        return 0


def error_text(err: BaseException) -> str:
    """One line for an error: its type and message, except for errors whose message says it all (a
    ``StopRun``, an OS error naming its file, a stage's set-up naming the stage)."""
    if isinstance(err, (StopRun, OSError, StageSetupError, RunNumberMissing)):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _say(text: str) -> None:
    """A message for the person at the terminal (not a log record: the log may be quiet)."""
    print(text, file=sys.stderr, flush=True)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out = []
    for err in group.exceptions:
        if isinstance(err, BaseExceptionGroup):
            out.extend(_leaves(err))
        else:
            out.append(err)
    return out


def _what_failed(err: BaseException) -> str:
    """One line naming what failed: the errors inside a trio nursery's group, each with its type."""
    leaves = _leaves(err) if isinstance(err, BaseExceptionGroup) else [err]
    return "; ".join(f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__ for leaf in leaves)


def run_pipeline(pipeline: Pipeline, **kwargs: Any) -> RunSummary:
    """Run ``pipeline`` to completion in a fresh trio loop and return its summary."""
    engine = Engine(pipeline, **kwargs)
    return trio.run(engine.run)
