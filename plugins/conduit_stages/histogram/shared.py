"""The run's histograms as other sinks see them (:class:`conduit_physics.histograms.Histograms`, shared by type).

Other sinks see the histogram set only through this object: the rerun sink
draws its snapshots, the hdf5 sink writes it into its recording. It also
decides whether the histogram sink saves its own file, so that no order of
closing can lose the histograms:

* a sink that records them (a :class:`~conduit_physics.histograms.HistogramRecorder`,
  the hdf5 sink) says so when it opens and reports once it knows whether it
  saved them;
* when the histogram sink closes, its own file is written unless a recorder
  saved them; if a recorder is still undecided, the decision waits for it
  (:meth:`RunHistograms.recorder_finished`), so a recorder that fails while
  closing after the histogram sink closed still leaves the histograms saved.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conduit.shared import Shared
from conduit_physics.gates import Gate
from conduit_physics.histograms import HistogramRecorder, Histograms, HistogramView

from .hset import HistogramSet

__all__ = ["RunHistograms", "save_histogram_file"]


class RunHistograms(Histograms):
    """The histogram sink's :class:`HistogramSet`, published to the run, and who saves it."""

    def __init__(self, hset: HistogramSet, shared: Shared, log: logging.Logger):
        self.hset = hset
        self.shared = shared
        self.log = log
        self._lock = threading.Lock()
        #: Set by the sink when it closes after having begun: the callable that writes its own file.
        self._save_own: Callable[[], None] | None = None
        self._decided = False
        #: The file written by the fallback (None: none written, or recorded by another sink).
        self.written: Path | None = None
        #: Why the own file could not be written (None: no error).
        self.error: str | None = None

    # -- Histograms ------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.hset.version

    @property
    def events(self) -> int:
        with self.hset.lock:
            return self.hset.events

    def snapshot(self) -> list[HistogramView]:
        return self.hset.snapshot()

    def gates(self) -> list[Gate]:
        with self.hset.lock:
            return list(self.hset.gates.values())

    def write(self, group: Any) -> None:
        from .store import write_histograms

        write_histograms(group, self.hset)

    def recorder_finished(self, recorder: HistogramRecorder) -> None:
        self._settle()

    # -- the histogram sink's side ------------------------------------------------------------

    def recorders(self) -> list[HistogramRecorder]:
        return self.shared.all(HistogramRecorder)

    def owner_closed(self, save_own: Callable[[], None] | None) -> None:
        """The histogram sink closed; ``save_own`` writes its own file (None: it must not write one)."""
        with self._lock:
            self._save_own = save_own
        self._settle()

    def _settle(self) -> None:
        """Write the own file once the owner closed and every recorder is decided and none saved them."""
        with self._lock:
            if self._decided or self._save_own is None:
                return
            states = [recorder.histograms_saved() for recorder in self.recorders()]
            if any(state is True for state in states):
                self._decided = True
                return
            if any(state is None for state in states):
                return  # a recorder still closing: it calls recorder_finished() when it knows
            self._decided = True
            save = self._save_own
        if states:
            self.log.warning("histograms: not saved by %s; saving them to their own file",
                             ", ".join(self.shared.publishers(HistogramRecorder)))
        try:
            save()
        except Exception as err:  # reported by the histogram sink (outputs, log), never by the recorder
            self.error = str(err)
            self.log.error("%s", err)


def save_histogram_file(path: Path, hset: HistogramSet) -> None:
    """Write ``hset`` to its own small HDF5 file, atomically (temporary name, then rename)."""
    import h5py

    from .store import write_histograms

    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp, "w") as f:
            write_histograms(f, hset)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot save histograms to {path}: {err.strerror or err}") from None
