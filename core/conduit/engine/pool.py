"""Running the transform stages of a pipeline, in worker processes or in a thread.

All transforms of one event run in a single call (one round trip per event).
A worker builds its stage instances once per pipeline (keyed by a token) and
keeps them for the worker's life. hdbscan holds the GIL, so real parallelism
comes from processes (trio-parallel); ``workers = 0`` runs the chain in one
thread of the main process instead (handy for debugging and small machines).
Worker processes get each event's trace matrix through shared memory
(:mod:`.shared_traces`), the rest of the event by pickle (:mod:`.messages`).
"""

from __future__ import annotations

import dataclasses
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
from .messages import pack, unpack
from .shared_traces import TraceSlots, worker_view

__all__ = ["ChainSpec", "ChainResult", "StageFailure", "StageSetupError", "TransformPool", "open_pool",
           "WORKER_NICENESS"]

#: How much lower the workers' CPU priority is than the main process's (see _worker_init).
WORKER_NICENESS = 5


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
    """A :class:`ChainSpec` pickled once in the main process: sending it with every event costs a copy of a few
    kB instead of pickling the stage classes, their parameters and the run context again (cloudpickle)."""

    token: str
    data: bytes

    @classmethod
    def of(cls, spec: ChainSpec) -> PickledSpec:
        try:  # as trio-parallel pickles (stages defined in a script or notebook travel too)
            import cloudpickle as pickler
        except ImportError:  # pragma: no cover - trio-parallel then uses pickle as well
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


def _worker_run_shared(token: str, spec: bytes, message: bytes) -> bytes:
    """As :func:`_worker_run`, with the trace matrix read in place from shared memory and the chain given
    pickled (:class:`PickledSpec`'s token and data, unpickled only the first time this worker sees it;
    plain str and bytes cost trio-parallel's cloudpickle half of what the dataclass does).

    ``message``: the event without its traces and the :class:`.shared_traces.SlotRef` of its trace matrix, and the
    answer: the :class:`ChainResult`, both through :mod:`.messages` (cheaper than trio-parallel's
    cloudpickle of the objects themselves).
    """
    event, traces = unpack(message)
    event.traces = worker_view(traces)
    try:
        result = _CACHE.get(token if token in _CACHE.chains else PickledSpec(token, spec).load()).run(event)
    finally:
        event.traces = None  # no view of the slot outlives the call
    return pack(result)


def _worker_init(niceness: int = WORKER_NICENESS) -> bool:
    """Run in each worker at start.

    Termination is the main process's business: a SIGTERM sent to the whole
    process group (systemd, `timeout`, `kill -- -PGID`) must not kill the
    workers under the engine while it drains; the engine stops them when the
    run ends, and they exit by themselves if the main process dies.

    With a live source, analysis runs at a lower CPU priority (``niceness``)
    than the receivers, event builder and recorders in the main process: when
    the machine is short of CPU, analysis falls behind (and is sampled), never
    the DAQ. A replay has no DAQ to protect and analyses at normal priority.
    """
    import os
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if niceness:
        try:
            os.nice(niceness)
        except OSError:  # pragma: no cover - not permitted here: run at normal priority
            pass
    return False


def _worker_warm(spec: ChainSpec) -> float:
    t0 = time.perf_counter()
    _CACHE.get(spec)  # built and warmed once per spec
    return time.perf_counter() - t0


class TransformPool:
    """Analyse events with the transform chain; at most ``capacity`` at a time."""

    def __init__(self, spec: ChainSpec, workers: int, processes: Any | None, slots: TraceSlots | None = None):
        self.spec = spec
        self.workers = workers
        self.capacity = max(workers, 1)
        #: trio-parallel's worker context (the processes), or None: the chain runs in a thread of this process.
        self._processes = processes
        self._limiter = trio.CapacityLimiter(self.capacity)
        self.slots = slots
        self._pickled: dict[str, PickledSpec] = {}

    async def warm_up(self) -> float:
        """Start every worker and compile / load kernels; return the wall time (s)."""
        t0 = time.perf_counter()
        if not self.spec.stages:
            return 0.0
        async with trio.open_nursery() as nursery:
            for _ in range(self.capacity):
                # Cancellable (Ctrl-C during start-up): a worker killed mid-warm-up holds nothing.
                nursery.start_soon(partial(self._call, _worker_warm, self.spec, cancellable=True))
        return time.perf_counter() - t0

    async def analyse(self, event: Event, spec: ChainSpec | None = None) -> ChainResult:
        """Run the chain on ``event`` and merge the new artifacts into it.

        ``spec``: the chain to use for this event (parameters changed while running); default: the pool's.
        """
        spec = spec if spec is not None else self.spec
        if not spec.stages:
            return ChainResult({}, {}, [])
        if self._processes is None:
            # In-process: the worker thread mutates the event itself.
            return await self._call(_worker_run, spec, event)
        if self.slots is not None:
            pickled = self._pickled.get(spec.token)
            if pickled is None:
                if len(self._pickled) > 4:  # specs replaced by parameter changes
                    self._pickled.clear()
                pickled = self._pickled[spec.token] = PickledSpec.of(spec)
            with self.slots.holding(event.traces) as ref:
                message = pack((_without_traces(event), ref))
                result: ChainResult = unpack(await self._call(_worker_run_shared, pickled.token, pickled.data, message))
        else:
            result = await self._call(_worker_run, spec, event)
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

    async def _call(self, fn, *args, cancellable: bool = False):
        if self._processes is None:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter, abandon_on_cancel=cancellable)
        return await self._processes.run_sync(fn, *args, limiter=self._limiter, kill_on_cancel=cancellable)


def _without_traces(event: Event) -> Event:
    """A shallow copy of ``event`` to send to a worker, its trace matrix left out."""
    return dataclasses.replace(event, traces=_NO_TRACES, artifacts=dict(event.artifacts))


_NO_TRACES = Event(0).traces[:0]


@asynccontextmanager
async def open_pool(spec: ChainSpec, workers: int, *, niceness: int = WORKER_NICENESS):
    """A :class:`TransformPool` with ``workers`` processes (0: a thread in this process), ``niceness``
    lower in CPU priority than this one."""
    if workers <= 0:
        yield TransformPool(spec, 0, None)
        return
    import math

    import trio_parallel

    slots = TraceSlots()
    try:
        async with trio_parallel.open_worker_context(idle_timeout=math.inf, grace_period=5.0,
                                                     init=partial(_worker_init, niceness)) as ctx:
            yield TransformPool(spec, workers, ctx, slots)
    finally:
        slots.close()
