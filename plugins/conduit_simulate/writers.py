"""File outputs: a merged HDF5 file (attpc_merger 1.0 layout) and a .graw run folder.

Both write every event of a :class:`~.generator.Simulator` run in order (with
a ``pool``, the repeated events too, with their own ids and timestamps) and a
truth file next to the output (:mod:`.truth`).

* :class:`MergedWriter`: ``/events`` attrs ``min_event``, ``max_event``,
  ``version = "libattpc_merger:1.0"``; ``/events/event_{n}/get_traces`` int16
  (n_traces, 517) with attrs ``id``, ``timestamp``, ``timestamp_other`` on the
  dataset; n counts from 0 (the GET id is the ``id`` attr). FPN rows are
  omitted, as the merger does. No FRIB physics groups.
* :func:`write_graw_run`: ``run_NNNN/mm{c}/CoBo{c}_AsAd{a}_<stamp>_NNNN.graw``
  through :class:`conduit.get.grawfiles.RunWriter` and frames from
  :func:`conduit.get.frames.encode_event_frames` (FPN channels included, one
  frame per AsAd of the map per event, partial or full readout).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .generator import SimulatedEvent, Simulator

__all__ = ["MergedWriter", "write_hdf5", "write_graw_run", "event_frames", "graw_stamp", "MERGER_VERSION"]

MERGER_VERSION = "libattpc_merger:1.0"


class MergedWriter:
    """Append events to a merged HDF5 file in the attpc_merger 1.0 layout."""

    def __init__(self, path: Path):
        import h5py

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.path, "w")
        self._events = self._file.create_group("events")
        self._events.attrs["version"] = MERGER_VERSION
        self._events.attrs["min_event"] = 0
        self._events.attrs["max_event"] = 0
        self.count = 0

    def write(self, sim: SimulatedEvent) -> None:
        ev = sim.event
        group = self._events.create_group(f"event_{self.count}")
        ds = group.create_dataset("get_traces", data=ev.traces)
        ds.attrs["id"] = ev.id
        ds.attrs["timestamp"] = ev.timestamp
        ds.attrs["timestamp_other"] = ev.timestamp_other
        self._events.attrs["max_event"] = self.count
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MergedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def event_frames(
    sim: Simulator,
    generated: SimulatedEvent,
    *,
    event_id: int | None = None,
    timestamp: int | None = None,
    timestamp_other: int | None = None,
) -> dict[tuple[int, int], bytes]:
    """The GRAW frames of one generated event, FPN channels included: {(cobo, asad): bytes}."""
    from conduit.get.frames import encode_event_frames

    ev = generated.event
    return encode_event_frames(
        generated.all_traces(),
        ev.id if event_id is None else event_id,
        timestamp=ev.timestamp if timestamp is None else timestamp,
        timestamp_other=ev.timestamp_other if timestamp_other is None else timestamp_other,
        mode=sim.params.readout,
        asads=sim.asads,
    )


def graw_stamp(when: _dt.datetime | None = None) -> str:
    """The time stamp of .graw file names, ``YYYY-MM-DDTHH_MM_SS.mmm`` (colons replaced, as in copies)."""
    when = when or _dt.datetime.now()
    return when.strftime("%Y-%m-%dT%H_%M_%S.") + f"{when.microsecond // 1000:03d}"


def _events(sim: Simulator, truth, progress):
    """Yield every event of the run, recording truth for generated ones and the pool mapping for repeats."""
    from .generator import EventSequence

    sequence = EventSequence(sim)
    for n in range(len(sequence)):
        generated, fresh = sequence.get(n)
        if fresh:
            truth.write(generated)
        if sequence.pool:
            truth.served(generated.event.id, sequence.source_index(n))
        yield generated
        if progress is not None:
            progress(n + 1)


def write_hdf5(sim: Simulator, path: Path, truth, *, progress: Callable[[int], None] | None = None) -> int:
    """Generate every event of ``sim`` into a merged HDF5 file and ``truth`` (a TruthWriter); return the count."""
    with MergedWriter(path) as writer:
        for generated in _events(sim, truth, progress):
            writer.write(generated)
    return writer.count


def write_graw_run(
    sim: Simulator,
    folder: Path,
    truth,
    *,
    split_bytes: int = 1 << 30,
    stamp: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Generate every event of ``sim`` as a .graw run folder ``folder`` (``.../run_NNNN``); return the files."""
    from conduit.get.grawfiles import RunWriter

    with RunWriter(Path(folder), stamp=stamp or graw_stamp(), split_bytes=split_bytes) as writer:
        for generated in _events(sim, truth, progress):
            writer.write_event(event_frames(sim, generated))
    return list(writer.files)
