"""The ``hdf5`` source: replay a merged HDF5 file (attpc_merger legacy, 1.0 or 2.0 layout).

::

    [source]
    kind = "hdf5"
    path = "/data/e20009/h5/run_0042.h5"
    first_event = 0        # optional, file event index (event_{n})
    last_event = 999       # optional, inclusive

Events come out in file order with their GET id, timestamps and traces: every
event the file holds (its group listing), cut to ``first_event .. last_event``;
range attributes that disagree with the listing are reported in one warning. When
the file has them, FRIB physics datasets ride along as the ``frib`` artifact
(dict module name -> array, e.g. ``"977"``, ``"1903"``) and 2.0 silicon datasets
as the ``silicon`` artifact (dict ``si_upstream_front`` ... -> (n, 517) int16).
Reading runs in a worker thread, a few events per call. An event that cannot be
read (bad shape, missing dataset, traces that are not int16 and cannot be
converted without changing a value) is reported in one line (the first 10;
then only counted) and counted (``bad_events``); the others are still delivered.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conduit.hookspecs import hookimpl
from conduit.params import Params, Problem, param
from conduit.source import Source, SourceError

__all__ = ["Hdf5Source", "Hdf5Params"]

_RUN = re.compile(r"run_?(\d+)", re.IGNORECASE)
#: Unreadable events logged one line each; after that only counted.
_LOGGED_BAD_EVENTS = 10


class Hdf5Params(Params):
    """A merged HDF5 file."""

    path: Path = param(doc="merged HDF5 file written by attpc_merger (legacy, 1.0 or 2.0 layout; "
                           "relative to the pipeline file)")
    first_event: int | None = param(None, "first event index to read (n in event_n); default: the first the file "
                                          "holds", ge=0)
    last_event: int | None = param(None, "last event index to read, inclusive; default: the last the file holds", ge=0)

    def check(self) -> list[Problem]:
        if self.first_event is not None and self.last_event is not None and self.last_event < self.first_event:
            return [Problem(("last_event",), f"must be ≥ first_event ({self.first_event})")]
        return []


class Hdf5Source(Source):
    """Replay a merged HDF5 file (legacy, attpc_merger 1.0 or 2.0): every event it holds, in index order."""

    kind = "hdf5"
    live = False
    Params = Hdf5Params
    #: Present only when the file holds them (FRIB physics; 2.0 silicon datasets).
    provides = ("frib", "silicon")

    def __init__(self, params: Hdf5Params, context: Any):
        super().__init__(params, context)
        self.path = context.resolve(params.path)
        self._total: int | None = None
        self._counts = {"events": 0, "missing_events": 0, "bad_events": 0, "traces": 0, "frib_events": 0}
        self._layout = ""

    def run_number(self) -> int | None:
        m = _RUN.search(self.path.stem)
        return int(m.group(1)) if m else None

    def _open(self):
        from conduit.get.merged import MergedFileError, open_merged

        try:
            return open_merged(self.path)
        except MergedFileError as err:
            raise SourceError(str(err)) from None

    def _selected(self, merged):
        """Indices of the stored events to read (the file's listing, cut to first_event..last_event)."""
        return merged.select(self.params.first_event, self.params.last_event)

    def total(self) -> int | None:
        """Events stored in the selected range (exact)."""
        if self._total is None:
            try:
                with self._open() as merged:
                    self._total = len(self._selected(merged))
            except SourceError:
                return None
        return self._total

    def warm_up(self) -> None:
        """Open the file once before the run starts: a missing or unreadable file fails start-up, not the run."""
        self._open().close()

    async def run(self) -> None:
        import trio

        merged = await trio.to_thread.run_sync(self._open)
        try:
            self._layout = merged.layout
            selected = await trio.to_thread.run_sync(self._selected, merged)
            problem = merged.range_problem()
            if problem:
                self.log.warning("%s", problem)
            if len(selected):
                # Gaps between the first and the last event read (the merger numbers events 0, 1, 2 ...).
                self._counts["missing_events"] = int(selected[-1] - selected[0] + 1 - len(selected))
            self.log.info("%s: %s layout (%s), %d events%s", self.path, merged.layout, merged.version, len(selected),
                          f" ({selected[0]}..{selected[-1]})" if len(selected) else "")
            for start in range(0, len(selected), 16):
                batch = await trio.to_thread.run_sync(self._read_batch, merged, selected[start:start + 16])
                for event in batch:
                    await self.emit(event)
        finally:
            merged.close()

    def _read_batch(self, merged, indices) -> list:
        from conduit.event import Event
        from conduit.get.merged import MergedFileError

        out = []
        for n in indices.tolist():
            try:
                got = merged.read(n)
            except MergedFileError as err:  # one bad event: report it, keep the others
                self._counts["bad_events"] += 1
                self._report_bad(str(err))
                continue
            if got is None:
                self._counts["missing_events"] += 1
                continue
            artifacts = {}
            if got.frib is not None:
                artifacts["frib"] = got.frib
                self._counts["frib_events"] += 1
            if got.silicon is not None:
                artifacts["silicon"] = got.silicon
            out.append(Event(id=got.event_id, traces=got.traces, timestamp=got.timestamp,
                             timestamp_other=got.timestamp_other, artifacts=artifacts))
            self._counts["events"] += 1
            self._counts["traces"] += got.traces.shape[0]
        return out

    def _report_bad(self, message: str) -> None:
        """Log the first bad events one line each, then only the count (it is in the run summary)."""
        bad = self._counts["bad_events"]
        if bad <= _LOGGED_BAD_EVENTS:
            self.log.error("%s", message)
        if bad == _LOGGED_BAD_EVENTS:
            self.log.error("%s: further unreadable events are counted (bad_events in the summary), not logged",
                           self.path)

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def status(self) -> dict[str, str]:
        return {"hdf5": self._layout} if self._layout else {}


@hookimpl
def conduit_register_sources(register) -> None:
    register(Hdf5Source)
