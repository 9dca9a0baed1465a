""".graw run folders: find the files, read each (cobo, asad) stream, merge the streams by event id.

Layout (get_format.md 2)::

    run_0042/mm0/CoBo0_AsAd0_2024-05-01T10:00:00.000_0000.graw
                 CoBo0_AsAd0_2024-05-01T10:00:00.000_0001.graw   <- split at ~1 GB, same stream
                 CoBo0_AsAd1_...
    run_0042/mm1/...
    old names:   run_0093/mm4/CoBo_AsAd1_2017-10-08T02:18:35.598_0001.graw   (CoBo from the mm folder)

One stream per (cobo, asad); its files are read in name order as one continuous
byte stream. :class:`RunReader` merges all streams by event id (a k-way merge, as
attpc_merger does) into an :class:`~conduit.get.builder.EventBuilder`; once the
merge has moved past an event id, that event is emitted (incomplete if an AsAd
never delivered it).

The CoBo number comes from the file name (``CoBo{c}``) or else the ``mm{c}``
folder, and overrides the header's: old firmware wrote CoBo 0 in every header
(logged once). Bad frames in a file are reported as ``file @ byte offset:
reason``, counted, and skipped by resynchronising on the next plausible header; a
truncated last frame ends that file. Nothing before a bad frame is lost.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .frames import BLOB_BIT, CORE_BYTES, FrameError, FrameInfo, check_frame

__all__ = ["RunFolder", "StreamFiles", "find_run", "GrawStream", "RunReader", "RunWriter", "count_events", "run_number_of"]

log = logging.getLogger("conduit.get.graw")

_FILE = re.compile(r"^CoBo(?P<cobo>\d*)_AsAd(?P<asad>\d+)(?P<rest>.*)\.graw$", re.IGNORECASE)
_MM = re.compile(r"^mm(\d+)$", re.IGNORECASE)
_RUN = re.compile(r"run_?(\d+)", re.IGNORECASE)


def run_number_of(path: Path) -> int | None:
    """The run number in a ``run_NNNN`` name (folder or file), or None."""
    m = _RUN.search(path.name if path.suffix == "" else path.stem)
    return int(m.group(1)) if m else None


@dataclasses.dataclass
class StreamFiles:
    cobo: int
    asad: int
    files: list[Path]
    #: The CoBo came from the mm folder (old ``CoBo_AsAd`` names).
    cobo_from_folder: bool = False

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


@dataclasses.dataclass
class RunFolder:
    path: Path
    run: int | None
    streams: list[StreamFiles]


def find_run(path: Path) -> RunFolder:
    """Discover the .graw streams of a run folder; raise FileNotFoundError / ValueError (one line)."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder")
    found: dict[tuple[int, int], StreamFiles] = {}
    for file in sorted(path.rglob("*.graw")):
        m = _FILE.match(file.name)
        if m is None:
            log.warning("%s: not a CoBo{c}_AsAd{a}_..._NNNN.graw name; ignored", file)
            continue
        mm = next((int(g.group(1)) for g in (_MM.match(p.name) for p in file.relative_to(path).parents) if g), None)
        if m.group("cobo"):
            cobo, from_folder = int(m.group("cobo")), False
            if mm is not None and mm != cobo:
                log.warning("%s: file name says CoBo %d but it is in folder mm%d; using CoBo %d", file, cobo, mm, cobo)
        elif mm is not None:
            cobo, from_folder = mm, True
        else:
            log.warning("%s: old-style name without a CoBo number outside an mm{cobo} folder; ignored", file)
            continue
        key = (cobo, int(m.group("asad")))
        stream = found.setdefault(key, StreamFiles(key[0], key[1], [], from_folder))
        stream.files.append(file)
    if not found:
        raise ValueError(f"{path}: no .graw files (expected mm{{cobo}}/CoBo{{c}}_AsAd{{a}}_..._NNNN.graw)")
    for stream in found.values():
        stream.files.sort(key=lambda f: f.name)  # same timestamp, zero-padded split index
    return RunFolder(path, run_number_of(path), [found[k] for k in sorted(found)])


