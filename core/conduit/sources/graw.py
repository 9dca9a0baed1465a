"""The ``graw`` source: replay a .graw run folder (``run_NNNN/mm{c}/CoBo{c}_AsAd{a}_..._NNNN.graw``).

::

    [source]
    kind = "graw"
    path = "/data/e20009/run_0042"

Every (cobo, asad) stream (split files read in order) is merged by event id
into the event builder; events come out in id order. Reading and decoding run
in a worker thread (numba releases the GIL) in batches, so the trio loop stays
free for the engine. See docs/ingestion.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conduit.get.options import BuilderParams
from conduit.hookspecs import hookimpl
from conduit.params import param
from conduit.source import SourceError

from .building import FrameSource

__all__ = ["GrawSource", "GrawParams"]


class GrawParams(BuilderParams):
    """A .graw run folder."""

    path: Path = param(doc="run folder run_NNNN holding mm{cobo}/CoBo{c}_AsAd{a}_<time>_NNNN.graw files "
                           "(relative to the pipeline file)")


class GrawSource(FrameSource):
    """Replay a .graw run folder (GET frames of every CoBo/AsAd, merged by event id)."""

    kind = "graw"
    live = False
    Params = GrawParams

    def __init__(self, params: GrawParams, context: Any):
        super().__init__(params, context)
        self.folder = context.resolve(params.path)
        self._run = None
        self._reader = None
        self._total: int | None = None

    # -- discovery --------------------------------------------------------------------------

    def _find(self):
        if self._run is None:
            from conduit.get.grawfiles import find_run

            try:
                self._run = find_run(self.folder)
            except (FileNotFoundError, ValueError) as err:
                raise SourceError(str(err)) from None
        return self._run

    def run_number(self) -> int | None:
        from conduit.get.grawfiles import run_number_of

        return run_number_of(self.folder)

    def total(self) -> int | None:
        """Events in the run: distinct event ids of the largest stream (read by hopping frame headers)."""
        if self._total is None:
            from conduit.get.grawfiles import count_events

            try:
                run = self._find()
            except SourceError:
                return None
            largest = max(run.streams, key=lambda s: s.size)
            self._total = count_events(largest)
        return self._total

    # -- running -------------------------------------------------------------------------------

    def warm_up(self) -> None:
        self.builder.warm_up()
        self._open_reader()

    def _open_reader(self):
        """Open every stream at its first valid frame; a folder without any is an error (before outputs are touched)."""
        if self._reader is None:
            from conduit.get.grawfiles import RunReader

            run = self._find()
            reader = RunReader(run, self.builder, logger=self.log)
            if not reader.found_frames:
                reader.close()
                n_files = sum(len(s.files) for s in run.streams)
                first = f"; first problem: {reader.first_error}" if reader.first_error else ""
                raise SourceError(f"{run.path}: no valid GET frame in its {n_files} .graw file"
                                  f"{'s' if n_files != 1 else ''}{first}")
            self._reader = reader
        return self._reader

    async def run(self) -> None:
        import trio

        reader = await trio.to_thread.run_sync(self._open_reader)
        run = reader.run
        self.log.info("%s: %d streams (%d files)", run.path, len(run.streams), sum(len(s.files) for s in run.streams))
        try:
            while not reader.done:
                events = await trio.to_thread.run_sync(reader.read_batch)
                for event in events:
                    await self.emit(event)
        finally:
            reader.close()
        for stream in reader.streams:
            if stream.frames == 0:  # the others were read: say which stream gave nothing
                self.log.warning("%s: no valid GET frame in CoBo %d AsAd %d (%s)", run.path, stream.cobo,
                                 stream.asad, ", ".join(f.name for f in stream.spec.files))

    # -- reporting -------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        if self._builder is None:
            return {}
        counts = self._builder.counter_dict()
        if self._run is not None:
            counts["streams"] = len(self._run.streams)
            counts["files"] = sum(len(s.files) for s in self._run.streams)
        return counts

    def losses(self) -> dict[str, int]:
        return self._builder.losses() if self._builder is not None else {}

    def byte_counts(self) -> dict[str, int]:
        return self._reader.byte_counts() if self._reader is not None else {}

    def status(self) -> dict[str, str]:
        if self._reader is None:
            return {}
        open_streams = sum(1 for s in self._reader.streams if s._fh is not None)
        return {"graw": f"{open_streams}/{len(self._reader.streams)} streams reading"}


@hookimpl
def conduit_register_sources(register) -> None:
    register(GrawSource)
