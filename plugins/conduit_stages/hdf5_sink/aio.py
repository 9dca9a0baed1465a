"""Direct writes submitted with Linux AIO (``io_submit``): several in flight at once, from the writer's one thread.

An ``O_DIRECT`` ``pwrite`` returns when the disk has the bytes: 0.5-1 ms for
an event's trace matrix, 0.2-0.3 ms for its cloud on the machine of
docs/performance.md, during which the writer process sleeps; with one
thread the disk then idles while the writer makes the next event's HDF5
objects, and the two add up (~0.7 of ~2.2 ms per event when the writer had a
CPU to itself). A second Python thread making the writes
(:class:`.rawio.DiskQueue`) overlaps them, but hands every write over
through the GIL and a future, which cost more than it saved (measured).
Here the writes are *submitted* (one system call, returning at once) and
their completions collected later without blocking, when the writer checks
whether a ring slot can be released: the disk writes one event while the
writer makes the next one's objects, with no thread.

:class:`AioQueue` has :class:`.rawio.DiskQueue`'s interface (tickets 1, 2,
...; :meth:`done`, :meth:`wait` raising the first failed write's OSError,
``first_failed``), so the writer's slot release and the recorder's
"keep the events written before a failed write" work the same way. Where
the kernel offers no AIO (``io_setup`` refused, another architecture),
:func:`make_queue` returns None and the writes stay synchronous.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable
from typing import Any

__all__ = ["AioQueue", "make_queue"]

# System call numbers of io_setup, io_destroy, io_getevents, io_submit.
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_IOCB_CMD_PWRITE = 1
#: Writes in flight at most (the ring's slots bound them further: the writer keeps a few events in flight).
DEPTH = 64


class _Iocb(ctypes.Structure):
    """``struct iocb`` (linux/aio_abi.h, little-endian 64-bit layout)."""

    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32), ("aio_rw_flags", ctypes.c_int32),
                ("aio_lio_opcode", ctypes.c_uint16), ("aio_reqprio", ctypes.c_int16),
                ("aio_fildes", ctypes.c_uint32), ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64), ("aio_flags", ctypes.c_uint32),
                ("aio_resfd", ctypes.c_uint32)]


class _Event(ctypes.Structure):
    """``struct io_event``."""

    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_NOW = _Timespec(0, 0)  # io_getevents' timeout: do not wait


class AioQueue:
    """Direct writes in flight; a ticket per write. Not thread-safe (the writer's one thread uses it).

    ``write(fd, address, nbytes, offset, keep, redo)``: ``keep`` is held
    until the write is done (the source's buffer); ``redo(done_bytes)`` is
    called when the write came back short or refused (``EINVAL``: the file
    system takes no direct I/O after all) to write the rest by ordinary
    means; its OSError is the write's error.
    """

    def __init__(self, numbers: tuple[int, int, int, int]):
        self._setup, self._destroy, self._getevents, self._submit = numbers
        self.ctx = ctypes.c_ulong(0)
        if _syscall(ctypes.c_long(self._setup), ctypes.c_long(DEPTH), ctypes.byref(self.ctx)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_setup: {os.strerror(err)}")
        self.submitted = 0  # the last ticket given
        self.completed = 0  # every ticket up to this one is done
        self.first_failed: int | None = None  # the ticket of the first write that failed
        # ticket -> (iocb, keep, nbytes, redo) of the writes in flight; their iocbs must live until then
        self.pending: dict[int, tuple[_Iocb, Any, int, Callable[[int], None]]] = {}
        self.finished: set[int] = set()  # done, above `completed`
        self.errors: dict[int, OSError] = {}  # failed, not raised yet
        self._events = (_Event * DEPTH)()
        self._pointer = (ctypes.POINTER(_Iocb) * 1)()

    def write(self, fd: int, address: int, nbytes: int, offset: int, keep: Any,
              redo: Callable[[int], None]) -> int:
        """Submit one direct write of ``nbytes`` at ``address`` to ``offset`` of ``fd``; its ticket."""
        while len(self.pending) >= DEPTH:
            self._reap(1)
        self.submitted += 1
        ticket = self.submitted
        iocb = _Iocb(aio_data=ticket, aio_lio_opcode=_IOCB_CMD_PWRITE, aio_fildes=fd, aio_buf=address,
                     aio_nbytes=nbytes, aio_offset=offset)
        self._pointer[0] = ctypes.pointer(iocb)
        while True:
            n = _syscall(ctypes.c_long(self._submit), self.ctx, ctypes.c_long(1), self._pointer)
            if n == 1:
                self.pending[ticket] = (iocb, keep, nbytes, redo)
                return ticket
            err = ctypes.get_errno()
            if err == errno.EAGAIN and self.pending:  # the kernel's queue is full: make room
                self._reap(1)
                continue
            break
        # Not submitted: refused (EINVAL: no AIO for this file) is done now by ordinary means, else it failed.
        self._finish(ticket, 0, redo, None if err == errno.EINVAL else OSError(err, os.strerror(err)), nbytes)
        return ticket

    def _finish(self, ticket: int, written: int, redo: Callable[[int], None], error: OSError | None,
                nbytes: int = 0) -> None:
        if error is None and written != nbytes:
            try:
                redo(written)
            except OSError as err:
                error = err
        if error is not None:
            self.errors[ticket] = error
            if self.first_failed is None or ticket < self.first_failed:
                self.first_failed = ticket
        self.finished.add(ticket)
        while self.completed + 1 in self.finished:
            self.completed += 1
            self.finished.discard(self.completed)

    def _reap(self, at_least: int) -> None:
        """Collect finished writes, waiting for ``at_least`` of them (0: only those finished already)."""
        n = _syscall(ctypes.c_long(self._getevents), self.ctx, ctypes.c_long(at_least), ctypes.c_long(DEPTH),
                     self._events, None if at_least else ctypes.byref(_NOW))
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                return
            raise OSError(err, f"io_getevents: {os.strerror(err)}")
        for k in range(n):
            event = self._events[k]
            ticket = event.data
            _iocb, _keep, nbytes, redo = self.pending.pop(ticket)
            res = event.res
            if res < 0 and -res != errno.EINVAL:
                self._finish(ticket, 0, redo, OSError(-res, os.strerror(-res)))
            else:  # a short write, or EINVAL (direct I/O refused): the rest by ordinary means
                self._finish(ticket, max(res, 0), redo, None, nbytes)

    def done(self, ticket: int) -> bool:
        """Whether the writes up to ``ticket`` are done (without waiting; errors are raised by :meth:`wait`)."""
        if self.completed < ticket and self.pending:
            self._reap(0)
        return self.completed >= min(ticket, self.submitted)

    def wait(self, ticket: int) -> None:
        """Wait for the writes up to ``ticket``; raise the first one's error (once)."""
        ticket = min(ticket, self.submitted)
        while self.completed < ticket:
            self._reap(1)
        failed = [t for t in self.errors if t <= ticket]
        if failed:
            error = self.errors[min(failed)]
            for t in failed:
                del self.errors[t]
            raise error

    def close(self) -> None:
        """Wait for every write (errors ignored: the caller has waited for the ones it needs); free the context."""
        try:
            while self.pending:
                self._reap(1)
        finally:
            if self.ctx.value:
                _syscall(ctypes.c_long(self._destroy), self.ctx)
                self.ctx = ctypes.c_ulong(0)


def make_queue() -> AioQueue | None:
    """An :class:`AioQueue`, or None where the kernel or the architecture offers no AIO."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or os.environ.get("CONDUIT_HDF5_NO_AIO"):
        return None
    try:
        return AioQueue(numbers)
    except OSError:
        return None
