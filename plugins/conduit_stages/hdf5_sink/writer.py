"""The hdf5 sink's writer process: HDF5 object creation off the main process, fed through shared memory.

Creating a recorded event's HDF5 objects (a group, datasets, a dozen
attributes, links) holds the GIL the event loop needs for about a
millisecond. So the sink starts one **writer process** in ``open()`` and
joins it in ``close()`` (its lifetime is the sink's); the main process only
copies an event's trace matrix and cloud into a slot of a shared-memory ring
and sends the event's small metadata (ids, estimates, clusters) through a
socket. The writer makes each event's objects in the stores at once
(:class:`.recorder.Recorder`), releases the slot, and commits every
``flush_interval`` seconds (the journals, then the masters), reporting each
commit back.

* **Lossless**: when every slot is in use the sink waits for the writer
  (never drops); a lossy sink (``lossless = false``) drops and counts.
* **The writer dies** (killed, crashed): the sink says so in one line naming
  the process and how many events handed to it were not committed (counted
  as not written), and stops the run; it makes the committed events into
  part files from the journals (:func:`.journal.link_journal`), so the file
  holds every one of them.
* **The main process dies** (at any moment after the first event): the writer
  sees its socket close and finishes the recording itself: it commits every
  event it holds, closes the stores and consolidates (seconds), holding the
  parts directory's ``writer.lock`` until it exits, so that a next run on the
  path waits for it (:func:`.journal.wait_for_writer`).
* The writer runs in a session of its own: a Ctrl-C at the terminal reaches
  the main process only, which ends the writer through :meth:`WriterProcess.finish`.
* The ring is a file in ``/dev/shm`` (its 64 MB reserved at once), unlinked
  as soon as it is made: the writer inherits its descriptor, so nothing is
  left behind whatever ends them. When it cannot be made (no room, a file
  size limit) events go through the socket instead, slower.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import mmap
import os
import pickle
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from conduit.exits import how_it_ended
from conduit.dtype_names import dtype_name, dtype_named

__all__ = ["WriterProcess", "WriterDied", "WriterSpec", "RING_SLOTS", "SLOT_BYTES", "child_main"]

#: Events the ring holds (in flight between the main process and the writer). More slots buffer longer
#: commits but make the copy into the ring slower (a larger ring is colder in the CPU caches).
RING_SLOTS = 16
#: Bytes per slot: trace matrix + cloud of an event of up to about 3,500 traces; bigger events go through the socket.
SLOT_BYTES = 4 << 20
_HEADER = 4096  # the writer's count of events released (uint64 at offset 0), then the slots
_ALIGN = 4096  # each array starts on a page: the writer hands it to the disk as it is (direct I/O, .rawio)
#: Events whose disk writes may be under way while the writer makes the next event's objects (.rawio.DiskQueue).
IN_FLIGHT = 2
#: Seconds between the idle writer's checks that the main process still runs.
PARENT_CHECK = 1.0
_RING_DIR = Path("/dev/shm")
_serial = itertools.count()


class WriterDied(RuntimeError):
    """The writer process ended without being asked to; the message is one line naming it."""


class Orphaned(Exception):
    """The main process was gone before this writer held its recording's lock: a next run may own the path."""


@dataclasses.dataclass(frozen=True)
class WriterSpec:
    """What the writer process records: its outputs and how (picklable, sent at start)."""

    targets: list[tuple[str, tuple[str, ...]]]  # (path, kinds); the first is the run file
    fsync: bool
    frib: bool
    options: dict[str, Any]
    flush_interval: float  # s
    max_batch_bytes: float
    consolidate: bool = True  # at the end the stores become the final files (.store)
    write_thread: bool = False  # direct writes from a second thread (.rawio.DiskQueue)


@dataclasses.dataclass
class TargetReport:
    """A target's bookkeeping after a commit (the writer's, mirrored in the main process)."""

    counts: dict[str, int]
    duplicates: int
    parts: int


# -- the main process's side ------------------------------------------------------------------


