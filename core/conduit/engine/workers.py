"""The analysis worker processes: persistent, one pipe each way, a few hundred bytes per event.

Each worker is a spawned process that runs :func:`worker_loop`: read a job
from its pipe, run it, write the answer, until the pipe closes. The main
process keeps one :class:`Worker` per process and talks to it with
non-blocking reads and writes in its trio loop (one write and usually one
read per event, no thread, no per-call task); :class:`WorkerSet` hands idle
workers out, most recently used first (its caches are the warmest), and
replaces a worker that died.

A job and its answer are pickled by :mod:`.messages`; the trace matrix goes
through shared memory (:mod:`.shared_traces`). The chain's description
(:class:`.pool.PickledSpec`, about 2 kB) is sent to a worker only with the
first job of that chain it gets.

Wire format: as :class:`multiprocessing.connection.Connection`'s (a 4-byte
big-endian length, then the bytes), so the worker side is plain
``recv_bytes``/``send_bytes``.
"""

from __future__ import annotations

import os
import signal
import struct
import time
import traceback
from collections import deque
from typing import Any, Callable

import trio

from ..exits import how_it_ended
from .messages import pack, unpack

__all__ = ["JobNotRun", "Worker", "WorkerDied", "WorkerSet", "keep_heap", "worker_loop"]

_HEADER = struct.Struct("!i")
#: Bytes asked for per read of a job or an answer (a default-mix answer is about 12 kB: one read).
_READ = 1 << 16


class WorkerDied(RuntimeError):
    """A worker process ended while it had a job (a crash in compiled code, the OOM killer, a kill)."""


class JobNotRun(Exception):
    """The worker had died before this job started (another job reported the death): send the job elsewhere."""


class _Gone(Exception):
    """The worker's pipe closed under a read or write."""


def worker_loop(jobs, answers, niceness: int, run: Callable[[Any], Any]) -> None:
    """The whole life of a worker process: ``run(job)`` for each job read from ``jobs``, the answer (or the
    error it raised) written to ``answers``, until ``jobs`` closes (the pool closed or the main process died).

    Termination is the main process's business: SIGINT (a terminal's Ctrl-C reaches the whole process group)
    and SIGTERM (systemd, ``timeout``, ``kill -- -PGID``) must not kill the workers under the engine while it
    drains; the engine closes their pipes when the run ends. With a live source, analysis runs ``niceness``
    lower in CPU priority than the receivers and recorders in the main process: when the machine is short
    of CPU, analysis falls behind (and is sampled), never the DAQ.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if niceness:
        try:
            os.nice(niceness)
        except OSError:  # pragma: no cover - not permitted here: run at normal priority
            pass
    keep_heap()
    # The pipes' file descriptors are read and written directly (one read usually brings a whole job, one
    # writev sends the answer's header and bytes): Connection.recv_bytes costs two reads and its Python per
    # job, send_bytes a copy of the answer behind its header.
    jobs_fd, answers_fd = jobs.fileno(), answers.fileno()
    buffer = bytearray()
    while True:
        try:
            while (job := _take_message(buffer)) is None:
                chunk = os.read(jobs_fd, max(_READ, _missing(buffer)))
                if not chunk:
                    return
                buffer += chunk
        except OSError:
            return
        job = unpack(job)
        try:
            answer = pack((True, run(job)))
        except Exception as err:
            answer = pack((False, _portable(err)))
        try:
            _write_all(answers_fd, (_HEADER.pack(len(answer)), answer))
        except OSError:  # the main process is gone
            return


def _take_message(buffer: bytearray) -> bytes | None:
    """The first whole message in ``buffer`` (a 4-byte length, the bytes), taken out of it; None if incomplete."""
    if len(buffer) < _HEADER.size:
        return None
    end = _HEADER.size + _HEADER.unpack_from(buffer)[0]
    if len(buffer) < end:
        return None
    data = bytes(memoryview(buffer)[_HEADER.size:end])
    del buffer[:end]
    return data


def _missing(buffer: bytearray) -> int:
    """Bytes still to read for the first message in ``buffer`` (at least its header)."""
    if len(buffer) < _HEADER.size:
        return _HEADER.size - len(buffer)
    return _HEADER.size + _HEADER.unpack_from(buffer)[0] - len(buffer)


def _write_all(fd: int, parts: tuple[bytes, ...]) -> None:
    """Write ``parts`` to the blocking ``fd`` in order, in one system call when the pipe takes them at once."""
    written = os.writev(fd, parts)
    if written < sum(map(len, parts)):  # the pipe took part of it (a large answer, a full pipe): the rest
        rest = memoryview(b"".join(parts))[written:]
        while rest:
            rest = rest[os.write(fd, rest):]


#: glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: A worker's heap is not given back to the system below this (bytes).
KEEP_HEAP_BYTES = 256 << 20
#: Blocks up to this size come from the heap, not from a fresh mapping of their own (glibc's largest).
HEAP_BLOCK_BYTES = 32 << 20


def keep_heap() -> bool:
    """Keep the memory the chain frees in this process's heap for the next event (glibc; False elsewhere).

    By default glibc gives a large freed block back to the system (``munmap``, or trimming the heap's top)
    and the next event's arrays of that size fault fresh pages in again: on this project's VMs a fresh page
    costs 4-50 µs of system time (the hypervisor's free page reporting, docs/performance.md). A worker
    allocates about the same arrays every event, so its heap stays at the size the largest event needed.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_HEAP_BYTES))


