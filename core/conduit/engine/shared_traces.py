"""Trace matrices handed to worker processes through shared memory instead of a pipe.

An event's trace matrix (about 0.7 MB, up to 10 MB in full readout) is most
of what a worker receives. Pickled, it costs the main process a copy into
the message and a dozen pipe writes through the event loop per event; here
the main process copies it once into a slot of shared memory and sends the
slot's name (a few hundred bytes), and the worker maps the slot and reads
the traces in place.

An event builder can also build an event's traces straight into a slot
(:meth:`TraceSlots.array`, handed to it as ``EventBuilder.trace_memory``):
then the pool sends the slot's reference without any copy. Such a slot is
*lent* to the event's ``traces`` array and comes back only when no Python
object refers to that memory any more: the array, any view or slice of it,
anything holding its buffer (a sink that keeps ``event.traces`` or a row of
it in a queue keeps the slot). numpy keeps the array the slot was lent as
(one ``np.frombuffer`` array per loan) as the ``base`` of every view, so a
weak-reference finalizer on it fires exactly then. The worker reads the slot
only while the main process awaits its answer, holding the event. At most
:data:`MAX_LENT` slots are lent at a time; beyond that (sinks holding many
events) the builder gets None and makes an ordinary array, copied into a
slot when analysed, as before.

Start-up: a slot's memory costs the process that first writes a page of it a
page fault, 4-50 µs each on this project's VMs (the hypervisor's free page
reporting): ~450 pages per slot, up to :data:`MAX_LENT` slots, all in the
first second of serving if made on demand. :meth:`TraceSlots.prepare` makes
them during start-up instead, their pages allocated and mapped in the main
process (docs/performance.md, "The first second of serving, seventh round").
A worker maps a slot the first time it meets it (read faults, 16 pages at a
time: no measurable cost).

Lifetime: :class:`TraceSlots` (main process) creates one segment per slot
on demand (``/dev/shm/conduit-<pid>-<n>``), a slot holds one event's traces
from the copy until the worker's answer (or, lent, until its array is
freed), and :meth:`TraceSlots.close` unlinks every segment when the pool
closes (a lent one's mapping stays valid until its array is freed). A slot too small for an event
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
import logging
import mmap
import os
import threading
import weakref
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Iterator

import numpy as np

__all__ = ["SlotRef", "TraceSlots", "worker_view", "SEGMENT_PREFIX", "MIN_SEGMENT_BYTES", "WORKER_MAPPINGS",
           "MAX_LENT"]

log = logging.getLogger("conduit.engine")

#: Name prefix of every segment (tests count /dev/shm entries with it).
SEGMENT_PREFIX = "conduit-"
#: Smallest segment: an event of up to about 2,000 traces fits without growing the slot.
MIN_SEGMENT_BYTES = 2 << 20
#: Segments a worker keeps mapped (slots lent to events in the sinks' queues rotate through up to MAX_LENT).
WORKER_MAPPINGS = 48
#: Slots lent to events' trace arrays at a time (each about 1.25 x an event's traces: ~1 MB by default).
MAX_LENT = 48
#: Granularity of a lent slot's size (bytes).
LENT_ROUNDING = 256 << 10

_serial = itertools.count()


@dataclasses.dataclass(frozen=True)
class SlotRef:
    """Where a worker finds an event's trace matrix: segment name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class TraceSlots:
    """Shared-memory slots for trace matrices, owned by the main process (one per event in flight)."""

    def __init__(self, max_lent: int = MAX_LENT) -> None:
        self._free: list[shared_memory.SharedMemory] = []
        self._all: dict[str, shared_memory.SharedMemory] = {}
        # id of the array a slot was lent as -> (segment name, address of its first byte)
        self._lent: dict[int, tuple[str, int]] = {}
        self._lock = threading.Lock()  # a lent slot comes back in whichever thread drops its last reference
        self.max_lent = max_lent
        self.copies = 0  # trace matrices handed over by a copy into a slot
        self.handed = 0  # trace matrices handed over without a copy (built in a lent slot)
        self.lent = 0  # slots lent to trace arrays so far
        self.closed = False

    @contextmanager
    def holding(self, traces: np.ndarray) -> Iterator[SlotRef]:
        """Yield where the worker finds ``traces`` for the duration of the block: the slot they were built in
        (:meth:`array`: no copy; the event holding them keeps the slot), else a free slot they are copied to."""
        if self.closed:
            raise RuntimeError("trace slots are closed")
        ref = self._lent_ref(traces)
        if ref is not None:
            self.handed += 1
            yield ref
            return
        traces = np.ascontiguousarray(traces)
        with self._lock:
            segment = self._take(traces.nbytes)
        try:
            np.ndarray(traces.shape, traces.dtype, buffer=segment.buf)[...] = traces
            self.copies += 1
            yield SlotRef(segment.name, traces.shape, traces.dtype.str)
        finally:
            self._give_back(segment)

    def array(self, rows: int, columns: int) -> np.ndarray | None:
        """A new (rows, columns) int16 array in a slot lent to it (contents undefined), or None when the slots
        are closed or :attr:`max_lent` are lent. The slot comes back when the array and every view of it are
        freed."""
        nbytes = rows * columns * 2
        with self._lock:
            if self.closed or len(self._lent) >= self.max_lent:
                return None
            segment = self._take(nbytes, lent=True)
            flat = np.frombuffer(segment.buf, np.int16, rows * columns)
            self._lent[id(flat)] = (segment.name, flat.ctypes.data)
            self.lent += 1
        weakref.finalize(flat, self._returned, id(flat), segment)
        return flat.reshape(rows, columns)  # a view: numpy keeps `flat` as the base of every view

    def prepare(self, count: int, nbytes: int = MIN_SEGMENT_BYTES) -> int:
        """Add ``count`` free slots of ``nbytes`` each now, their memory allocated (``posix_fallocate``: a full
        /dev/shm is an error here, not a SIGBUS later) and written once per page, so that the first events
        cost no page faults in this process; return how many were made. A slot an event does not fit is
        replaced by a bigger one as before. Stops at the first segment the system refuses (logged as a
        warning): the rest are made on demand."""
        made = 0
        for _ in range(count):
            try:
                segment = _allocated(f"{SEGMENT_PREFIX}{os.getpid()}-{next(_serial)}", nbytes)
            except OSError as err:
                log.warning("trace slots: %d of %d made ahead of the first event (%s); the rest are made on demand",
                            made, count, err)
                break
            with self._lock:
                if self.closed:
                    _unlink(segment)
                    break
                self._all[segment.name] = segment
                self._free.append(segment)
            made += 1
        return made

    def _lent_ref(self, traces: np.ndarray) -> SlotRef | None:
        """The slot ``traces`` lie in when they are a C-contiguous int16 array from its start (:meth:`array`)."""
        base = traces.base
        if base is None:
            return None
        entry = self._lent.get(id(base))  # alive (``traces`` holds it), so no other object has its id
        if entry is None or traces.dtype != np.int16 or not traces.flags.c_contiguous \
                or traces.ctypes.data != entry[1]:
            return None
        return SlotRef(entry[0], traces.shape, traces.dtype.str)

    def _returned(self, key: int, segment: shared_memory.SharedMemory) -> None:
        """A lent slot's array was freed (weakref finalizer: any thread)."""
        with self._lock:
            self._lent.pop(key, None)
            if not self.closed:  # (after close it was unlinked and handed to its arrays already)
                self._free.append(segment)

    def _give_back(self, segment: shared_memory.SharedMemory) -> None:
        with self._lock:
            if self.closed:
                self._all.pop(segment.name, None)
                _unlink(segment)
            else:
                self._free.append(segment)

    def _take(self, nbytes: int, lent: bool = False) -> shared_memory.SharedMemory:
        """A free segment of at least ``nbytes`` (called with the lock held)."""
        for i, segment in enumerate(self._free):
            if segment.size >= nbytes:
                return self._free.pop(i)
        if self._free:  # all free slots too small: replace one
            old = self._free.pop()
            del self._all[old.name]
            _unlink(old)
        if lent:  # sized to the event (a lent slot is one of many)
            size = -(-(nbytes + nbytes // 4) // LENT_ROUNDING) * LENT_ROUNDING
        else:
            size = max(MIN_SEGMENT_BYTES, nbytes + nbytes // 2)
        segment = shared_memory.SharedMemory(name=f"{SEGMENT_PREFIX}{os.getpid()}-{next(_serial)}", create=True,
                                             size=max(size, 1))
        self._all[segment.name] = segment
        return segment

    @property
    def segments(self) -> int:
        """Segments currently created (free, holding traces or lent)."""
        return len(self._all)

    def close(self) -> None:
        """Unlink every segment; slots still holding traces are unlinked when released, lent ones now (their
        mappings stay valid until their arrays are freed)."""
        with self._lock:
            self.closed = True
            for segment in self._free:
                _unlink(segment)
            self._free.clear()
            lent = {name for name, _ in self._lent.values()}
            for name in lent:
                _unlink(self._all.pop(name), detach=True)
            free = set(self._all) - lent
            self._all = {name: s for name, s in self._all.items() if name in free}


def _allocated(name: str, nbytes: int) -> shared_memory.SharedMemory:
    """A new segment of ``nbytes`` whose pages are allocated and mapped in this process (OSError if the system
    has no room for it)."""
    segment = shared_memory.SharedMemory(name=name, create=True, size=nbytes)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(segment._fd, 0, nbytes)  # type: ignore[attr-defined]
        _touch(segment.buf)
    except BaseException:
        _unlink(segment)
        raise
    return segment


def _touch(buffer: memoryview) -> None:
    """Write a byte of each page of ``buffer``: its page-table entries made now rather than at the first event."""
    np.frombuffer(buffer, np.uint8)[::mmap.PAGESIZE] = 0


def _unlink(segment: shared_memory.SharedMemory, detach: bool = False) -> None:
    """Remove ``segment``'s name and close it; ``detach`` (or a mapping still exported to arrays): leave the
    mapping to the arrays that use it instead, unmapped when the last of them is freed."""
    if not detach:
        try:
            segment.close()
        except BufferError:  # a lent array is being freed right now in another thread
            detach = True
    if detach:
        # SharedMemory.close (also run by its __del__) would fail while arrays export the mapping: drop its
        # references (the arrays' bases keep the mmap alive) and close only the descriptor.
        segment._buf = None  # type: ignore[attr-defined]
        segment._mmap = None  # type: ignore[attr-defined]
        segment.close()
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