class GrawStream:
    """Frames of one (cobo, asad) stream, read in chunks through a reusable buffer.

    :meth:`next_frame` returns ``(buffer, FrameInfo, source)``; the frame is valid
    until the next call. Errors go to ``on_error`` (a :class:`FrameError`).
    """

    def __init__(self, files: StreamFiles, *, on_error: Callable[[FrameError], None], chunk: int = 1 << 20):
        self.spec = files
        self.cobo, self.asad = files.cobo, files.asad
        self.on_error = on_error
        self._files = list(files.files)
        self._file_index = -1
        self._fh = None
        self._eof = True
        self._buf = np.empty(chunk, np.uint8)
        self._start = self._end = 0
        self._base = 0  # file offset of _buf[0]
        self.bytes_read = 0
        self.frames = 0
        self.source = ""
        self._file_size = 0
        self._meta = 8  # meta type of the last good frame: what resynchronisation looks for
        self.log = log
        self._open_next()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _open_next(self) -> bool:
        self.close()
        self._file_index += 1
        self._start = self._end = self._base = 0
        if self._file_index >= len(self._files):
            self._eof = True
            return False
        path = self._files[self._file_index]
        self.source = str(path)
        try:
            self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as err:
            self.on_error(FrameError(str(path), 0, f"cannot open: {err.strerror or err}"))
            return self._open_next()
        self._eof = False
        self._file_size = os.fstat(self._fh.fileno()).st_size
        return True

    def _fill(self, need: int) -> None:
        """Move the unread bytes to the front and read until ``need`` bytes are buffered (or EOF)."""
        if self._start > 0:
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start:self._end]
            self._base += self._start
            self._start, self._end = 0, n
        if need > self._buf.size:
            grown = np.empty(max(need, 2 * self._buf.size), np.uint8)
            grown[:self._end] = self._buf[:self._end]
            self._buf = grown
        view = memoryview(self._buf)
        while self._end < need and not self._eof:
            got = self._fh.readinto(view[self._end:])  # type: ignore[union-attr]
            if not got:
                self._eof = True
                break
            self._end += got
            self.bytes_read += got

    def next_frame(self) -> tuple[np.ndarray, FrameInfo, str] | None:
        """The next valid frame of the stream, or None at its end."""
        while True:
            if self._end - self._start < CORE_BYTES:
                self._fill(CORE_BYTES)
                if self._end == self._start:
                    if not self._open_next():
                        return None
                    continue
            avail = self._end - self._start
            left = self._file_size - (self._base + self._start)
            try:
                # Validate against what the file holds; the frame's bytes are read below.
                info = check_frame(self._buf, self._start, left if avail >= CORE_BYTES else avail,
                                   source=self.source)
                if info.skip and not self._follower_ok(self._start, info.frame_bytes):
                    raise FrameError(self.source, info.offset,
                                     f"frame (meta type 0x{info.meta_type:02x}, type skipped) whose size "
                                     f"{info.frame_bytes} B does not lead to another frame")
            except FrameError as err:
                where = self._base + self._start
                if self._resync(self._start + 1):
                    self.on_error(FrameError(self.source, where, f"{err.reason}; skipped to the next valid frame "
                                                                 f"at byte {self._base + self._start}"))
                    continue
                self.on_error(FrameError(self.source, where, err.reason))
                if not self._open_next():
                    return None
                continue
            if info.frame_bytes > avail:
                self._fill(info.frame_bytes)
                info = check_frame(self._buf, self._start, self._end - self._start, source=self.source)
            self._start = info.offset + info.frame_bytes
            self._meta = info.meta_type
            self.frames += 1
            return self._buf, info, self.source

    def _follower_ok(self, pos: int, frame_bytes: int) -> bool:
        """True when the frame at buffer index ``pos`` ends the file or is followed by a valid header."""
        nxt = self._base + pos + frame_bytes
        if nxt == self._file_size:
            return True
        head = os.pread(self._fh.fileno(), CORE_BYTES, nxt)  # type: ignore[union-attr]
        try:
            check_frame(head, 0, self._file_size - nxt if len(head) >= CORE_BYTES else len(head))
        except FrameError:
            return False
        return True

    def _resync(self, pos: int) -> bool:
        """Set _start to the next plausible frame at or after buffer index ``pos``.

        A candidate is a byte equal to the stream's meta type whose header validates,
        whose frame fits in the file, and which ends the file or is followed by another
        valid header (get_format.md 1.7). False when the file has none.
        """
        while True:
            limit = self._end - CORE_BYTES + 1  # a candidate needs a whole core header buffered
            if pos < limit:
                for cand in (np.flatnonzero(self._buf[pos:limit] == self._meta) + pos).tolist():
                    try:
                        info = check_frame(self._buf, cand, self._file_size - (self._base + cand))
                    except FrameError:
                        continue
                    if not self._follower_ok(cand, info.frame_bytes):
                        continue
                    self.log.info("%s: resynchronised at byte %d", self.source, self._base + cand)
                    self._start = cand
                    return True
            if self._eof:
                return False
            self._start = max(pos, limit)
            before = self._end - self._start
            self._fill(before + (1 << 20))
            if self._end - self._start <= before:
                return False
            pos = self._start


