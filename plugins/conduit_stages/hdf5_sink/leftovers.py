"""What a killed run leaves next to a recording, and what the next run on that path does with it.

Called by the sink once it holds the path's lock (so no other run is writing it):

* ``FILE.tmp``, ``FILE.consolidating`` and ``FILE.parts/*.tmp`` are temporaries of
  a write that never finished; the file at ``FILE`` never needs them: removed, logged.
* ``FILE`` + ``FILE.parts/`` is a recording that was never consolidated (its run
  was killed, or stopped on a full disk): consolidated into one self-contained
  file, logged. The sink then keeps it under a numbered name like any existing
  output (``[engine] existing_outputs``).
* ``FILE.parts/`` without ``FILE`` (the master was moved or deleted by hand): nothing
  links to these parts; they are kept under a numbered name, logged.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from conduit.outputs import next_free_name

from .partfile import WriteError, consolidate, parts_dir_of

__all__ = ["tidy_leftovers"]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def tidy_leftovers(path: Path, log: logging.Logger) -> None:
    """Clean temporaries and consolidate an unfinished recording at ``path``; raise WriteError (one line)."""
    parts = parts_dir_of(path)
    temporaries = [p for p in (path.with_name(path.name + ".tmp"), path.with_name(path.name + ".consolidating"))
                   if p.is_file()]
    if parts.is_dir():
        temporaries += sorted(parts.glob("*.tmp"))
    if temporaries:
        sizes = [(p, _size(p)) for p in temporaries]
        for p, _ in sizes:
            os.unlink(p)
        log.warning("%s: removed the temporaries an interrupted run left: %s", path,
                    ", ".join(f"{p.relative_to(path.parent)} ({_mb(n)})" for p, n in sizes))
    if not parts.is_dir():
        return
    if not path.exists():
        target = next_free_name(path)
        aside = target.with_name(target.name + ".parts")
        os.rename(parts, aside)
        log.warning("%s: found %s without its master file (nothing links to it); kept it as %s", path,
                    parts.name, aside.name)
        return
    n_parts = sum(1 for _ in parts.glob("part_*.h5"))
    t0 = time.perf_counter()
    try:
        copied = consolidate(path)
    except WriteError as err:
        raise WriteError(f"{err}: it is the unfinished recording of an earlier run; move {path.name} and "
                         f"{parts.name}/ away together, or consolidate them with "
                         f"`python -m conduit_stages.hdf5_sink.consolidate {path}`") from None
    if not copied:  # exited between replacing the master and removing its parts: nothing was left to copy
        log.warning("%s: removed %s/ that an interrupted run left after consolidating it", path, parts.name)
        return
    log.warning("%s: the recording of an earlier run was never consolidated (killed or stopped on an error); "
                "consolidated it: %d objects from %d part files in %.2f s", path, copied, n_parts,
                time.perf_counter() - t0)
