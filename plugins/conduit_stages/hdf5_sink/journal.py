"""The writer's journal: what each committed event's objects are made from, so that they are made only once.

The writer process makes every event's objects in the **store**
(``<path>.parts/store.h5``, :mod:`.store`), whose HDF5 metadata stays in
memory until the store is closed: a store whose writer was killed does not
open. Until w25a the writer also made every object a second time, in a
**part file** closed and published through the master at each commit, so
that ``path`` held every committed event at every instant (0.3-0.5 ms of the
writer's CPU per event). Now it appends, at each commit, one CRC'd batch to
``<path>.parts/journal.bin``: per event the message it was made from (ids,
timestamps, FRIB data, clusters: the pickle the main process sent), the bytes
of its small arrays, and where its large datasets' bytes lie in the store
(written there by direct I/O before the batch). The part files are made from
the journal only when they are needed (:func:`link_journal`): when the
recording is not consolidated at its end (``consolidate = false``, a failed
write), when the writer died (by the main process), or by the next run or
the consolidation tool when both processes died. Whenever the main process
dies, its writer finishes the recording itself (:mod:`.writer`), holding
``<path>.parts/writer.lock`` so that a next run on the path waits for it
(:func:`wait_for_writer`).

A batch on the disk: ``MAGIC``, the payload's length (uint64) and CRC-32
(uint32), then the payload (a pickle of ``(settings, records)``). A batch cut
short or damaged ends the journal there (its events were never committed:
the master is replaced only after the batch is written).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["JOURNAL_NAME", "LOCK_NAME", "Journal", "read_batches", "link_journal", "hold_writer_lock",
           "wait_for_writer", "WriterStillBusy"]

JOURNAL_NAME = "journal.bin"
LOCK_NAME = "writer.lock"
MAGIC = b"CJB1"
_HEAD = struct.Struct("<4sQI")


class Journal:
    """The journal of one output (writer process side): records gathered per batch, appended at each commit."""

    def __init__(self, parts_dir: Path, settings: dict[str, Any], *, fsync: bool = False):
        self.path = parts_dir / JOURNAL_NAME
        self.settings = settings  # what every record is written with (frib, dataset options)
        self.fsync = fsync
        self.records: list[tuple] = []
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def add(self, record: tuple) -> None:
        self.records.append(record)

    def commit(self) -> None:
        """Append the batch gathered since the last commit (raises OSError: no space left, file too large)."""
        payload = pickle.dumps((self.settings, self.records), protocol=pickle.HIGHEST_PROTOCOL)
        data = _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        written = os.write(self.fd, data)
        if written != len(data):  # a short write (a file size limit): the batch is not in the journal
            raise OSError(27, "File too large")
        if self.fsync:
            os.fsync(self.fd)
        self.records = []

    def discard(self) -> None:
        """Forget the batch being gathered (its events are lost with a failed write)."""
        self.records = []

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_batches(path: Path) -> list[tuple[dict, list[tuple]]]:
    """The whole batches of a journal file, in order (reading stops at one cut short or damaged)."""
    batches = []
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    while at + _HEAD.size <= len(data):
        magic, size, crc = _HEAD.unpack_from(data, at)
        payload = data[at + _HEAD.size:at + _HEAD.size + size]
        if magic != MAGIC or len(payload) != size or zlib.crc32(payload) != crc:
            break
        batches.append(pickle.loads(payload))
        at += _HEAD.size + size
    return batches


def event_record(message: bytes, arrays: dict[str, Any], objects: list[tuple[str, str, list]]) -> tuple:
    """One event of a batch: the pickled message it came in, its arrays (bytes or store offsets), its objects.

    ``arrays``: key -> an ndarray (its bytes are kept) or ``(offset, dtype, shape)`` of bytes in the store;
    ``objects``: ``(kind, name, placements)`` in the order they were made (placements: the store's
    ``(offset, bytes)`` of the object's large datasets).
    """
    return (message, arrays, objects)


def _store_array(store: Path, offset: int, dtype: Any, shape: tuple) -> np.ndarray:
    return np.memmap(store, dtype=np.dtype(dtype), mode="r", offset=offset, shape=tuple(shape))


def link_journal(path: Path, write_object: Callable[..., None], *, fsync: bool = False) -> int:
    """Make the journal's committed events into part files linked from the master at ``path``; objects linked.

    Events are taken up to the master's ``events_flushed`` (a batch written but never published is left
    out); objects already linked (an earlier call interrupted) are skipped. The journal is removed
    afterwards: the recording is then master + parts, as a consolidation expects it. ``write_object(kind,
    group, event, name, raw, frib, options)`` makes one object (the recorder's own code).
    """
    import h5py

    from conduit.event import Event

    from .partfile import PART_RE, PartitionedFile, parts_dir_of
    from .rawio import External
    from .store import STORE_NAME

    path = Path(path)
    parts_dir = parts_dir_of(path)
    journal = parts_dir / JOURNAL_NAME
    if not journal.is_file():
        return 0
    with h5py.File(path, "r") as master:
        flushed = int(master.attrs.get("events_flushed", 0))
        linked = {name: set(master[name]) for name in master if isinstance(master[name], h5py.Group)}
    store = parts_dir / STORE_NAME
    store_name = str(store.resolve()).encode()
    pfile = PartitionedFile(path, fsync=fsync)
    pfile.parts = max((int(m.group(1)) for p in parts_dir.iterdir() if (m := PART_RE.match(p.name))), default=0)
    made = 0
    taken = 0
    for settings, records in read_batches(journal):
        records = records[:max(flushed - taken, 0)]
        taken += len(records)
        todo = [(r, [o for o in r[2] if o[1] not in linked.get(o[0], ())]) for r in records]
        todo = [(r, objects) for r, objects in todo if objects]
        if not todo:
            continue
        part = pfile.open_part()
        links: dict[str, list[str]] = {}
        try:
            for (message, arrays, _), objects in todo:
                _kind, meta, _placed = pickle.loads(message)
                bulk = {key: value if isinstance(value, np.ndarray) else _store_array(store, *value)
                        for key, value in arrays.items()}
                traces = bulk.pop("traces", None)
                if traces is None:
                    traces = np.zeros((0, 517), np.int16)
                meta["artifacts"].update(bulk)
                event = Event(traces=traces, **meta)
                for kind, name, placements in objects:
                    group = part.require_group(kind)
                    write_object(kind, group, event, name, External(store_name, placements), settings["frib"],
                                 settings["options"])
                    links.setdefault(kind, []).append(name)
                    made += 1
        except BaseException:
            pfile.abandon_part(part)
            raise
        pfile.publish_part(part, links, lambda m: None)
    journal.unlink()
    return made


class WriterStillBusy(OSError):
    """The writer process of an earlier run still finishes the recording (one line naming the path)."""


def hold_writer_lock(parts_dir: Path) -> int:
    """Take ``parts_dir/writer.lock`` for this writer process (until it exits); the descriptor.

    Raises OSError when another process holds it (cannot happen: one run per path).
    """
    fd = os.open(parts_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def wait_for_writer(path: Path, *, timeout: float = 600.0, say: Callable[[str], None] | None = None) -> None:
    """Return once no writer process of an earlier run is finishing the recording at ``path``.

    A run whose main process was killed leaves its writer finishing the recording (seconds: it closes the
    store and consolidates); a next run on the path, or the consolidation tool, waits for it here.
    ``say(text)`` is told once when there is something to wait for. Raises WriterStillBusy after ``timeout`` s.
    """
    from .partfile import parts_dir_of

    lock = parts_dir_of(Path(path)) / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no writer ever held it (or its recording is consolidated and its parts removed)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if not told and say is not None:
                with contextlib.suppress(OSError, ValueError):
                    pid = int(lock.read_text().split()[0])
                    say(f"{path}: the hdf5 writer process (pid {pid}) of an earlier run still finishes this "
                        f"recording; waiting for it")
                told = True
            if time.monotonic() > deadline:
                raise WriterStillBusy(f"{path}: the hdf5 writer process of an earlier run has been finishing this "
                                      f"recording for more than {timeout:g} s; try again when it is done (its "
                                      f"pid is in {lock})")
            time.sleep(0.05)
    finally:
        os.close(fd)