def count_events(files: StreamFiles) -> int:
    """Distinct event ids in a stream, by hopping frame sizes (reads 28 bytes per frame)."""
    ids: set[int] = set()
    for path in files.files:
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, 2)
                pos = 0
                while pos + CORE_BYTES <= size:
                    fh.seek(pos)
                    head = fh.read(CORE_BYTES)
                    word, = struct.unpack_from(">I", head)
                    block = 1 << ((word >> 24) & 0x0F)
                    length = (word & 0xFFFFFF) * block
                    if length <= 0:
                        break
                    if not (word >> 24) & BLOB_BIT:
                        ids.add(struct.unpack_from(">I", head, 22)[0])
                    pos += length
        except OSError:
            continue
    return len(ids)


class RunReader:
    """The k-way merge of every stream of a run folder into an event builder.

    The merge pops the smallest (run, event id) head. Two kinds of frame would stall
    it and are handed to the builder at once instead (it judges them, see
    :mod:`conduit.get.sequence`): a frame far ahead of the builder's consensus (left in
    the merge, it would hold its stream back until the others reached its id, and every
    frame behind it would then be late), and a frame whose id went back in its stream.
    When the stream's next frame continues the lower sequence, the stream has restarted
    its counter: its frames are merged as the next run's, after every stream has
    finished the current one.
    """

    def __init__(self, run: RunFolder, builder, *, logger: logging.Logger | None = None):
        self.run = run
        self.builder = builder
        self.log = logger or log
        self.streams = [GrawStream(s, on_error=self._on_error) for s in run.streams]
        self._heap: list[tuple[int, int, int, FrameInfo]] = []  # (run, event id, stream index, frame)
        self._top: list[int | None] = [None] * len(self.streams)  # last id merged from each stream
        self._run: list[int] = [0] * len(self.streams)  # which run each stream's merged frames belong to
        self._went_back: list[bool] = [False] * len(self.streams)
        self._header_cobo_warned: set[int] = set()
        self._old_firmware_logged = False
        self.done = False
        #: The first bad frame reported (names the file and byte offset).
        self.first_error: FrameError | None = None
        for i in range(len(self.streams)):
            got = self.streams[i].next_frame()
            if got is None:
                self.streams[i].close()
                continue
            heapq.heappush(self._heap, (0, got[1].event_id, i, got[1]))
        self._deferred = self._far_ahead_heads()

    @property
    def found_frames(self) -> bool:
        """False when no stream of the run holds a single valid frame (known as soon as the reader opens)."""
        return bool(self._heap) or any(s.frames for s in self.streams)

    def _on_error(self, err: FrameError) -> None:
        if self.first_error is None:
            self.first_error = err
        self.builder.report_bad(err)

    def _far_ahead_heads(self) -> list[tuple[int, FrameInfo]]:
        """Streams whose first frame is far ahead of the others' (median of the first ids): taken out of
        the merge and handed to the builder once it has a consensus to judge them against."""
        if len(self._heap) < 3:
            return []
        ids = sorted(item[1] for item in self._heap)
        limit = ids[(len(ids) - 1) // 2] + self.builder.outlier_gap
        deferred = [(item[2], item[3]) for item in self._heap if item[1] > limit]
        if deferred:
            self._heap = [item for item in self._heap if item[1] <= limit]
            heapq.heapify(self._heap)
        return deferred

    def _feed(self, index: int, info: FrameInfo) -> list:
        stream = self.streams[index]
        if info.cobo != stream.cobo:
            self._check_cobo(stream, info)
        return self.builder.add_frame(stream._buf, info.offset, now=0.0, source=stream.source, cobo=stream.cobo,
                                      asad=stream.asad, info=info)

    def _advance(self, index: int) -> list:
        """Read the stream's next frame into the merge; frames that would stall it go to the builder now."""
        out: list = []
        stream = self.streams[index]
        while True:
            got = stream.next_frame()
            if got is None:
                stream.close()
                return out
            info = got[1]
            event_id, top = info.event_id, self._top[index]
            if self._went_back[index]:
                self._went_back[index] = False
                if top is not None and event_id <= top:  # it keeps to the lower sequence: a new run
                    self._run[index] += 1
                    self._top[index] = None
                    top = None
            if top is not None and event_id < top:
                self._went_back[index] = True  # a glitch or a restart: the next frame tells
                out += self._feed(index, info)
                continue
            if self.builder.far_ahead(event_id):
                out += self._feed(index, info)  # an outlier: quarantined by the builder
                continue
            heapq.heappush(self._heap, (self._run[index], event_id, index, info))
            return out

    def _check_cobo(self, stream: GrawStream, info: FrameInfo) -> None:
        if info.cobo == stream.cobo or stream.cobo in self._header_cobo_warned:
            return
        self._header_cobo_warned.add(stream.cobo)
        if info.cobo == 0:
            if not self._old_firmware_logged:
                self._old_firmware_logged = True
                self.log.info("%s: frame headers say CoBo 0 (old firmware); using the CoBo of the file/folder",
                              stream.source)
        else:
            self.log.warning("%s: frame header says CoBo %d, the file/folder says %d; using %d",
                             stream.source, info.cobo, stream.cobo, stream.cobo)

    def read_batch(self, max_events: int = 16, max_frames: int = 4096) -> list:
        """Feed frames until at least ``max_events`` events are out or ``max_frames`` frames were read.

        Returns the events (possibly none); :attr:`done` is True after the last call.
        """
        out: list = []
        builder = self.builder
        heap = self._heap
        frames = 0
        while heap and len(out) < max_events and frames < max_frames:
            run, event_id, index, info = heapq.heappop(heap)
            top = self._top[index]
            self._top[index] = event_id if top is None else max(top, event_id)
            out += self._feed(index, info)
            frames += 1
            if self._deferred:
                for i, head in self._deferred:
                    out += self._feed(i, head)
                    out += self._advance(i)
                self._deferred = []
                heap = self._heap
            out += self._advance(index)
            if heap and heap[0][0] == run and heap[0][1] > event_id:
                out += builder.close_before(heap[0][1])
        if not heap:
            out += builder.flush()
            self.done = True
        return out

    def close(self) -> None:
        for s in self.streams:
            s.close()

    def byte_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.streams:
            counts[f"cobo{s.cobo}"] = counts.get(f"cobo{s.cobo}", 0) + s.bytes_read
        return counts


class RunWriter:
    """Write frames as a .graw run folder (tests, the simulator).

    ``RunWriter(Path("out/run_0007"))`` creates ``mm{c}/CoBo{c}_AsAd{a}_{stamp}_{NNNN}.graw``
    files, starting a new split file when one would exceed ``split_bytes``;
    ``old_names`` writes the old ``CoBo_AsAd{a}_...`` names. Use as a context manager.
    """

    def __init__(self, folder: Path, *, stamp: str = "2024-01-01T00:00:00.000", split_bytes: int = 1 << 30,
                 old_names: bool = False):
        self.folder = Path(folder)
        self.stamp = stamp
        self.split_bytes = split_bytes
        self.old_names = old_names
        self._open: dict[tuple[int, int], tuple[object, int, int]] = {}  # key -> (file, index, size)
        self.files: list[Path] = []

    def _path(self, cobo: int, asad: int, index: int) -> Path:
        name = f"CoBo{'' if self.old_names else cobo}_AsAd{asad}_{self.stamp}_{index:04d}.graw"
        return self.folder / f"mm{cobo}" / name

    def write(self, cobo: int, asad: int, frame: bytes) -> None:
        """Append one frame to the (cobo, asad) stream."""
        key = (cobo, asad)
        fh, index, size = self._open.get(key, (None, -1, 0))
        if fh is None or (size > 0 and size + len(frame) > self.split_bytes):
            if fh is not None:
                fh.close()  # type: ignore[attr-defined]
            index += 1
            path = self._path(cobo, asad, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            fh, size = open(path, "wb"), 0  # noqa: SIM115 - closed in close()
            self.files.append(path)
        fh.write(frame)  # type: ignore[attr-defined]
        self._open[key] = (fh, index, size + len(frame))

    def write_event(self, frames: dict[tuple[int, int], bytes]) -> None:
        """Append the frames of one event (``encode_event_frames`` output)."""
        for (cobo, asad), frame in frames.items():
            self.write(cobo, asad, frame)

    def close(self) -> None:
        for fh, _, _ in self._open.values():
            fh.close()  # type: ignore[attr-defined]
        self._open.clear()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