class WriterProcess:
    """The writer process and the ring that feeds it, seen from the sink (one per open sink).

    ``on_report(kind, payload)`` is called in the main process for every
    report (``committed``, ``warn``, ``error``) when :meth:`poll` or a wait
    reads it.
    """

    def __init__(self, spec: WriterSpec, on_report: Callable[[str, Any], None]):
        self.spec = spec
        self.on_report = on_report
        self.sent = 0  # events handed to the writer
        self.finished = False
        self.ring: mmap.mmap | None = None
        self.ring_problem: str | None = None
        ring_fd = self._make_ring()
        parent, child = socket.socketpair()
        code = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
                "from conduit_stages.hdf5_sink.writer import child_main; child_main(int(sys.argv[2]), int(sys.argv[3]))")
        fds = [child.fileno()] + ([ring_fd] if ring_fd >= 0 else [])
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(sys.path), str(child.fileno()), str(ring_fd)],
                pass_fds=fds, stdin=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            parent.close()
            if self.ring is not None:
                self.ring.close()
            raise
        finally:
            child.close()
            if ring_fd >= 0:
                os.close(ring_fd)
        self.conn = Connection(parent.detach())
        self._readable = select.poll()  # one poll object: Connection.poll builds a selector per call
        self._readable.register(self.conn.fileno(), select.POLLIN)
        self._header = np.ndarray((1,), np.uint64, buffer=self.ring) if self.ring is not None else None
        self._send(("start", spec))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _make_ring(self) -> int:
        """Create the ring (a /dev/shm file, unlinked at once); its descriptor, or -1 when it cannot be made."""
        path = _RING_DIR / f"conduit_hdf5_ring-{os.getpid()}-{next(_serial)}"  # not the engine's "conduit-"
        size = _HEADER + RING_SLOTS * SLOT_BYTES
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as err:
            self.ring_problem = f"{_RING_DIR}: {err.strerror}"
            return -1
        try:
            os.unlink(path)
            # Reserve the pages now: a sparse ring on a /dev/shm that fills up later would kill this
            # process with SIGBUS at the copy; here it is an error, and the socket is used instead.
            os.posix_fallocate(fd, 0, size)
            self.ring = _map_ring(fd, size)
        except OSError as err:
            os.close(fd)
            self.ring_problem = f"{path}: {err.strerror}"
            return -1
        return fd

    # -- events --------------------------------------------------------------------------

    def has_room(self) -> bool:
        """A slot is free (the writer has released the event ``RING_SLOTS`` before the next)."""
        return self._header is None or self.sent - int(self._header[0]) < RING_SLOTS

    def wait_for_room(self) -> None:
        """Block until a slot is free (the writer keeps going); raises WriterDied."""
        while not self.has_room():
            self.check_alive()
            self.poll(0.002)

    def send_event(self, event: Any, keys: tuple[str, ...]) -> None:
        """Hand ``event`` (its traces and the artifacts in ``keys``) to the writer; raises WriterDied.

        The caller made sure there is room (:meth:`has_room` / :meth:`wait_for_room`).
        """
        meta = {"id": event.id, "run": event.run, "timestamp": event.timestamp,
                "timestamp_other": event.timestamp_other, "complete": event.complete,
                "failures": event.failures, "skipped_stages": event.skipped_stages}
        artifacts = {k: v for k in keys if (v := event.artifacts.get(k)) is not None}
        # Arrays (traces, cloud, estimates ...) are copied into the ring; pickling even a small one costs more.
        bulk = {"traces": event.traces, **{k: artifacts.pop(k) for k, v in list(artifacts.items())
                                           if isinstance(v, np.ndarray) and not v.dtype.hasobject}}
        meta["artifacts"] = artifacts
        placed = self._place(bulk)
        self._send(("event", meta, placed))
        self.sent += 1

    def _place(self, arrays: dict[str, np.ndarray]) -> tuple:
        """Copy ``arrays`` into the next slot: ("ring", [(key, dtype, shape, offset)]); else ("inline", arrays)."""
        if self.ring is not None:
            arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
            if sum(a.nbytes + _ALIGN for a in arrays.values()) <= SLOT_BYTES:
                slot = self.sent % RING_SLOTS
                base = _HEADER + slot * SLOT_BYTES
                where, offset = [], base
                for key, a in arrays.items():
                    np.ndarray(a.shape, a.dtype, buffer=self.ring, offset=offset)[...] = a
                    where.append((key, dtype_name(a.dtype), a.shape, offset))
                    offset += -(-a.nbytes // _ALIGN) * _ALIGN
                return ("ring", where)
        return ("inline", arrays)

    def set_run_state(self, losses: dict[str, int], stage_outcomes: dict, parameter_changes: list) -> None:
        self._send(("state", losses, stage_outcomes, [c.to_dict() if hasattr(c, "to_dict") else c
                                                       for c in parameter_changes]))

    def flush(self) -> None:
        """Commit what the writer holds now, and wait until it has (reports are handled on the way)."""
        self._send(("flush",))
        self._wait_for("flushed")

    def finish(self) -> Any:
        """Commit what the writer holds and close its stores; returns its last report. Raises WriterDied.

        The writer then waits for :meth:`end` (the sink consolidates meanwhile): should this process die
        before, the writer finishes the recording itself.
        """
        self._send(("finish",))
        payload = self._wait_for("finished")
        self.finished = True
        return payload

    def end(self) -> None:
        """Let a finished writer exit, and join it."""
        try:
            self._send(("exit",))
        except WriterDied:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - it answered, then hung
            self.proc.kill()
            self.proc.wait()
        self.close()

    def kill(self) -> None:
        """End the writer at once (start-up failed); nothing it holds is committed."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        self.conn.close()
        if self.ring is not None:
            self._header = None
            self.ring.close()
            self.ring = None

    # -- reports ---------------------------------------------------------------------------

    def poll(self, timeout: float = 0.0, until: Callable[[], bool] = lambda: False) -> None:
        """Handle the writer's reports waiting (or arriving within ``timeout`` s), stopping once ``until()``."""
        try:
            while not until() and self._readable.poll(timeout * 1e3):
                kind, payload = self.conn.recv()
                self.on_report(kind, payload)
                timeout = 0.0
        except (EOFError, OSError):
            self.check_alive()
            raise self._died() from None

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise self._died()

    def _died(self) -> WriterDied:
        code = self.proc.wait()
        how = how_it_ended(code)
        return WriterDied(f"the hdf5 writer process (pid {self.proc.pid}) died ({how})")

    def _wait_for(self, wanted: str) -> Any:
        got: list[Any] = []
        outer = self.on_report

        def catch(kind: str, payload: Any) -> None:
            if kind == wanted:
                got.append(payload)
            else:
                outer(kind, payload)

        self.on_report = catch
        try:
            while not got:
                self.poll(0.05, until=lambda: bool(got))  # the writer exits after its last report
                if not got:
                    self.check_alive()
        finally:
            self.on_report = outer
        return got[0]

    def _send(self, message: tuple) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # its end of the socket closed: it is exiting
            raise self._died() from None


def _map_ring(fd: int, size: int) -> mmap.mmap:
    """Map the ring with its page tables filled now (MAP_POPULATE): otherwise the first pass through its
    ~8,000 pages faults in each process during the first seconds of serving, when events are being skipped."""
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)


