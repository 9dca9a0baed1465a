"""Running the transform stages of a pipeline, in worker processes or in a thread.

All transforms of one event run in a single call (one round trip per event).
A worker builds its stage instances once per pipeline (keyed by a token) and
keeps them for the worker's life. hdbscan holds the GIL, so real parallelism
comes from processes (:mod:`.workers`: persistent processes, one pipe each
way); ``workers = 0`` runs the chain in one thread of the main process
instead (handy for debugging and small machines). Worker processes get each
event's trace matrix through shared memory (:mod:`.shared_traces`), the rest
of the event by pickle (:mod:`.messages`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
import uuid
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from ..artifacts import Clusters, check_outputs
from ..event import Event
from ..params import Params
from ..stage import RunContext, StopRun, TransformStage
from .messages import pack
from .shared_traces import MIN_SEGMENT_BYTES, SlotRef, TraceSlots, worker_view
from .timeline import job_usage
from .workers import JobNotRun, Worker, WorkerDied, WorkerSet, worker_loop

__all__ = ["ChainSpec", "ChainResult", "StageFailure", "StageSetupError", "TransformPool", "WorkerDied",
           "default_in_flight", "open_pool", "IN_FLIGHT_PER_WORKER", "WORKER_NICENESS"]

log = logging.getLogger("conduit.engine")

#: How much lower the workers' CPU priority is than the main process's (see workers.worker_loop).
WORKER_NICENESS = 5

#: Events analysed at once per worker process when ``[engine] max_in_flight = 0``: two in each worker's pipe
#: (:class:`.workers.WorkerSet`), the others waiting in the main process with their traces already in
#: shared memory. Events come out of the builder in bursts (a receive pass completes several at once);
#: with live sources an event that finds every place taken is skipped, so a queue deeper than the
#: workers' two lets a burst be analysed a few ms later instead of skipped, at the same CPU per event
#: (docs/performance.md, "The analysis workers online, fourth round").
IN_FLIGHT_PER_WORKER = 4


def default_in_flight(workers: int) -> int:
    """Events analysed at once by default: :data:`IN_FLIGHT_PER_WORKER` per worker process, 2 in-process."""
    return max(IN_FLIGHT_PER_WORKER * workers, 2)


@dataclasses.dataclass(frozen=True)
class ChainSpec:
    """Everything a worker needs to build the transform stages (pickled by reference)."""

    token: str
    stages: tuple[tuple[type[TransformStage], Params], ...]
    context: RunContext

    @classmethod
    def create(cls, stages, context: RunContext) -> ChainSpec:
        return cls(token=uuid.uuid4().hex, stages=tuple(stages), context=context)


@dataclasses.dataclass(frozen=True)
class PickledSpec:
    """A :class:`ChainSpec` pickled once in the main process (cloudpickle), sent to each worker once: not the
    stage classes, their parameters and the run context again with every event."""

    token: str
    data: bytes

    @classmethod
    def of(cls, spec: ChainSpec) -> PickledSpec:
        try:  # stages defined in a script or notebook travel too
            import cloudpickle as pickler
        except ImportError:  # pragma: no cover - cloudpickle comes with trio-parallel, a dependency
            import pickle as pickler

        return cls(spec.token, pickler.dumps(spec))

    def load(self) -> ChainSpec:
        import pickle

        return pickle.loads(self.data)


@dataclasses.dataclass
class StageFailure:
    stage: str
    error: str
    traceback: str
    #: The stage raised StopRun: it cannot go on, the run stops.
    stop: bool = False


@dataclasses.dataclass
class ChainResult:
    """What comes back from a worker: new artifacts, timings, failures, and what each stage did.

    ``skipped``, ``empty`` and ``counts`` are the event's marks (:class:`conduit.event.Event`):
    stages not run for a missing input (with why), stages that ran and produced
    nothing, and what stages counted (stage -> reason -> n).
    """

    artifacts: dict[str, Any]
    seconds: dict[str, float]
    failures: list[StageFailure]
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    empty: list[str] = dataclasses.field(default_factory=list)
    counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    #: The worker's job: wall seconds, CPU seconds of its thread, minor page faults, the worker's pid, when it
    #: began (``time.time()``, s) (``[engine] timeline``).
    job: tuple[float, float, int, int, float] | None = None


class StageSetupError(RuntimeError):
    """A transform stage that could not be built or warmed up in a worker; the message names the stage."""


class _Chain:
    def __init__(self, spec: ChainSpec):
        self.stages = [_set_up(cls.name, "be built", cls, params, spec.context) for cls, params in spec.stages]
        self.io = [cls.artifacts(params) for cls, params in spec.stages]

    def warm_up(self) -> None:
        for stage in self.stages:
            _set_up(stage.name, "warm up", stage.warm_up)

    def run(self, event: Event) -> ChainResult:
        seconds: dict[str, float] = {}
        failures: list[StageFailure] = []
        empty: list[str] = []
        failed_outputs: dict[str, str] = {}  # artifact -> why it is missing ("stage cluster.hdbscan failed")
        for stage, (requires, provides) in zip(self.stages, self.io):
            # A stage whose inputs a failed stage should have made is not run (and its outputs count as failed).
            missing = _missing_input(event, requires, failed_outputs)
            if missing is not None:
                why, cause = missing
                event.skipped_stages[stage.name] = why
                failed_outputs.update(dict.fromkeys(provides, cause or f"stage {stage.name} was not run"))
                continue
            t0 = time.perf_counter()
            try:
                stage.process(event)
                check_outputs(stage, event)  # the standard artifacts' forms (conduit.artifacts), naming the stage
            except Exception as err:
                failure = StageFailure(stage.name, f"{type(err).__name__}: {err}", traceback.format_exc(),
                                       stop=isinstance(err, StopRun))
                failures.append(failure)
                event.failures[stage.name] = failure.error
                failed_outputs.update(dict.fromkeys(provides, f"stage {stage.name} failed"))
            else:
                if provides and all(_produced_nothing(event.get(name)) for name in provides):
                    empty.append(stage.name)
            finally:
                seconds[stage.name] = time.perf_counter() - t0
        made = {name for _, provides in self.io for name in provides} - failed_outputs.keys()
        artifacts = {name: event.get(name) for name in made if event.has(name)}
        return ChainResult(artifacts=artifacts, seconds=seconds, failures=failures,
                           skipped=dict(event.skipped_stages), empty=empty, counts=event.counts)


def _missing_input(event: Event, requires: tuple[str, ...],
                   failed_outputs: dict[str, str]) -> tuple[str, str | None] | None:
    """(why a stage cannot run on ``event``, the failure behind it or None), or None when it can run.

    ``("needs 'clusters': stage cluster.hdbscan failed", "stage cluster.hdbscan failed")``.
    """
    for name in requires:
        if name in failed_outputs:
            return f"needs '{name}': {failed_outputs[name]}", failed_outputs[name]
        if not event.has(name):
            return f"needs '{name}', which no stage made", None
    return None


def _produced_nothing(value: Any) -> bool:
    """True for an absent or empty artifact (no rows, no clusters)."""
    if value is None:
        return True
    if isinstance(value, Clusters):
        return value.count == 0
    try:
        return len(value) == 0
    except TypeError:  # a scalar, a 0-d array, an object: something
        return False


def _set_up(name: str, what: str, call, *args):
    """``call(*args)``, an exception becoming a :class:`StageSetupError` naming the stage (picklable: one line)."""
    try:
        return call(*args)
    except Exception as err:
        raise StageSetupError(f"stage {name} failed to {what}: {type(err).__name__}: {err}") from None


class _ChainCache:
    """Chains built in this process, by spec token (a worker serves one run at a time).

    A parameter change while running (:mod:`conduit.engine.control`) comes as
    a new spec with a new token: the worker builds and warms that chain when
    the first event of the new spec reaches it.
    """

    def __init__(self) -> None:
        self.chains: dict[str, _Chain] = {}

    def get(self, spec: ChainSpec | str) -> _Chain:
        """The chain of ``spec`` (built and warmed the first time), or of the token of a spec built before."""
        if isinstance(spec, str):
            return self.chains[spec]
        chain = self.chains.get(spec.token)
        if chain is None:
            if len(self.chains) > 4:
                self.chains.clear()
            chain = _Chain(spec)
            chain.warm_up()
            self.chains[spec.token] = chain
        return chain


_CACHE = _ChainCache()  # per worker process: stage instances outlive one call on purpose


def _worker_run(spec: ChainSpec, event: Event) -> ChainResult:
    return _CACHE.get(spec).run(event)


class ChainUnknown(LookupError):
    """A job named a chain this worker has not built and did not bring its description: send it again with it."""


def _worker_job(job: tuple) -> Any:
    """A job in a worker process (:func:`.workers.worker_loop`): ``(token, spec, event, slot)``.

    ``spec``: the chain's :class:`PickledSpec` data, or None when this worker was sent it before (the chain
    is built and warmed the first time it is seen). ``event``: None for a warm-up (the answer: the seconds
    it took), else the event without its traces, ``slot`` the :class:`.shared_traces.SlotRef` of its trace
    matrix; the answer is the :class:`ChainResult`.
    """
    token, spec, event, traces = job
    t0 = time.perf_counter()
    if token in _CACHE.chains:
        chain = _CACHE.get(token)
    elif spec is None:
        raise ChainUnknown(token)
    else:
        chain = _CACHE.get(PickledSpec(token, spec).load())
    if event is None:
        return time.perf_counter() - t0
    began = time.time()
    wall, cpu, faults = job_usage()
    event.traces = worker_view(traces)
    try:
        result = chain.run(event)
        end = job_usage()
        result.job = (end[0] - wall, end[1] - cpu, end[2] - faults, os.getpid(), began)
        return result
    finally:
        event.traces = None  # no view of the slot outlives the call


def _worker_warm(spec: ChainSpec) -> float:
    t0 = time.perf_counter()
    _CACHE.get(spec)  # built and warmed once per spec
    return time.perf_counter() - t0


class TransformPool:
    """Analyse events with the transform chain; at most ``capacity`` at a time."""

    def __init__(self, spec: ChainSpec, workers: int, processes: WorkerSet | None = None,
                 slots: TraceSlots | None = None, nursery: trio.Nursery | None = None):
        self.spec = spec
        self.workers = workers
        self.capacity = max(workers, 1)
        #: The worker processes, or None: the chain runs in a thread of this process.
        self.processes = processes
        self._limiter = trio.CapacityLimiter(self.capacity)
        self.slots = slots
        self._nursery = nursery  # where a dead worker's replacement starts
        self._pickled: dict[str, PickledSpec] = {}

    @property
    def trace_memory(self):
        """Where a source may build events' trace matrices so that they reach a worker without a copy
        (:meth:`.shared_traces.TraceSlots.array`), or None (no worker process)."""
        return self.slots.array if self.slots is not None else None

    async def warm_up(self, slots: int = 0) -> float:
        """Start every worker and compile / load kernels; meanwhile make ``slots`` trace slots ready for the
        first events (:meth:`.shared_traces.TraceSlots.prepare`). Return the wall time (s)."""
        t0 = time.perf_counter()
        if not self.spec.stages:
            return 0.0
        if self.processes is None:
            await trio.to_thread.run_sync(_worker_warm, self.spec, limiter=self._limiter, abandon_on_cancel=True)
            return time.perf_counter() - t0
        async with trio.open_nursery() as nursery:
            if slots > 0:
                nursery.start_soon(partial(trio.to_thread.run_sync, self.slots.prepare, slots, MIN_SEGMENT_BYTES,
                                           abandon_on_cancel=True))
            await self.processes.start()
        async with trio.open_nursery() as nursery:
            for _ in range(self.capacity):
                nursery.start_soon(self._warm_one)
        return time.perf_counter() - t0

    async def _warm_one(self) -> None:
        worker = await self.processes.take()
        try:
            await self._call(worker, self.spec, None, None)
        except BaseException:  # Ctrl-C during start-up: a worker killed mid-warm-up holds nothing
            worker.kill()
            raise
        finally:
            self.processes.give(worker)

    async def _replace(self) -> None:
        """A new worker process in place of one that died, warmed with the current chain before it takes
        events."""
        worker = self.processes.new()
        await trio.to_thread.run_sync(worker.start)
        try:
            await self._call(worker, self.spec, None, None)
        except Exception as err:  # it built before: say so once; its events then fail with the same error
            log.error("analysis worker %d (pid %s) did not warm up: %s", worker.index, worker.pid, err)
        self.processes.add(worker)

    async def analyse(self, event: Event, spec: ChainSpec | None = None) -> ChainResult:
        """Run the chain on ``event`` and merge the new artifacts into it.

        ``spec``: the chain to use for this event (parameters changed while running); default: the pool's.
        A worker process that dies under the event is replaced and :class:`.workers.WorkerDied` raised (one
        line); events queued behind it go to another worker.
        """
        spec = spec if spec is not None else self.spec
        if not spec.stages:
            return ChainResult({}, {}, [])
        if self.processes is None:
            # In-process: the worker thread mutates the event itself.
            return await trio.to_thread.run_sync(_worker_run, spec, event, limiter=self._limiter)
        with self.slots.holding(event.traces) as ref:
            job = _without_traces(event)
            while True:
                worker = await self.processes.take()
                try:
                    # Once sent, a job runs to its end (as a thread call would): the event is accounted for.
                    with trio.CancelScope(shield=True):
                        result: ChainResult = await self._call(worker, spec, job, ref)
                    break
                except JobNotRun:  # its worker had died before it started: another one takes it
                    continue
                except WorkerDied:
                    self.processes.retire(worker)
                    self._nursery.start_soon(self._replace)
                    raise
                finally:
                    self.processes.give(worker)
        for name, value in result.artifacts.items():
            if name == "traces":
                event.traces = value
            else:
                event.artifacts[name] = value
        # The marks the chain left on the worker's copy of the event.
        event.failures = {f.stage: f.error for f in result.failures}
        event.skipped_stages = dict(result.skipped)
        event.counts = result.counts
        return result

    async def _call(self, worker: Worker, spec: ChainSpec, event: Event | None, ref: SlotRef | None) -> Any:
        """``_worker_job`` in ``worker``: the chain's description goes along only if the worker lacks it."""
        pickled = self._pickled.get(spec.token)
        if pickled is None:
            if len(self._pickled) > 4:  # specs replaced by parameter changes
                self._pickled.clear()
            pickled = self._pickled[spec.token] = PickledSpec.of(spec)
        known = spec.token in worker.tokens
        try:
            answer = await worker.call(pack((spec.token, None if known else pickled.data, event, ref)))
        except ChainUnknown:  # the worker let go of the chain (many parameter changes): send it again
            worker.tokens.discard(spec.token)
            answer = await worker.call(pack((spec.token, pickled.data, event, ref)))
        worker.tokens.add(spec.token)
        return answer


