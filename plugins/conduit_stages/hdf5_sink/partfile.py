"""An HDF5 file that is never seen half-written, even after SIGKILL.

HDF5 updates its metadata (B-trees, heaps, object headers) in place, in
several writes; a process killed in the middle leaves a file that h5py cannot
open or whose groups cannot be listed (measured: docs/outputs.md). So the file
at ``path`` is only ever *replaced*, never modified:

* the **master** at ``path`` holds the group attributes and the tables
  (estimates ...); each commit copies it to ``<path>.tmp``, updates the copy,
  closes it and renames it over ``path`` (``rename`` is atomic);
* event objects live in **part files** ``<path>.parts/part_NNNNNN.h5``
  (written under a temporary name, closed, then renamed into place), linked
  from the master by HDF5 external links. The hdf5 sink's writer makes them
  from its journal only when needed (:mod:`.journal`); until w25a it wrote
  one at every commit.

At every instant ``path`` is a complete, closed HDF5 file; h5py follows the
external links transparently (relative to the master's directory).
:func:`consolidate` makes one self-contained file of a recording (the
writer's completed store renamed into place, or every part's objects
copied) and removes the parts.

Files use the default (earliest) format bound: superblock v0, which has no
"file open for write" flag, so an h5py ``File(path, "r")`` never refuses a
file whose writer died (libver "latest" and SWMR set that flag).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .store import COMPLETE_NAME, STORE_NAME, external_bytes, read_complete

__all__ = ["PartitionedFile", "consolidate", "WriteError", "describe_os_error", "parts_dir_of"]

PART_RE = re.compile(r"^part_(\d{6,})\.h5$")


class WriteError(OSError):
    """Writing an output file failed; the message is one line naming the file."""


def parts_dir_of(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


def describe_os_error(err: BaseException) -> str:
    """A short reason for an OS or HDF5 error (HDF5 buries errno in a long message)."""
    text = str(err)
    errno = getattr(err, "errno", None)
    if errno == 28 or "errno = 28" in text or "No space left" in text:
        return "no space left on device"
    if errno == 27 or "errno = 27" in text or "File too large" in text:
        return "file too large (file size limit reached)"
    if errno == 13 or "errno = 13" in text or "Permission denied" in text:
        return "permission denied"
    if errno == 30 or "errno = 30" in text or "Read-only file system" in text:
        return "read-only file system"
    match = re.search(r"error message = '([^']*)'", text)
    if match:
        return match.group(1)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    first = text.splitlines()[0] if text else type(err).__name__
    return first[:200]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system supports it
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class PartitionedFile:
    """The master file at ``path`` plus its part files, updated only by atomic renames.

    ``init_master(h5file)`` fills a fresh master (groups, attributes, empty
    tables). :meth:`commit` adds one batch. Not thread-safe; one writer per path.
    """

    def __init__(self, path: Path, *, fsync: bool = False):
        self.path = Path(path)
        self.parts_dir = parts_dir_of(self.path)
        self.fsync = fsync
        self.parts = 0
        self.staged = False  # a fresh master waits at staged_path (ours: only then may we remove it)
        self.created = False

    # -- creation ------------------------------------------------------------------

    def stage(self, init_master: Callable[[Any], None]) -> None:
        """Write a fresh master under ``<path>.tmp``, leaving ``path`` untouched (see :meth:`publish`)."""
        import h5py

        tmp = self.staged_path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.staged = True
            with h5py.File(tmp, "w") as f:
                init_master(f)
            self._sync(tmp)
        except (OSError, RuntimeError) as err:
            _unlink(tmp)
            self.staged = False
            raise WriteError(f"cannot write {self.path}: {describe_os_error(err)}") from None

    def publish(self) -> None:
        """Rename the staged master into place (the caller made room at ``path``)."""
        try:
            os.replace(self.staged_path, self.path)
            if self.fsync:
                _fsync_dir(self.path.parent)
        except OSError as err:
            raise WriteError(f"cannot write {self.path}: {describe_os_error(err)}") from None
        self.created = True

    def discard(self) -> None:
        """Remove a staged master that was never published (start-up failed or was interrupted)."""
        if self.staged and not self.created:
            _unlink(self.staged_path)
            self.staged = False

    def create(self, init_master: Callable[[Any], None]) -> None:
        """Stage and publish a fresh master at a path that holds no file (tests, benchmarks)."""
        if self.path.exists():
            raise WriteError(f"{self.path}: already exists")
        self.stage(init_master)
        self.publish()

    @property
    def staged_path(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    # -- one batch -----------------------------------------------------------------

    def commit(
        self,
        write_part: Callable[[Any], dict[str, list[str]]],
        update_master: Callable[[Any], None],
    ) -> int:
        """Write one part file and atomically publish it through the master; return the part number.

        ``write_part(h5file)`` writes the batch's objects (``/group/name``) and
        returns ``{group: [names]}`` of the objects to link from the master.
        ``update_master(h5file)`` then updates attributes and tables of the
        master copy. On any error the master is left as it was.
        """
        part = self.open_part()
        try:
            links = write_part(part)
        except (OSError, RuntimeError) as err:
            self.abandon_part(part)
            raise WriteError(f"cannot write {self.next_part_path}: {describe_os_error(err)}") from None
        return self.publish_part(part, links, update_master)

    @property
    def next_part_path(self) -> Path:
        """Where the part being written goes once complete."""
        return self.parts_dir / f"part_{self.parts + 1:06d}.h5"

    def open_part(self, **file_options: Any) -> Any:
        """An h5py file, open for writing, for the next part (under a temporary name until published).

        Objects may be added to it one event at a time; nothing of it is visible
        through the master until :meth:`publish_part`. ``file_options`` go to
        ``h5py.File`` (the writer's alignment, :func:`.rawio.file_alignment`).
        """
        import h5py

        part = self.next_part_path
        try:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            return h5py.File(part.with_name(part.name + ".tmp"), "w", **file_options)
        except (OSError, RuntimeError) as err:
            raise WriteError(f"cannot write {part}: {describe_os_error(err)}") from None

    def abandon_part(self, f: Any) -> None:
        """Close and remove a part that will not be published (its write failed)."""
        part = self.next_part_path
        with contextlib.suppress(Exception):
            f.close()
        _unlink(part.with_name(part.name + ".tmp"))

    def publish_part(self, f: Any, links: dict[str, list[str]], update_master: Callable[[Any], None],
                     before_publish: Callable[[], None] | None = None) -> int:
        """Close the part ``f`` (from :meth:`open_part`), rename it into place and link it from the master.

        ``links`` is ``{group: [names]}`` of the part's objects to link. On any
        error the part is removed and the master is left as it was.
        ``before_publish()`` is called just before the master is replaced; an
        exception from it other than OSError leaves the master as it was (and
        the temporaries for the next run to tidy).
        """
        import h5py

        from .h5fast import link_external

        number = self.parts + 1
        part = self.next_part_path
        part_tmp = part.with_name(part.name + ".tmp")
        master_tmp = self.path.with_name(self.path.name + ".tmp")
        stage = part
        try:
            f.close()
            self._sync(part_tmp)
            os.replace(part_tmp, part)
            stage = self.path
            shutil.copyfile(self.path, master_tmp)
            relative = f"{self.parts_dir.name}/{part.name}"
            with h5py.File(master_tmp, "r+") as m:
                for group, names in links.items():
                    g = m.require_group(group)
                    for name in names:
                        link_external(g, name, relative, f"/{group}/{name}")
                update_master(m)
            self._sync(master_tmp)
            if before_publish is not None:
                before_publish()
            os.replace(master_tmp, self.path)
            if self.fsync:
                _fsync_dir(self.path.parent)
        except (OSError, RuntimeError) as err:
            with contextlib.suppress(Exception):
                f.close()
            _unlink(part_tmp)
            _unlink(master_tmp)
            if stage == part:
                _unlink(part)
            raise WriteError(f"cannot write {stage}: {describe_os_error(err)}") from None
        self.parts = number
        return number

    def update(self, update_master: Callable[[Any], None], before_publish: Callable[[], None] | None = None) -> None:
        """Change the master only (a commit's attributes and rows, the histograms), atomically.

        ``before_publish()`` is called just before the master is replaced (see :meth:`publish_part`).
        """
        import h5py

        master_tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            shutil.copyfile(self.path, master_tmp)
            with h5py.File(master_tmp, "r+") as m:
                update_master(m)
            self._sync(master_tmp)
            if before_publish is not None:
                before_publish()
            os.replace(master_tmp, self.path)
        except (OSError, RuntimeError) as err:
            _unlink(master_tmp)
            raise WriteError(f"cannot write {self.path}: {describe_os_error(err)}") from None

    def _sync(self, path: Path) -> None:
        if self.fsync:
            _fsync_file(path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def consolidate(path: Path | str, *, remove_parts: bool = True) -> int:
    """Make the master at ``path`` one self-contained file holding every event object of the recording.

    Returns the number of event objects. When the writer left a completed
    store (:mod:`.store`) holding exactly the master's events, the master's
    own objects are copied into it and it replaces ``path``: no event data is
    copied. Otherwise the journal's events are first made into part files
    (:func:`.journal.link_journal`) and every linked object is copied out of
    its part (the large datasets' bytes from the store). The result replaces
    ``path`` atomically; the part directory is removed afterwards. A file
    without parts is left untouched (returns 0). The caller makes sure no
    writer process still works on the recording (:func:`.journal.wait_for_writer`).
    """
    import h5py

    from .journal import JOURNAL_NAME, link_journal
    from .recorder import write_object

    path = Path(path)
    parts_dir = parts_dir_of(path)
    tmp = path.with_name(path.name + ".consolidating")
    copied = 0
    try:
        with h5py.File(path, "r") as master:
            store = _completed_store(master, parts_dir, _linked_counts(master))
        if store is None and (parts_dir / JOURNAL_NAME).is_file():
            link_journal(path, write_object)
        with h5py.File(path, "r") as master:
            linked = _linked_counts(master)
            if store is not None:
                (parts_dir / COMPLETE_NAME).unlink()  # interrupted from here on: the parts are copied next time
                with h5py.File(store, "r+") as out:
                    copied = sum(len(out[name]) for name in out)
                    _copy_structure(master, out)
                tmp = store
            elif not sum(linked.values()):
                if remove_parts and parts_dir.exists():
                    shutil.rmtree(parts_dir)
                return 0
            else:
                copied = _copy_parts(master, path, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError, KeyError) as err:
        if tmp.name != STORE_NAME:
            _unlink(tmp)
        raise WriteError(f"cannot consolidate {path}: {describe_os_error(err)}") from None
    if remove_parts and parts_dir.exists():
        shutil.rmtree(parts_dir)
    return copied


def _linked_counts(master: Any) -> dict[str, int]:
    """Links per group of the master ({"/events": 12000, ...}) in the groups holding external links."""
    import h5py

    counts = {}
    for name in master:
        if isinstance(master.get(name, getlink=True), h5py.HardLink) and isinstance(master[name], h5py.Group):
            group = master[name]
            if len(group) and isinstance(group.get(next(iter(group)), getlink=True), h5py.ExternalLink):
                counts[group.name] = len(group)
    return counts


def _completed_store(master: Any, parts_dir: Path, linked: dict[str, int]) -> Path | None:
    """The completed store of ``parts_dir`` if it holds exactly the master's events and objects, else None."""
    import h5py

    events = read_complete(parts_dir)
    if events is None or events != int(master.attrs.get("events_flushed", -1)):
        return None
    store = parts_dir / STORE_NAME
    try:
        with h5py.File(store, "r") as f:
            if any(name not in f or len(f[name]) != n for name, n in linked.items()):
                return None
    except (OSError, RuntimeError):
        return None
    return store


def _copy_parts(master: Any, path: Path, tmp: Path) -> int:
    """Copy the master's own objects and every linked object into ``tmp``; the number of linked objects."""
    import h5py

    parts_dir = parts_dir_of(path)
    links: dict[str, list[tuple[str, str]]] = defaultdict(list)  # part file -> [(dest, source path)]
    _collect_links(master, links)
    copied = 0
    with h5py.File(tmp, "w") as out:
        _copy_structure(master, out)
        for filename in sorted(links):
            with h5py.File(path.parent / filename, "r") as part:
                for dest, source in links[filename]:
                    parent, _, name = dest.rpartition("/")
                    part.copy(part[source], out[parent or "/"], name=name)
                    _materialize(part[source], out[dest], parts_dir)
                    copied += 1
    return copied


def _materialize(source: Any, copy: Any, parts_dir: Path) -> None:
    """Replace the external-storage datasets of ``copy`` (from ``source``) by datasets holding their bytes."""
    import h5py

    from .h5fast import create_dataset

    if isinstance(source, h5py.Group):
        for name in source:
            if isinstance(source.get(name, getlink=True), h5py.HardLink):
                _materialize(source[name], copy[name], parts_dir)
        return
    if not source.external:
        return
    parent, name = copy.parent, copy.name.rpartition("/")[2]
    attrs = [(key, source.attrs[key], source.attrs.get_id(key).dtype) for key in source.attrs]
    del parent[name]
    ds = create_dataset(parent, name, external_bytes(source, parts_dir))
    for key, value, dtype in attrs:
        ds.attrs.create(key, value, dtype=dtype)


def _collect_links(group: Any, links: dict[str, list[tuple[str, str]]]) -> None:
    import h5py

    for name in group:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            dest = f"{group.name.rstrip('/')}/{name}"
            links[link.filename].append((dest, link.path))
        elif isinstance(link, h5py.HardLink) and isinstance(group.get(name), h5py.Group):
            _collect_links(group[name], links)


def _copy_structure(src: Any, dst: Any) -> None:
    """Groups, attributes and datasets of ``src`` (hard links only) into ``dst`` (groups there already kept)."""
    import h5py

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name in src:
        link = src.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            continue
        obj = src[name]
        if isinstance(obj, h5py.Group):
            _copy_structure(obj, dst.require_group(name))
        else:
            src.copy(obj, dst, name=name)