# -- the writer process --------------------------------------------------------------------


def child_main(sock_fd: int, ring_fd: int) -> None:
    """The writer process: record what arrives until ``finish`` (or the main process is gone)."""
    conn = Connection(sock_fd)
    ring = None
    if ring_fd >= 0:
        ring = _map_ring(ring_fd, os.fstat(ring_fd).st_size)
        os.close(ring_fd)
    try:
        kind, spec = pickle.loads(conn.recv_bytes())
    except EOFError:
        return
    assert kind == "start"
    writer = None
    try:
        writer = _Writer(conn, ring, spec)
        writer.run()
    except Orphaned:
        pass  # the main process was gone before this recording began: a next run may own the path
    except (EOFError, OSError) as err:
        if writer is None or (isinstance(err, OSError) and not writer.parent_gone()):
            _report_error(conn, err)
        try:
            writer.rescue()  # the main process is gone: finish its recording
        except BaseException:  # nobody to tell (no traceback on the terminal): the next run finishes it
            raise SystemExit(1) from None
    except BaseException as err:  # one line to the main process, not a traceback on the terminal
        _report_error(conn, err)


def _error_text(err: Exception) -> str:
    """The one line the main process shows for a failed write."""
    from .partfile import WriteError

    return str(err) if isinstance(err, WriteError) else f"hdf5 writer process: {type(err).__name__}: {err}"


def _report_error(conn: Connection, err: BaseException) -> None:
    try:
        conn.send(("error", (f"hdf5 writer process: {type(err).__name__}: {err}", 0)))
    except OSError:
        pass
    raise SystemExit(1) from None


