"""The rerun sink's ``.rrd`` file: claimed at open, written from ``begin()``, checked at close.

Written without Rerun's footer. With a footer (rerun 0.41's default), the file
writer keeps an index row for every chunk it writes, in every column of every
(timeline, component) pair the recording has ever used, until the file is
closed: a live view makes about a hundred chunks a second across ~90
entities, so the conduit grew by ~0.5 MB/s (measured: 397 -> 785 MiB in a
10-minute run at 200 events/s, back down when the file closed). Rerun
documents ``write_footer=False`` for long-running streams; the file is still
a valid recording (the viewer and ``rerun.chunk.RrdReader`` read it) and
``rerun rrd optimize`` can add the footer afterwards if a tool needs one.

A recording cut short (full disk, file size limit) must fail the run and not
be listed as an output. Rerun writes the file in its own thread and only logs
a write error, so the file is judged at close: the final flush must succeed
(it fails once the writer has hit a write error) and the file's messages
must run exactly to its end (a 12-byte stream header ``RRF2``..., then
messages of a 16-byte header, kind and payload length as little-endian u64,
and their payload), so a file that ends inside a message is incomplete.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
from pathlib import Path
from typing import Any

__all__ = ["RrdFile", "frames", "unfinished", "append_messages", "quiet_footer_warning", "END", "ARROW_MSG"]

#: The start of an .rrd stream (rerun >= 0.23): "RRF2", then a 4-byte version and 4 bytes of options.
STREAM_MAGIC = b"RRF2"
STREAM_HEADER_BYTES = 12
#: Each message: kind and payload length, little-endian u64 each.
MESSAGE_HEADER = struct.Struct("<QQ")
#: Message kinds (rerun 0.41): 0 ends the stream (a footer follows); 1 store info, 2 a chunk (Arrow data),
#: 3 blueprint activation.
END, ARROW_MSG, KNOWN_KINDS = 0, 2, (1, 2, 3)
#: The last bytes of a file written with a footer: this magic, then a 4-byte version.
FOOTER_MAGIC, FOOTER_END = b"RRF2FOOT", 12
#: How long the final flush may take before the file is judged incomplete (s).
FLUSH_TIMEOUT = 10.0


class RrdFile:
    """One ``.rrd`` output: its claim (lock, existing file kept aside) and its Rerun stream."""

    def __init__(self, path: Path, claim: Any, stream: Any, sidecar: Path | None = None):
        self.path = path
        self.claim = claim
        self.stream = stream
        #: Another stream's .rrd of the same recording (the draw process's), appended at close.
        self.sidecar = sidecar
        self.started = False
        #: True once closed with every byte written (every message whole).
        self.complete = False

    def start(self) -> None:
        """Keep an existing file aside and start writing (what the stream buffered comes first)."""
        self.claim.make_room()
        self.stream.save(str(self.path), write_footer=False)  # bounded memory on a long run: see the module
        self.started = True

    def close(self, sidecar_problem: str | None = None) -> str | None:
        """Finish the file (with the sidecar's whole messages appended); return one line describing what is wrong
        when it is incomplete (``sidecar_problem``: what went wrong writing the sidecar)."""
        try:
            if not self.started:
                self.stream.disconnect()  # never saved: the buffer goes nowhere
                if self.sidecar is not None:
                    self.sidecar.unlink(missing_ok=True)
                return None
            try:
                self.stream.flush(timeout_sec=FLUSH_TIMEOUT)
            except Exception as err:  # rerun raises when its file writer died or did not finish in time
                _abandon(self.stream)
                return self._incomplete(f"rerun could not finish writing it: {err}")
            self.stream.disconnect()
            if self.sidecar is not None and self.sidecar.exists():
                try:
                    problem = append_messages(self.path, self.sidecar)
                except OSError as err:
                    problem = (f"could not append the events drawn apart ({self.sidecar.name}, kept beside it): "
                               f"{err.strerror or err}")
                if problem:
                    return self._incomplete(problem)
                self.sidecar.unlink()
            if sidecar_problem:
                return self._incomplete(f"rerun could not finish writing it: {sidecar_problem}")
            problem = self._check()
            self.complete = problem is None
            return problem
        finally:
            self.claim.release()

    def _check(self) -> str | None:
        try:
            problem = unfinished(self.path)
        except OSError as err:
            return self._incomplete(f"cannot read it back: {err.strerror or err}")
        return self._incomplete(problem) if problem else None

    def _incomplete(self, why: str) -> str:
        try:
            full = shutil.disk_usage(self.path.parent).free < (1 << 20)
        except OSError:
            full = False
        hint = " (the disk is full)" if full else ""
        return f"{self.path}: recording incomplete{hint}: {why}; what was written may still open in the viewer"


def unfinished(path: Path) -> str | None:
    """What is wrong with the framing of the .rrd at ``path`` (None: every message whole, to the end)."""
    return frames(path)[1]


def frames(path: Path) -> tuple[list[int], str | None]:
    """The kinds of the whole messages of the .rrd at ``path``, in order, and what is wrong with its framing
    (None: every message whole, to the end; a file written with rerun's footer must end with its magic).

    Reads the 16-byte message headers only and seeks over the payloads: a fraction of a second for a
    10-minute live recording.
    """
    size = os.path.getsize(path)
    kinds: list[int] = []
    with open(path, "rb") as f:
        if size < STREAM_HEADER_BYTES or f.read(STREAM_HEADER_BYTES)[:4] != STREAM_MAGIC:
            return kinds, f"{size} bytes without a Rerun stream header"
        at = STREAM_HEADER_BYTES
        while at < size:
            header = f.read(MESSAGE_HEADER.size)
            if len(header) < MESSAGE_HEADER.size:
                break
            kind, length = MESSAGE_HEADER.unpack(header)
            if kind == END:  # the footer follows: whole when the file ends with its magic and version
                f.seek(size - FOOTER_END)
                whole = f.read()[:len(FOOTER_MAGIC)] == FOOTER_MAGIC
                return kinds + [kind], None if whole else f"{size} bytes, the footer cut short"
            if kind not in KNOWN_KINDS:
                return kinds, f"{size} bytes, no Rerun message at byte {at} (kind {kind})"
            at += MESSAGE_HEADER.size + length
            if at > size:
                break
            kinds.append(kind)
            f.seek(at)
    return kinds, None if at == size else f"{size} bytes, the last message cut short"


def append_messages(path: Path, source: Path) -> str | None:
    """Append the whole messages of the .rrd ``source`` (after its stream header, which must equal ``path``'s)
    to the .rrd ``path``: one file of both streams' rows, which Rerun reads as one recording when both logged
    the same recording id. Returns what went wrong, or None."""
    with open(path, "rb") as f:
        header = f.read(STREAM_HEADER_BYTES)
    length = _whole_length(source)  # a stream cut short (its writer killed) gives what it wrote whole
    if length <= STREAM_HEADER_BYTES:
        return None
    with open(source, "rb") as src:
        if src.read(STREAM_HEADER_BYTES) != header:
            return f"{source}: not a stream of the same format as {path.name} (left there)"
        with open(path, "ab") as out:
            shutil.copyfileobj(_Limited(src, length - STREAM_HEADER_BYTES), out, 1 << 20)
    return None


def _whole_length(path: Path) -> int:
    """Bytes of the .rrd at ``path`` up to the end of its last whole message (a footer-less stream)."""
    size = os.path.getsize(path)
    at = STREAM_HEADER_BYTES
    with open(path, "rb") as f:
        f.seek(at)
        while at + MESSAGE_HEADER.size <= size:
            kind, length = MESSAGE_HEADER.unpack(f.read(MESSAGE_HEADER.size))
            if kind == END or kind not in KNOWN_KINDS or at + MESSAGE_HEADER.size + length > size:
                break
            at += MESSAGE_HEADER.size + length
            f.seek(at)
    return min(at, size)


class _Limited:
    """A file read up to ``left`` bytes (for ``shutil.copyfileobj``)."""

    def __init__(self, f: Any, left: int):
        self.f, self.left = f, left

    def read(self, n: int) -> bytes:
        data = self.f.read(min(n, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data


def quiet_footer_warning() -> None:
    """Keep Rerun's one warning about a file written without a footer off the user's terminal.

    Rerun's Python SDK reads ``RUST_LOG`` once, when it is first imported: call this before that.
    Its own default filter is kept ("warn"), with the file sink at "error" (write errors still
    shown); a ``RUST_LOG`` the user set is left as it is.
    """
    os.environ.setdefault("RUST_LOG", "warn,re_log_encoding::rrd::file_sink=error")


def _abandon(stream: Any) -> None:
    """Never drop a stream whose file writer died.

    In rerun-sdk 0.41, after a write error (ENOSPC) the stream's ``disconnect()``,
    its ``__del__`` and rerun's atexit shutdown can each block forever (measured:
    3 of 4 runs on a full 2 MB tmpfs hung at exit). So the stream is kept alive
    for the life of the process and rerun's exit hook is skipped; the streams of
    the other sinks are flushed and disconnected explicitly in their ``close()``.
    """
    import rerun as rr

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(stream))
    rr.unregister_shutdown()