def _portable(err: Exception) -> Exception:
    """``err`` if it pickles, else a RuntimeError with its type and message; the traceback as a note."""
    note = "".join(traceback.format_exception(err))
    try:
        unpack(pack(err))
    except Exception:
        err = RuntimeError(f"{type(err).__name__}: {err}")
    err.__traceback__ = None
    err.add_note(f"in the worker process:\n{note}")
    return err


class Worker:
    """The main process's side of one worker process: its pipes (non-blocking) and its jobs in order.

    Up to a few jobs are queued in a worker's pipe (:class:`WorkerSet` decides how many): the worker goes
    from one event to the next without sleeping in between, its caches warm. Answers come back in the
    order the jobs were written; each caller reads its own when the answers before it have been read.
    """

    def __init__(self, index: int, target: Callable[..., None], args: tuple) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.index = index
        child_jobs, self._jobs = context.Pipe(duplex=False)
        self._answers, child_answers = context.Pipe(duplex=False)
        self.process = context.Process(target=target, args=(child_jobs, child_answers, *args),
                                       name=f"conduit analysis worker {index}", daemon=True)
        self._child_ends = (child_jobs, child_answers)
        #: Chain tokens whose description this worker has (it builds each chain once).
        self.tokens: set[str] = set()
        #: Jobs lent to callers by :class:`WorkerSet` and not given back.
        self.assigned = 0
        #: The process ended (or is being killed): no job is sent any more.
        self.dead = False
        self._buffer = bytearray()
        self._writing = trio.Lock()
        self._waiting: deque[trio.Event] = deque()  # one per job written and not answered, oldest first

    def start(self) -> None:
        """Start the process (blocking: call it in a thread) and close the ends only the child uses, so that
        its death shows as the end of its answer pipe."""
        self.process.start()
        for end in self._child_ends:
            end.close()
        self._child_ends = ()
        os.set_blocking(self._jobs.fileno(), False)
        os.set_blocking(self._answers.fileno(), False)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def call(self, job: bytes) -> Any:
        """Send ``job`` (packed), return the worker's answer (unpacked), or raise the error the job raised
        there. :class:`WorkerDied` when the process ended under this job (raised once per worker);
        :class:`JobNotRun` when it had ended before this job started (send it elsewhere)."""
        if self.dead:
            raise JobNotRun
        turn = trio.Event()
        async with self._writing:  # a job's bytes are never interleaved with another's
            try:
                await self._write(_HEADER.pack(len(job)) + job)
            except _Gone:
                if self._waiting:  # a job before this one meets the death and reports it
                    self.dead = True
                    raise JobNotRun from None
                await self._died()
            self._waiting.append(turn)
        try:
            if self._waiting[0] is not turn:
                await turn.wait()
            if self.dead:
                raise JobNotRun
            try:
                answer = await self._read()
            except _Gone:
                await self._died()
        except BaseException as err:
            if not isinstance(err, (JobNotRun, WorkerDied)):  # cancelled mid-job: its answer would be misread
                self.dead = True
                self.kill()
            raise
        finally:
            if self._waiting[0] is turn:
                self._waiting.popleft()
                if self._waiting:
                    self._waiting[0].set()
            else:  # cancelled while waiting for its turn (the worker is killed: nothing more is read)
                self._waiting.remove(turn)
        ok, value = unpack(answer)
        if not ok:
            raise value
        return value

    async def _died(self) -> None:
        """Raise WorkerDied with what became of the process (JobNotRun if another job reported it already)."""
        if self.dead:
            raise JobNotRun
        self.dead = True
        raise WorkerDied(await trio.to_thread.run_sync(self._death))

    async def _write(self, data: bytes) -> None:
        fd = self._jobs.fileno() if not self._jobs.closed else -1
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_writable(fd)
                except trio.ClosedResourceError:
                    raise _Gone from None
            except OSError:  # EPIPE: the reader is gone; EBADF: closed here
                raise _Gone from None

    async def _read(self) -> bytes:
        fd = self._answers.fileno() if not self._answers.closed else -1
        buffer = self._buffer
        while (data := _take_message(buffer)) is None:
            try:
                chunk = os.read(fd, max(_READ, _missing(buffer)))
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    raise _Gone from None
                continue
            except OSError:
                raise _Gone from None
            if not chunk:
                raise _Gone
            buffer += chunk
        return data

    def _death(self) -> str:
        """What became of the process, in words (blocking up to 1 s: call it in a thread)."""
        self.process.join(1.0)  # it closed its pipe: it has ended or is ending
        code = self.process.exitcode
        how = "closed its pipe" if code is None else how_it_ended(code)
        return f"analysis worker {self.index} (pid {self.pid}) died ({how}); a new one takes its place"

    def kill(self) -> None:
        if self.process.pid is not None and self.process.exitcode is None:
            self.process.kill()

    def close(self) -> None:
        """Close the pipes (in the trio thread): the worker reads the end of its jobs and exits."""
        for conn in (self._jobs, self._answers, *self._child_ends):
            if not conn.closed:
                trio.lowlevel.notify_closing(conn.fileno())
                conn.close()