class _Writer:
    def __init__(self, conn: Connection, ring: mmap.mmap | None, spec: WriterSpec):
        from .partfile import PartitionedFile
        from .recorder import Recorder, Target

        self.conn = conn
        self.orphaned = False  # the main process is gone: reports go nowhere
        self.readable = select.poll()  # one poll object: Connection.poll builds a selector per call
        self.readable.register(conn.fileno(), select.POLLIN)
        self.ring = ring
        self.header = np.ndarray((1,), np.uint64, buffer=ring) if ring is not None else None
        self.spec = spec
        targets = [Target(PartitionedFile(Path(path), fsync=spec.fsync), tuple(kinds)) for path, kinds in spec.targets]
        self.recorder = Recorder(targets, frib=spec.frib, options=spec.options,
                                 warn=lambda text: self.tell(("warn", text)), write_thread=spec.write_thread)
        self.recorder.on_locked = self._check_parent_locked
        self.finished = False  # the stores are closed (after "finish")
        self.failed = False  # after a write error every later event is discarded (counted by the sink)
        # A failed write's (error, events lost): reported at the batch's commit time, as when whole batches were
        # written at once; the events written whole before it are committed at once (:meth:`fail`).
        self.batch_error: tuple[Exception, int] | None = None
        self.last_commit = time.monotonic()
        self.batch_bytes = 0
        self.parent = os.getppid()
        # Ring slots not released yet: (slot's event, the disk queue's ticket of its last write), in order.
        self.unreleased: collections.deque[int] = collections.deque()

    def parent_gone(self) -> bool:
        return os.getppid() != self.parent

    def _check_parent_locked(self) -> None:
        """The recording's lock is now held: go on only if the main process still runs (else a next run may
        already own the path; once the lock is held, a next run waits for this process)."""
        if self.parent_gone():
            raise Orphaned()

    def tell(self, message: tuple) -> None:
        """A report to the main process (none once it is gone)."""
        if self.orphaned:
            return
        try:
            self.conn.send(message)
        except OSError:
            if not self.parent_gone():
                raise
            self.orphaned = True

    def run(self) -> None:
        from conduit.event import Event

        while True:
            timeout = None
            if self.recorder.pending or self.batch_error:  # commit on time even while events keep arriving
                timeout = self.last_commit + self.spec.flush_interval - time.monotonic()
                if timeout <= 0:
                    self.commit("committed")
                    continue
            if self.unreleased and not self.readable.poll(0):
                self.release(wait=True)  # nothing to overlap with: give the main process its slots back now
            # Wake at least every PARENT_CHECK s: the socket's end closes when the main process dies, unless a
            # process it started holds a copy of it; its parent id says so in any case.
            if not self.readable.poll(min(PARENT_CHECK, PARENT_CHECK if timeout is None else timeout) * 1e3):
                if self.parent_gone():
                    raise EOFError("the main process is gone")
                continue
            data = self.conn.recv_bytes()
            message = pickle.loads(data)
            kind = message[0]
            if kind == "event":
                self.add(Event, message[1], message[2], data)
            elif kind == "state":
                self.recorder.set_run_state(*message[1:])
            elif kind == "flush":
                self.commit("committed")
                self.tell(("flushed", None))
            elif kind == "finish":
                self.commit("committed")
                self.finish_stores()
                self.finished = True
                self.tell(("finished", self.report()))
            elif kind == "exit":
                self.release_locks()
                return

    def add(self, make_event: type, meta: dict, placed: tuple, message: bytes) -> None:
        where, arrays = placed
        if where == "ring":
            arrays = {key: np.ndarray(shape, dtype_named(dtype), buffer=self.ring, offset=offset)
                      for key, dtype, shape, offset in arrays}
        if not self.failed:
            traces = arrays.pop("traces")
            meta["artifacts"].update(arrays)
            event = make_event(traces=traces, **meta)
            try:
                self.recorder.add(event, message if where == "ring" else None)
                self.batch_bytes += traces.nbytes + sum(a.nbytes for a in arrays.values())
            except Orphaned:
                raise
            except Exception as err:
                self.fail(err, keep_written="adding")
        del arrays
        self.unreleased.append(self.recorder.disk.submitted)
        self.release()
        if self.batch_bytes >= self.spec.max_batch_bytes:
            self.commit("committed")

    def release(self, wait: bool = False) -> None:
        """Free the ring slots whose bytes are on the disk; keep at most IN_FLIGHT events being written.

        A failed background write ends the recording (:meth:`fail`) as one in the writer's thread does.
        """
        while self.unreleased:
            ticket = self.unreleased[0]
            if not (wait or len(self.unreleased) > IN_FLIGHT or self.recorder.disk.done(ticket)):
                break
            try:
                self.recorder.wait_for_disk(ticket)
            except Exception as err:
                if not self.failed:
                    self.fail(err, keep_written="queued")
            self.unreleased.popleft()
            if self.header is not None:
                self.header[0] += 1  # the slot is free again

    def commit(self, kind: str) -> None:
        self.release(wait=True)
        self.last_commit = time.monotonic()
        self.batch_bytes = 0
        if self.batch_error is not None:
            (err, lost), self.batch_error = self.batch_error, None
            self.tell(("error", (_error_text(err), lost)))
            return
        if self.failed or not self.recorder.pending:
            return
        try:
            n = self.recorder.commit()
        except Exception as err:
            self.fail(err)
            return
        self.tell((kind, (n, self.report())))

    def finish_stores(self) -> None:
        """Close the stores; mark them complete (the final files) unless a write failed or not consolidating."""
        try:
            self.recorder.finish(complete=self.spec.consolidate and not self.failed)
        except Exception as err:  # the journal holds every committed event: the next consolidation uses it
            from .partfile import describe_os_error

            where = self.recorder.run_target.file.parts_dir
            self.tell(("warn", f"hdf5 writer process: closing the recording failed ({describe_os_error(err)}); "
                               f"every committed event is in the journal of {where}, used by the next "
                               f"consolidation"))

    def fail(self, err: Exception, keep_written: str | None = None) -> None:
        """A write failed: the recording ends here; the main process is told in one line (then it stops the run).

        ``keep_written`` ("adding": the event being added failed; "queued": a background write did): the
        batch's events written before the failing one are committed at once (:meth:`.Recorder.keep_written`),
        so that on a full disk every event written whole is kept; the error is told at the batch's commit
        time. Else (the commit itself failed) the batch is lost and the error told now.
        """
        self.failed = True
        if keep_written is None:
            self.tell(("error", (_error_text(err), self.recorder.abandon())))
            return
        committed, lost = self.recorder.keep_written(adding=keep_written == "adding")
        if committed:
            self.tell(("committed", (committed, self.report())))
        self.batch_error = (err, lost)

    def rescue(self) -> None:
        """The main process is gone: commit every event held, close the stores and consolidate (or link parts).

        Only once this recording has begun (the lock held, see :meth:`_check_parent_locked`); a next run on
        the path waits for this process (:func:`.journal.wait_for_writer`).
        """
        from .journal import link_journal
        from .partfile import consolidate
        from .recorder import write_object
        from .store import read_complete

        self.orphaned = True
        targets = self.recorder.targets
        if not any(t.lock >= 0 for t in targets):
            return  # no event was ever recorded: nothing of the path is ours
        if not self.finished:
            self.release(wait=True)
            self.commit("committed")
            self.finish_stores()
        for target in targets:
            path = target.file.path
            if not target.file.parts_dir.is_dir():
                continue  # consolidated by the main process already
            try:
                if self.spec.consolidate and read_complete(target.file.parts_dir) is not None:
                    consolidate(path)
                    continue
            except Exception:  # noqa: BLE001 - nobody to tell: leave it readable as file + parts below
                pass
            link_journal(path, write_object, fsync=target.file.fsync)
        self.release_locks()

    def release_locks(self) -> None:
        """Remove and release the recordings' writer.lock (a next run waiting on it goes on)."""
        from .journal import LOCK_NAME

        for target in self.recorder.targets:
            if target.lock >= 0:
                with contextlib.suppress(OSError):
                    os.unlink(target.file.parts_dir / LOCK_NAME)
                os.close(target.lock)
                target.lock = -1

    def report(self) -> tuple[int, list[TargetReport]]:
        return self.recorder.flushed_events, [TargetReport(dict(t.counts), t.duplicates, t.file.parts)
                                             for t in self.recorder.targets]
