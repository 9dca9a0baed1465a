"""Trace matrices handed to worker processes through shared memory instead of a pipe.

An event's trace matrix (about 0.7 MB, up to 10 MB in full readout) is most
of what a worker receives. Pickled, it costs the main process a copy into
the message and a dozen pipe writes through the event loop per event; here
the main process copies it once into a slot of shared memory and sends the
slot's name (a few hundred bytes), and the worker maps the slot and reads
the traces in place.

Lifetime: :class:`TraceSlots` (main process) creates one segment per slot
on demand (``/dev/shm/conduit-<pid>-<n>``), a slot holds one event's traces
from the copy until the worker's answer, and :meth:`TraceSlots.close`
unlinks every segment when the pool closes. A slot too small for an event
is replaced by a bigger segment (the old one unlinked at once). Workers keep
the few segments they have mapped (:func:`worker_view`) and close the oldest
beyond :data:`WORKER_MAPPINGS`; an unlinked segment's memory is returned
when its last mapping closes. Segments are registered with Python's
resource tracker (which the workers share with the main process), so if
the main process is killed, the tracker unlinks what is left.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Iterator

import numpy as np

__all__ = ["SlotRef", "TraceSlots", "worker_view", "SEGMENT_PREFIX", "MIN_SEGMENT_BYTES", "WORKER_MAPPINGS"]

#: Name prefix of every segment (tests count /dev/shm entries with it).
SEGMENT_PREFIX = "conduit-"
#: Smallest segment: an event of up to about 2,000 traces fits without growing the slot.
MIN_SEGMENT_BYTES = 2 << 20
#: Segments a worker keeps mapped (a pool reuses a few slots; more only after slots grew).
WORKER_MAPPINGS = 8

_serial = itertools.count()


@dataclasses.dataclass(frozen=True)
class SlotRef:
    """Where a worker finds an event's trace matrix: segment name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class TraceSlots:
    """Shared-memory slots for trace matrices, owned by the main process (one per event in flight)."""

    def __init__(self) -> None:
        self._free: list[shared_memory.SharedMemory] = []
        self._all: dict[str, shared_memory.SharedMemory] = {}
        self.copies = 0  # trace matrices handed over this way
        self.closed = False

    @contextmanager
    def holding(self, traces: np.ndarray) -> Iterator[SlotRef]:
        """Copy ``traces`` into a free slot for the duration of the block; yield where the worker finds them."""
        if self.closed:
            raise RuntimeError("trace slots are closed")
        traces = np.ascontiguousarray(traces)
        segment = self._take(traces.nbytes)
        try:
            np.ndarray(traces.shape, traces.dtype, buffer=segment.buf)[...] = traces
            self.copies += 1
            yield SlotRef(segment.name, traces.shape, traces.dtype.str)
        finally:
            if self.closed:
                _unlink(segment)
            else:
                self._free.append(segment)

    def _take(self, nbytes: int) -> shared_memory.SharedMemory:
        for i, segment in enumerate(self._free):
            if segment.size >= nbytes:
                return self._free.pop(i)
        if self._free:  # all free slots too small: replace one
            old = self._free.pop()
            del self._all[old.name]
            _unlink(old)
        size = max(MIN_SEGMENT_BYTES, nbytes + nbytes // 2)
        segment = shared_memory.SharedMemory(name=f"{SEGMENT_PREFIX}{os.getpid()}-{next(_serial)}", create=True,
                                             size=size)
        self._all[segment.name] = segment
        return segment

    @property
    def segments(self) -> int:
        """Segments currently created (free or holding traces)."""
        return len(self._all)

    def close(self) -> None:
        """Unlink every segment; slots still holding traces are unlinked when released."""
        self.closed = True
        held = set(self._all) - {s.name for s in self._free}
        for segment in self._free:
            _unlink(segment)
        self._free.clear()
        self._all = {name: s for name, s in self._all.items() if name in held}


def _unlink(segment: shared_memory.SharedMemory) -> None:
    try:
        segment.close()
    finally:
        try:
            segment.unlink()
        except FileNotFoundError:  # pragma: no cover - already gone (resource tracker at exit)
            pass


class _Mapped:
    """The segments this worker process has mapped, oldest first."""

    def __init__(self) -> None:
        self.segments: dict[str, shared_memory.SharedMemory] = {}

    def get(self, name: str) -> shared_memory.SharedMemory:
        segment = self.segments.pop(name, None)
        if segment is None:
            # Attaching registers the name with the resource tracker, which workers share with the
            # main process (multiprocessing passes them its descriptor): a no-op for a set of names.
            segment = shared_memory.SharedMemory(name=name)
            while len(self.segments) >= WORKER_MAPPINGS:
                oldest = next(iter(self.segments))
                self.segments.pop(oldest).close()
        self.segments[name] = segment  # most recent last
        return segment


_MAPPED = _Mapped()  # per worker process


def worker_view(ref: SlotRef) -> np.ndarray:
    """The trace matrix ``ref`` points at, mapped in place (valid until this worker's call returns)."""
    segment = _MAPPED.get(ref.name)
    return np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=segment.buf)
