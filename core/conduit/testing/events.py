"""Simulated events and in-process stage runs for tests of stage plugins.

The events come from the ``simulate`` source kind found through the plugin
registry (the simulator ships with attpc-conduit as a plugin), never by
importing the simulator: the core stays free of plugins.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..artifacts import check_outputs
from ..detector import DetectorParams
from ..event import Event
from ..params import Params
from ..stage import RunContext, SinkStage, Stage, TransformStage

__all__ = ["make_event", "make_events", "run_stages", "resolve_stage", "StageSpec"]

#: A stage as ``run_stages`` and ``check_stage`` take it: a registered name, a class, ``(name or class,
#: {parameters})``, or an instance (used as it is).
StageSpec = Any


def make_event(preset: str = "default", seed: int = 1, *, index: int = 0, detector: DetectorParams | None = None,
               **options: Any) -> Event:
    """One realistic simulated event (GET traces of a reaction from the simulator's ``preset``).

    ``seed`` and ``index`` pick the event (the ``index``-th event of a run
    with that seed); ``options`` are further ``[source] kind = "simulate"``
    keys (``conduit simulate --help``). The same arguments give the same
    event (simulated afresh, about 0.1 s after the first call).
    """
    return make_events(index + 1, preset, seed, detector=detector, **options)[index]


def make_events(n: int, preset: str = "default", seed: int = 1, *, detector: DetectorParams | None = None,
                **options: Any) -> list[Event]:
    """The first ``n`` simulated events of a run with this ``seed`` (see :func:`make_event`)."""
    from ..plugins import get_registry

    source_cls = get_registry().sources.get("simulate")
    if source_cls is None:
        raise RuntimeError("conduit.testing needs the 'simulate' source kind, which comes with attpc-conduit; "
                           "it is not registered here (see `conduit stages`, which lists plugins that failed)")
    params = source_cls.Params.from_mapping({"events": n, "preset": preset, "seed": seed, **options})
    source = source_cls(params, RunContext(detector=detector if detector is not None else DetectorParams()))
    source.warm_up()
    return _collect(source)


def _collect(source) -> list[Event]:
    """Run a source to its end in a trio loop of its own and return what it emitted."""
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("make_event/make_events run their own trio loop: call them from a synchronous test "
                           "or fixture, not from an async test")
    events: list[Event] = []

    async def main() -> None:
        send, receive = trio.open_memory_channel(math.inf)
        source.attach(send)
        async with send:
            await source.run()
        async with receive:
            async for event in receive:
                events.append(event)

    trio.run(main)
    return events


def _copy_event(event: Event) -> Event:
    # The marks too (what stages count, failures): a stage's count on the copy must not reach the input.
    return dataclasses.replace(event, traces=event.traces.copy(), artifacts=copy.deepcopy(event.artifacts),
                               counts=copy.deepcopy(event.counts), failures=dict(event.failures),
                               skipped_stages=dict(event.skipped_stages))


def resolve_stage(spec: StageSpec, context: RunContext) -> Stage:
    """A stage instance from a name, a class, ``(name or class, {parameters})`` or an instance."""
    if isinstance(spec, Stage):
        return spec
    raw: dict[str, Any] = {}
    if isinstance(spec, tuple):
        spec, raw = spec
    cls = _stage_class(spec)
    params = raw if isinstance(raw, Params) else cls.Params.from_mapping(dict(raw))
    return cls(params, context)


def _stage_class(spec: str | type) -> type:
    if isinstance(spec, type) and issubclass(spec, Stage):
        return spec
    if isinstance(spec, str):
        from ..plugins import get_registry

        registry = get_registry()
        if spec in registry.stages:
            return registry.stages[spec]
        from ..params import did_you_mean

        failed = "".join(f"; plugin {f.plugin!r} failed: {f.error}" for f in registry.failures)
        raise KeyError(f"no stage named {spec!r}{did_you_mean(spec, registry.stages)}{failed}")
    raise TypeError(f"a stage is a registered name, a Stage class, (name or class, {{params}}) or an instance; "
                    f"got {spec!r}")


def run_stages(stages: Sequence[StageSpec], events: Iterable[Event] | Event, *,
               detector: DetectorParams | None = None, context: RunContext | None = None,
               warm_up: bool = True) -> list[Event]:
    """Run stages on events in this process, in pipeline order, as the engine's worker does; return the events.

    Transform stages run ``process`` event by event (each ``warm_up`` once
    first); sink stages are opened, consume every event and are closed. An
    event missing an artifact a stage requires raises ``KeyError`` naming
    both; an exception in a stage is raised as it is, and so is the engine's
    ``ArtifactError`` for a standard artifact of the wrong form. The events are copies
    (the inputs are left unchanged), marked ``analysed``.
    """
    if isinstance(events, Event):
        events = [events]
    context = context if context is not None else RunContext(detector=detector or DetectorParams())
    built = [resolve_stage(s, context) for s in stages]
    transforms = [s for s in built if isinstance(s, TransformStage)]
    sinks = [s for s in built if isinstance(s, SinkStage)]
    if warm_up:
        for stage in transforms:
            stage.warm_up()
    out = []
    for event in events:
        event = _copy_event(event)
        for stage in transforms:
            requires, _ = type(stage).artifacts(stage.params)
            missing = [r for r in requires if not event.has(r)]
            if missing:
                raise KeyError(f"{stage.name} requires {', '.join(map(repr, missing))}, which event {event.id} "
                               "does not have (add the stage that provides it before this one)")
            stage.process(event)
            check_outputs(stage, event)  # as the engine does after every transform stage
        event.analysed = True
        out.append(event)
    for sink in sinks:
        sink.open()
        try:
            sink.begin()
            for event in out:
                sink.consume(event)
        finally:
            sink.close()
    return out
