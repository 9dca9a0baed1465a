"""Writing a part file's large datasets straight to the disk (``O_DIRECT``), not through the page cache.

A buffered ``write`` of an event's 0.7 MB trace matrix puts it into about
180 freshly allocated page-cache pages. On a virtual machine whose free
memory is handed back to the host (virtio-balloon free page reporting, as on
the machine of docs/performance.md), touching such a page costs the guest up
to ~50 µs of *system* time instead of ~1 µs: the writer's system time then
swung from 0.3 to 5.7 ms per event between runs, and it filled the page cache
with gigabytes no one reads again. With ``O_DIRECT`` the disk reads the bytes
from the writer's own buffer (the shared-memory ring slot, always the same
pages): no page-cache page is allocated at all, whatever the state of memory.

HDF5 places the data: the dataset is created with its space allocated at once
(``H5D_ALLOC_TIME_EARLY``, no fill value written) in a file whose large
objects start on 4 KiB boundaries (``alignment``), :func:`.h5direct` asks
for its offset (``H5Dget_offset``) and this module writes the bytes there:
the whole 4 KiB blocks with ``O_DIRECT``, the last partial block (< 4 KiB)
by an ordinary write. The file is the same HDF5 file as one written by
``H5Dwrite``. Where ``O_DIRECT`` is refused (a file system without it) the
bytes go through ordinary writes.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .aio import AioQueue

__all__ = ["BLOCK", "THRESHOLD", "RawWriter", "External", "DiskQueue", "file_alignment"]

#: Alignment of offsets, lengths and buffers for O_DIRECT (the page size; a multiple of any disk's sector).
BLOCK = 4096
#: Datasets of at least this many bytes are written directly (and aligned in the file); smaller ones by HDF5.
THRESHOLD = 64 * 1024
#: Bytes reserved ahead of the writes in a file that grows for the whole run (RawWriter(preallocate=True)).
PREALLOCATE = 64 << 20


def _load_fallocate() -> Any:
    """libc's ``fallocate`` (not ``posix_fallocate``, which writes zeros where the file system cannot reserve)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fn


_fallocate = _load_fallocate()


def file_alignment() -> dict[str, int]:
    """h5py.File keyword arguments that start every object of THRESHOLD bytes or more on a BLOCK boundary."""
    return {"alignment_threshold": THRESHOLD, "alignment_interval": BLOCK}