def _without_traces(event: Event) -> Event:
    """A shallow copy of ``event`` to send to a worker, its trace matrix left out (the fields copied as they
    are: a third of ``dataclasses.replace``'s cost, which runs ``__init__`` again, per analysed event)."""
    job = object.__new__(type(event))
    job.__dict__.update(event.__dict__)
    job.traces = _NO_TRACES
    job.artifacts = dict(event.artifacts)
    return job


_NO_TRACES = Event(0).traces[:0]


@asynccontextmanager
async def open_pool(spec: ChainSpec, workers: int, *, niceness: int = WORKER_NICENESS):
    """A :class:`TransformPool` with ``workers`` processes (0: a thread in this process), ``niceness``
    lower in CPU priority than this one (see :func:`.workers.worker_loop`). The processes start in
    :meth:`TransformPool.warm_up` and end when the block does."""
    if workers <= 0:
        yield TransformPool(spec, 0)
        return
    slots = TraceSlots()
    processes = WorkerSet(workers, worker_loop, (niceness, _worker_job))
    try:
        async with trio.open_nursery() as nursery:
            yield TransformPool(spec, workers, processes, slots, nursery)
            nursery.cancel_scope.cancel()  # a replacement still starting is not needed any more
    finally:
        with trio.CancelScope(shield=True):
            await processes.close(grace=5.0)
        slots.close()