class WorkerSet:
    """``size`` worker processes, each with up to ``depth`` jobs at a time: :meth:`take` lends the least busy
    live worker (waiting while every one has ``depth``), :meth:`give` takes it back. A worker that died is
    taken out by :meth:`retire`; its successor joins with :meth:`add` once started (and warmed)."""

    def __init__(self, size: int, target: Callable[..., None], args: tuple, depth: int = 2) -> None:
        self.size = size
        self._target, self._args = target, args
        self._serial = 0
        #: Every worker started and not retired (their pipes are closed at the end).
        self.all: list[Worker] = []
        self._ready: list[Worker] = []  # started, taking jobs
        self._jobs = trio.Semaphore(size * depth)
        self._some_ready = trio.Event()
        #: Workers that died and were replaced.
        self.replaced = 0

    def new(self) -> Worker:
        """A worker, not started yet (:meth:`Worker.start` in a thread, then :meth:`add`)."""
        worker = Worker(self._serial, self._target, self._args)
        self._serial += 1
        self.all.append(worker)
        return worker

    async def start(self) -> None:
        """Start every worker (each process start in a thread: spawning blocks for some ms)."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.size):
                nursery.start_soon(self._start, self.new())

    async def _start(self, worker: Worker) -> None:
        await trio.to_thread.run_sync(worker.start)
        self.add(worker)

    def add(self, worker: Worker) -> None:
        self._ready.append(worker)
        self._some_ready.set()

    async def take(self) -> Worker:
        await self._jobs.acquire()
        try:
            while not (live := [w for w in self._ready if not w.dead]):
                if self._some_ready.is_set():
                    self._some_ready = trio.Event()
                await self._some_ready.wait()
        except BaseException:
            self._jobs.release()
            raise
        worker = min(live, key=lambda w: w.assigned)
        worker.assigned += 1
        return worker

    def give(self, worker: Worker) -> None:
        worker.assigned -= 1
        self._jobs.release()

    def retire(self, dead: Worker) -> None:
        """Take ``dead`` out (killed if still there, its pipes closed)."""
        dead.dead = True
        dead.kill()
        dead.close()
        if dead in self._ready:
            self._ready.remove(dead)
        if dead in self.all:
            self.all.remove(dead)
        self.replaced += 1
    async def close(self, grace: float = 5.0) -> None:
        """Close every worker's pipes, wait up to ``grace`` seconds for them to exit, kill the rest."""
        for worker in self.all:
            worker.close()
        await trio.to_thread.run_sync(self._join, grace)

    def _join(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        for worker in self.all:
            if worker.process.pid is None:
                continue
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