class RawWriter:
    """Raw bytes written into one file at offsets HDF5 allocated: direct I/O for whole blocks, else buffered.

    Errors are raised as OSError with the C errno (no space left, file too large).
    """

    def __init__(self, path: Path | str, queue: DiskQueue | AioQueue | None = None, *, preallocate: bool = False):
        self.path = Path(path)
        # Reserve the file's blocks ahead of the writes (a file that grows for the whole run: the store).
        self.preallocate = preallocate and _fallocate is not None
        self.reserved = 0  # bytes of the file reserved so far
        self.queue = queue  # the direct writes of whole blocks go through it (in the background) when given
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        self.direct_fd = -1
        if hasattr(os, "O_DIRECT"):
            try:
                self.direct_fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_DIRECT)
            except OSError:  # the file system has no direct I/O: ordinary writes
                self.direct_fd = -1
        self._bounce: mmap.mmap | None = None  # page-aligned copy of a source that is not aligned
        self.direct_bytes = 0  # written with O_DIRECT
        self.buffered_bytes = 0  # written through the page cache
        #: When a list: (offset, bytes) of every dataset written, in order (the store's, for the part's copy).
        self.placements: list[tuple[int, int]] | None = None
        self.direct_refused = False

    @property
    def direct(self) -> bool:
        return self.direct_fd >= 0

    def write(self, data: np.ndarray, offset: int) -> None:
        """Write the bytes of the C-contiguous ``data`` at ``offset`` of the file."""
        if self.placements is not None:
            self.placements.append((offset, data.nbytes))
        if self.preallocate and offset + data.nbytes > self.reserved:
            self._reserve(offset + data.nbytes)
        view = memoryview(data.reshape(-1).view(np.uint8))
        direct = self.direct and not self.direct_refused
        body = len(view) // BLOCK * BLOCK if direct and offset % BLOCK == 0 else 0
        if body:
            source = view[:body]
            address = data.ctypes.data
            if address % BLOCK:
                if self.queue is not None:
                    self.queue.wait(self.queue.submitted)  # the bounce buffer may still be in a queued write
                source = self._aligned_copy(source)
                address = ctypes.addressof(ctypes.c_char.from_buffer(self._bounce))
            if isinstance(self.queue, DiskQueue):
                self.queue.submit(self._write_direct, source, offset)
            elif self.queue is not None:  # an aio.AioQueue: submitted, collected later
                self.queue.write(self.direct_fd, address, body, offset, source,
                                 lambda written, s=source, o=offset: self._write_rest(s, o, written))
            else:
                self._write_direct(source, offset)
            self.direct_bytes += body
        if body < len(view):
            self._pwrite_all(self.fd, view[body:], offset + body)
            self.buffered_bytes += len(view) - body

    def _write_direct(self, source: memoryview, offset: int) -> None:
        """Whole blocks with O_DIRECT (through the page cache if the file system refuses them after all)."""
        if self.direct_fd >= 0:
            try:
                self._pwrite_all(self.direct_fd, source, offset)
                return
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self.direct_refused = True  # alignment this file system does not take: buffered from now on
        self._pwrite_all(self.fd, source, offset)

    def _write_rest(self, source: memoryview, offset: int, written: int) -> None:
        """A submitted direct write came back short (the rest: written here) or refused (``written`` 0:
        this file system takes no direct I/O after all, ordinary writes from now on)."""
        if not written:
            self.direct_refused = True
        self._pwrite_all(self.fd, source[written:], offset + written)

    def _reserve(self, end: int) -> None:
        """Allocate the file's blocks up to ``end`` + PREALLOCATE bytes.

        Direct writes that extend a file on ext4 allocate its blocks and
        update its size as they go, and one in ten then waited 3-4 ms instead
        of ~0.6 (measured, docs/performance.md); into reserved blocks they do
        not. A refusal (no room, a file size limit, a file system without
        ``fallocate``) is not an error here: the write itself then says what
        is wrong.
        """
        start = max(self.reserved, end - 1)
        length = end + PREALLOCATE - start
        if _fallocate(self.fd, 0, ctypes.c_int64(start), ctypes.c_int64(length)) != 0:
            if ctypes.get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
                self.preallocate = False
            self.reserved = end  # try again further on
            return
        self.reserved = start + length

    def _aligned_copy(self, source: memoryview) -> memoryview:
        if self._bounce is None or len(self._bounce) < len(source):
            if self._bounce is not None:
                self._bounce.close()
            self._bounce = mmap.mmap(-1, -(-len(source) // (1 << 20)) << 20)  # page-aligned, reused
        self._bounce[:len(source)] = source
        return memoryview(self._bounce)[:len(source)]

    @staticmethod
    def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + done)

    def close(self) -> None:
        """Close the descriptors once the queued writes are done (fsync, if wanted, is the caller's)."""
        if self.queue is not None and self.fd >= 0:
            self.queue.wait(self.queue.submitted)
        for fd in (self.direct_fd, self.fd):
            if fd >= 0:
                os.close(fd)
        self.direct_fd = self.fd = -1
        self._bounce = None  # unmapped once unused (a failed write's traceback may still hold a view of it)


class External:
    """Instead of a RawWriter: a part's large datasets are HDF5 external storage of bytes already written.

    ``placements`` are the (offset, bytes) in the file ``name`` (absolute) of
    the datasets, in the order they are created (:class:`.store.Store`).
    """

    def __init__(self, name: bytes, placements: list[tuple[int, int]]):
        self.name = name
        self.placements = placements
        self.used = 0

    def take(self, nbytes: int) -> int:
        """The offset of the next dataset (of ``nbytes`` bytes) in the file."""
        offset, size = self.placements[self.used]
        if size != nbytes:
            raise RuntimeError(f"external storage out of step: {nbytes} bytes asked, {size} written")
        self.used += 1
        return offset

    @property
    def done(self) -> bool:
        return self.used == len(self.placements)


class DiskQueue:
    """One background thread for the direct writes: the disk writes an event while the writer makes the next.

    An ``O_DIRECT`` write returns when the disk has the bytes (~1.5 ms for a
    trace matrix); done in the writer's thread, the disk idles while the
    writer makes the next event's HDF5 objects, and the recording runs at
    ~40 % of the disk's speed. ``os.pwrite`` releases the GIL, so one thread
    writing in the background overlaps the two. Writes are done in the order
    submitted; each has a ticket (1, 2, ...); :meth:`wait` raises the first
    write's OSError (no space left ...). The source buffers must stay
    untouched until their ticket is done (the writer releases a ring slot
    only then).
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hdf5-disk")
        self.jobs: deque[tuple[int, Future]] = deque()
        self.submitted = 0  # the last ticket given
        self.completed = 0  # every ticket up to this one is written
        self.first_failed: int | None = None  # the ticket of the first write that raised

    def submit(self, fn, *args) -> int:
        self.submitted += 1
        self.jobs.append((self.submitted, self.pool.submit(fn, *args)))
        return self.submitted

    def done(self, ticket: int) -> bool:
        """Whether the writes up to ``ticket`` are done (without waiting; errors are raised by :meth:`wait`)."""
        for number, job in self.jobs:
            if number > ticket:
                break
            if not job.done():
                return False
        return True

    def wait(self, ticket: int) -> None:
        """Wait for the writes up to ``ticket``; raise the first one's error (the later ones are still waited for)."""
        error: BaseException | None = None
        while self.jobs and self.jobs[0][0] <= ticket:
            number, job = self.jobs.popleft()
            try:
                job.result()
            except BaseException as err:  # noqa: BLE001 - raised below, once every write asked for is done
                error = error or err
                if self.first_failed is None:
                    self.first_failed = number
            self.completed = number
        self.completed = max(self.completed, min(ticket, self.submitted))
        if error is not None:
            raise error

    def close(self) -> None:
        """Wait for every write (errors ignored: the caller has waited for the ones it needs) and end the thread."""
        try:
            self.wait(self.submitted)
        except OSError:
            pass
        self.pool.shutdown(wait=True)
