"""The rerun sink's ``.rrd`` file: claimed at open, written from ``begin()``, checked at close.

A recording cut short (full disk, file size limit) must fail the run and not be
listed as an output. Rerun writes the file in its own thread and only logs a
write error, so the file is judged at close: the final flush must succeed and
the file must end with the footer rerun 0.41 writes when it finishes a
recording (``RRF2FOOT`` and a version word in its last 16 bytes; measured: a
file cut by ENOSPC has none).
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path
from typing import Any

__all__ = ["RrdFile", "FOOTER_MAGIC"]

#: The end of a finished .rrd (rerun 0.41): footer magic, then a 4-byte version.
FOOTER_MAGIC = b"RRF2FOOT"
#: How long the final flush may take before the file is judged incomplete (s).
FLUSH_TIMEOUT = 10.0


class RrdFile:
    """One ``.rrd`` output: its claim (lock, existing file kept aside) and its Rerun stream."""

    def __init__(self, path: Path, claim: Any, stream: Any):
        self.path = path
        self.claim = claim
        self.stream = stream
        self.started = False
        #: True once closed with every byte written and the footer in place.
        self.complete = False

    def start(self) -> None:
        """Keep an existing file aside and start writing (what the stream buffered comes first)."""
        self.claim.make_room()
        self.stream.save(str(self.path))
        self.started = True

    def close(self) -> str | None:
        """Finish the file; return one line describing what is wrong when it is incomplete."""
        try:
            if not self.started:
                self.stream.disconnect()  # never saved: the buffer goes nowhere
                return None
            try:
                self.stream.flush(timeout_sec=FLUSH_TIMEOUT)
            except Exception as err:  # rerun raises when its file writer died or did not finish in time
                _abandon(self.stream)
                return self._incomplete(f"rerun could not finish writing it: {err}")
            self.stream.disconnect()
            problem = self._check()
            self.complete = problem is None
            return problem
        finally:
            self.claim.release()

    def _check(self) -> str | None:
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                f.seek(max(size - 16, 0))
                tail = f.read()
        except OSError as err:
            return self._incomplete(f"cannot read it back: {err.strerror or err}")
        if FOOTER_MAGIC not in tail:
            return self._incomplete(f"{size} bytes without the end-of-recording footer")
        return None

    def _incomplete(self, why: str) -> str:
        try:
            full = shutil.disk_usage(self.path.parent).free < (1 << 20)
        except OSError:
            full = False
        hint = " (the disk is full)" if full else ""
        return f"{self.path}: recording incomplete{hint}: {why}; what was written may still open in the viewer"


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
