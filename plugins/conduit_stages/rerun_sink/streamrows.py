"""Timelines and rows sent to a set of Rerun streams: the rerun sink's and its draw process's (one way for both).

``held`` (per stream, by ``id(stream)``, then per entity): the component
arrays that stream's viewer holds, so that constants made once are sent once
(:func:`.arrow.log_row`). The caller owns ``streams`` and ``held``.
"""

from __future__ import annotations

from typing import Any

from . import arrow
from .eventview import EVENT_ROOT

__all__ = ["set_times", "held_for", "log_row", "log_all"]


def set_times(streams: list[Any], *, event: int | None = None, daq_seconds: float | None = None,
              run_time: float | None = None) -> None:
    """Set this thread's timelines on every stream (reset first: set_time is per thread).

    Straight through Rerun's binding, as ``RecordingStream.set_time`` does after its checks (durations
    in seconds rounded to nanoseconds as it rounds them).
    """
    from rerun import bindings

    for stream in streams:
        native = stream.to_native()
        bindings.reset_time(recording=native)
        if event is not None:
            bindings.set_time_sequence("event", event, recording=native)
        if daq_seconds is not None:
            bindings.set_time_duration_nanos("daq_time", round(1e9 * float(daq_seconds)), recording=native)
        if run_time is not None:
            bindings.set_time_duration_nanos("run_time", round(1e9 * float(run_time)), recording=native)


def held_for(held: dict[int, dict[str, dict[Any, Any]]], stream: Any, path: str) -> dict[Any, Any]:
    """The components ``stream``'s viewer holds for entity ``path`` (see :func:`.arrow.log_row`)."""
    return held.setdefault(id(stream), {}).setdefault(path, {})


def log_row(streams: list[Any], held: dict, prefix: str, path: str, row: Any) -> None:
    """Log a row (:func:`.arrow.row`, or a list of archetypes / component batches) on every stream."""
    path = prefix + path if prefix else path
    for stream in streams:
        arrow.log_row(stream, path, row, held=held_for(held, stream, path))


def log_all(streams: list[Any], held: dict, prefix: str, items: list[tuple[str, Any]]) -> None:
    """Log (path, archetype), (path, [archetypes]) and (path, row) items, one row each.

    A drawn event's ~10 rows go straight to Rerun's binding from here (:func:`.arrow.send_row`): the
    per-row Python of :func:`log_row` (a call per stream, the held components looked up twice) was
    a tenth of a drawn event's cost.
    """
    targets = [(stream.to_native(), held.setdefault(id(stream), {}), stream) for stream in streams]
    for path, archetypes in items:
        if path == EVENT_ROOT:  # a recursive clear: every per-event entity holds nothing any more
            root = prefix + EVENT_ROOT
            for entities in held.values():
                for entity in [e for e in entities if e == root or e.startswith(root + "/")]:
                    del entities[entity]
        if not isinstance(archetypes, dict):
            log_row(streams, held, prefix, path, archetypes if isinstance(archetypes, list) else [archetypes])
            continue
        entity = prefix + path if prefix else path
        for native, entities, stream in targets:
            row_held = entities.get(entity)
            if row_held is None:
                row_held = held_for(held, stream, entity)
            arrow.send_row(native, entity, archetypes, row_held)
