"""The recording's final file, written while recording, so that closing a run copies no event data.

Consolidating part files at the end (:func:`.partfile.consolidate`'s copy)
reads and writes every byte of the run again: ~65 s for the 8.5 GB of a
60 s run at 200 events/s. So the writer process makes each event's objects
in the **store** ``<path>.parts/store.h5``, an HDF5 file open for the whole
run, whose large datasets (trace matrices, clouds) get their bytes by direct
I/O at the offsets HDF5 allocated (:mod:`.rawio`) - the only copy of those
bytes on the disk; HDF5 keeps the store's metadata in memory and writes it
when the store is closed, so a store whose writer was killed does not open.
What each event's objects are made from, and where their bytes lie here, is
in the journal (:mod:`.journal`), from which part files whose large
datasets are HDF5 *external storage* of these bytes (absolute path, offset,
size) are made when the recording is not consolidated (the store's raw bytes
are never moved or rewritten).

At the end the writer closes the store and writes ``store.complete``
(the number of events it holds); :func:`.partfile.consolidate` then copies the
master's own objects (attributes, tables, histograms) into the store and
renames it over the master: seconds, whatever the size of the run. Without
``store.complete`` (a killed writer, a failed write, ``consolidate = false``)
consolidation copies the part files, reading the large datasets' bytes
from the store (:func:`external_bytes`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import rawio

__all__ = ["Store", "STORE_NAME", "COMPLETE_NAME", "read_complete", "external_bytes"]

STORE_NAME = "store.h5"
COMPLETE_NAME = "store.complete"


class Store:
    """The store of one output file (writer process side): its HDF5 file, groups and raw writer."""

    def __init__(self, parts_dir: Path, kinds: tuple[str, ...], queue: Any = None):
        import h5py

        self.path = parts_dir / STORE_NAME
        parts_dir.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.path, "w", **rawio.file_alignment())
        self.raw = rawio.RawWriter(self.path, queue, preallocate=True)
        self.raw.placements = []
        self.groups = {kind: self.file.create_group(kind) for kind in kinds}
        self.name = str(self.path.resolve()).encode()  # absolute: readers resolve relative names from their cwd
        self.usable = True  # False once an event was written here but not committed (a failed write)

    def external(self) -> rawio.External:
        """Where the part's copy of the event just written here finds its large datasets' bytes."""
        placements, self.raw.placements = self.raw.placements, []
        return rawio.External(self.name, placements)

    def sync(self) -> None:
        """fsync the bytes written so far (the part about to be published points at them)."""
        os.fsync(self.raw.fd)

    def trim(self, end: int) -> None:
        """Cut a store that will never be the final file after ``end`` bytes (the committed events' data).

        After a failed write (a full disk) this gives back the blocks of the failed batch and the
        reservation ahead, which the part files made from the journal need.
        """
        try:
            if self.path.stat().st_size > end:
                os.truncate(self.path, end)
        except OSError:
            pass  # the part files say what is wrong if they do not fit

    def finish(self, events: int, *, complete: bool, fsync: bool) -> bool:
        """Close the store (HDF5 writes its metadata); with ``complete``, mark it as holding ``events`` events.

        Returns whether it was marked complete (it then becomes the final file at consolidation).
        """
        self.raw.close()
        self.file.close()  # raises when the metadata does not fit (a full disk)
        if not (complete and self.usable):
            return False
        if fsync:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        marker = self.path.with_name(COMPLETE_NAME)
        marker.write_text(json.dumps({"events_flushed": events}) + "\n")
        return True


def read_complete(parts_dir: Path) -> int | None:
    """The events a completed store holds (None: no completed store in ``parts_dir``)."""
    marker = parts_dir / COMPLETE_NAME
    if not (parts_dir / STORE_NAME).is_file():
        return None
    try:
        return int(json.loads(marker.read_text())["events_flushed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def external_bytes(dataset: Any, parts_dir: Path) -> np.ndarray:
    """The data of a dataset with external storage, read from its files (a moved ``.parts`` directory too)."""
    out = np.empty(dataset.shape, dtype=dataset.dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    done = 0
    for name, offset, size in dataset.external:
        path = Path(name)
        if not path.is_file():  # the recording was moved since: the store sits in its parts directory
            path = parts_dir / path.name
        size = min(size, len(view) - done)
        with open(path, "rb") as f:
            f.seek(offset)
            got = f.readinto(view[done:done + size])
        if got != size:
            raise OSError(f"{path}: {size - (got or 0)} bytes missing at offset {offset + (got or 0)}")
        done += size
    return out
