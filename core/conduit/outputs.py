"""Output files: one run per path, and an existing file is never deleted silently.

A sink calls :meth:`conduit.stage.RunContext.claim_output` in ``open()`` for
every file it will write. The claim locks the path against other runs (a second
``conduit run`` on the same output refuses at once, naming the run that holds
it). In ``begin()``, which the engine calls only once every sink has opened and
the source and workers are ready, the sink calls :meth:`OutputClaim.make_room`
and then creates its file. What happens to a file already at the path is the
run's ``[engine] existing_outputs`` policy:

``keep`` (default)
    the old file is renamed to the first free numbered name
    (``run_0042.h5`` -> ``run_0042.1.h5``, then ``.2`` ...) and the log says so;
``refuse``
    the run stops at open with one line naming the file;
``replace``
    the old file is deleted (logged as a warning).

The lock is an ``flock`` on ``<path>.lock``, which the kernel releases when the
process ends in any way (also SIGKILL): a lock file left by a killed run does
not block the next run, which takes it over and logs whose it was.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import re
import shutil
import socket
from pathlib import Path

__all__ = ["OutputClaim", "OutputError", "EXISTING_POLICIES", "claim_output", "numbered_name", "next_free_name",
           "lock_path_of"]

EXISTING_POLICIES = ("keep", "refuse", "replace")

log = logging.getLogger("conduit.outputs")


class OutputError(OSError):
    """An output path that cannot be used (one line naming the file)."""


def lock_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def numbered_name(path: Path, n: int) -> Path:
    """``run_0042.h5`` -> ``run_0042.<n>.h5`` (``name`` -> ``name.<n>`` without a suffix)."""
    if path.suffix:
        return path.with_name(f"{path.stem}.{n}{path.suffix}")
    return path.with_name(f"{path.name}.{n}")


def next_free_name(path: Path) -> Path:
    """The numbered name one above the highest already used next to ``path`` (numbering follows time)."""
    if path.suffix:
        pattern = re.compile(re.escape(path.stem) + r"\.(\d+)" + re.escape(path.suffix) + r"(\.parts)?$")
    else:
        pattern = re.compile(re.escape(path.name) + r"\.(\d+)(\.parts)?$")
    used = [int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.match(p.name))] \
        if path.parent.is_dir() else []
    return numbered_name(path, max(used, default=0) + 1)


def _size_text(path: Path) -> str:
    try:
        size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return "size unknown"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""  # pragma: no cover


class OutputClaim:
    """A path this run will write, locked against other runs until :meth:`release`."""

    def __init__(self, path: Path, policy: str, fd: int, logger: logging.Logger):
        self.path = path
        self.lock_path = lock_path_of(path)
        self.policy = policy
        self._fd: int | None = fd
        self.log = logger
        #: Where :meth:`make_room` moved the previous file (policy ``keep``), if there was one.
        self.moved_to: Path | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def make_room(self) -> Path | None:
        """Clear the path for a new file: rename the existing one aside (``keep``) or delete it (``replace``).

        Returns where the old file went (None when there was none or it was
        deleted). Call it only when the run is about to write (``begin()``).
        """
        if not self.path.exists() and not self.path.is_symlink():
            return None
        if self.policy == "refuse":  # it appeared after open: still never replace it
            raise OutputError(f"{self.path}: already exists (engine.existing_outputs = \"refuse\")")
        if self.policy == "replace":
            self.log.warning("replacing %s (%s; engine.existing_outputs = \"replace\")", self.path,
                             _size_text(self.path))
            try:
                if self.path.is_dir() and not self.path.is_symlink():
                    shutil.rmtree(self.path)
                else:
                    self.path.unlink()
            except OSError as err:
                raise OutputError(f"cannot replace {self.path}: {err.strerror or err}") from None
            return None
        target = next_free_name(self.path)
        try:
            os.rename(self.path, target)
        except OSError as err:
            raise OutputError(f"cannot move the existing {self.path} aside to {target.name}: "
                              f"{err.strerror or err}") from None
        self.moved_to = target
        self.log.warning("%s already existed: kept it as %s", self.path, target.name)
        return target

    def release(self) -> None:
        """Give the path back (remove the lock file). Safe to call more than once."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.lock_path.unlink()  # while still locked: see _lock for the race this avoids
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder_text(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _lock(path: Path) -> tuple[int, str]:
    """Lock ``<path>.lock``; return the descriptor and what a previous holder left written in it."""
    lock_path = lock_path_of(path)
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise OutputError(f"cannot write {path}: {err.strerror or err} (creating {lock_path.name})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            mine = holder.startswith(f"pid {os.getpid()} ")
            who = "another stage of this pipeline" if mine else f"another conduit run ({holder or 'unknown'})"
            raise OutputError(f"{path}: already being written by {who}; give this run another output path "
                              "or run number") from None
        # The previous holder unlinks the file before unlocking it; if we opened that old
        # inode, our lock protects nothing: start again on the current file.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    left = _holder_text(fd)
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    note = f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, note, 0)
    return fd, left


def claim_output(path: Path | str, policy: str = "keep", logger: logging.Logger | None = None) -> OutputClaim:
    """Lock ``path`` for this run (creating its directory); raise :class:`OutputError` (one line).

    With policy ``refuse`` an existing file is refused here, before anything is written.
    """
    if policy not in EXISTING_POLICIES:
        raise ValueError(f"existing-output policy must be one of {EXISTING_POLICIES}, got {policy!r}")
    path = Path(path)
    logger = logger or log
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    fd, left = _lock(path)
    claim = OutputClaim(path, policy, fd, logger)
    if left:
        logger.info("%s: took over the lock left by a run that ended without releasing it (%s)",
                    path, left)
    if policy == "refuse" and (path.exists() or path.is_symlink()):
        claim.release()
        raise OutputError(f"{path}: already exists (engine.existing_outputs = \"refuse\"); move it away, "
                          "or use \"keep\" to keep it under a numbered name")
    return claim
