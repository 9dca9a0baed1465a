"""The ``simulate`` source: events generated in-process, straight into the engine.

::

    [source]
    kind = "simulate"
    events = 500
    preset = "default"
    seed = 7
    truth = "out/truth_{run:04d}.h5"   # optional

Every :class:`~conduit_simulate.params.SimulationParams` option is a key of
the table (the same options as ``conduit simulate --help``), plus ``run``,
``truth``, ``loopback`` and ``rate``. Detector settings come from
``[detector]``. Generation runs in a worker thread (the numba kernels release
the GIL), one event at a time.

With ``loopback = true`` the events take the online path instead: they are
served as eleven DataExporters on 127.0.0.1 (ephemeral ports) and received
over real TCP by the ``exporter`` source's receivers and event builder, so a
demo exercises exactly what runs on shift. The source is then live (analysis
is skipped, never the reading, when the pipeline falls behind) and ends when
every served frame has been read.

Registered by :mod:`conduit_simulate.plugin`; this module imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conduit.params import param
from conduit.source import Source, SourceError
from .params import SimulationParams

__all__ = ["SimulateSource", "SimulateSourceParams"]

#: Largest GRAW frame: partial readout of all 4 x 68 channels, 512 buckets, 4-byte items, plus the header.
MAX_PARTIAL_FRAME = 256 + 4 * 68 * 512 * 4
#: Loopback: stop waiting for frames when none arrived for this long after the last one was sent (s).
STALL_SECONDS = 2.0


class SimulateSourceParams(SimulationParams):
    """The simulation parameters plus the run number and an optional truth file."""

    run: int | None = param(None, "run number given to the events and to output names ({run})", ge=0)
    truth: Path | None = param(None, "write the truth HDF5 file here ({run} is filled in); default: none")
    loopback: bool = param(
        False, "serve the events as 11 DataExporters on 127.0.0.1 and receive them over TCP (the online path)"
    )
    rate: float = param(0.0, "loopback only: events per second served (0: as fast as they are read)", ge=0)

    def simulation(self) -> SimulationParams:
        """The plain :class:`SimulationParams` part."""
        names = {s.name for s in SimulationParams.specs()}
        return SimulationParams(**{k: v for k, v in vars(self).items() if k in names})

    def check(self) -> list:
        problems = super().check()
        if self.rate > 0 and not self.loopback:
            from conduit.params import Problem

            problems.append(Problem(("rate",), "applies with loopback = true only"))
        return problems


class SimulateSource(Source):
    """Simulated AT-TPC events, generated in-process (reaction, tracks, GET response, readout)."""

    kind = "simulate"
    live = False
    Params = SimulateSourceParams

    def __init__(self, params: SimulateSourceParams, context: Any):
        super().__init__(params, context)
        self._simulator = None
        self._generated = 0
        self._truth_path: Path | None = None
        self._exporter = None
        self._served = None
        if params.loopback:
            self.live = True  # the engine reads this per instance: a served DAQ is never waited for

    def run_number(self) -> int | None:
        return self.params.run

    def total(self) -> int | None:
        return self.params.events

    def _make(self):
        if self._simulator is None:
            from .generator import Simulator

            try:
                self._simulator = Simulator(
                    self.params.simulation(), self.context.detector, base_dir=self.context.base_dir
                )
            except (ValueError, OSError) as err:
                raise SourceError(f"simulate: {err}") from None
        return self._simulator

    def warm_up(self) -> None:
        """Build the pad lookup grid and compile (or load) the numba kernels (and the frame decoder)."""
        self._make().warm_up()
        if self.params.loopback:
            self.context.electronics_map  # noqa: B018 - load the map before the clock starts
            from conduit.get.builder import EventBuilder

            EventBuilder(self.context.electronics_map).warm_up()

    async def run(self) -> None:
        import trio

        sim = await trio.to_thread.run_sync(self._make)
        truth = None
        if self.params.truth is not None:
            from .truth import TruthWriter

            self._truth_path = self.context.format_path(self.params.truth)
            pool = min(sim.params.pool, sim.params.events)
            truth = TruthWriter(self._truth_path, sim.params, sim.detector, pool_size=pool)
            self.log.info("truth: %s", self._truth_path)
        try:
            if self.params.loopback:
                await self._run_loopback(sim, truth)
            else:
                await self._run_in_process(sim, truth)
        finally:
            if truth is not None:
                truth.close()

    async def _run_in_process(self, sim, truth) -> None:
        import trio

        from .generator import EventSequence

        sequence = EventSequence(sim)
        for n in range(len(sequence)):
            generated, fresh = await trio.to_thread.run_sync(sequence.get, n)
            if truth is not None:
                if fresh:
                    truth.write(generated)
                if sequence.pool:
                    truth.served(generated.event.id, sequence.source_index(n))
            self._generated += fresh
            await self.emit(generated.event)

    async def _run_loopback(self, sim, truth) -> None:
        """Serve on 127.0.0.1 and receive with the exporter source until every frame is read."""
        import trio

        from conduit.sources.exporter import ExporterParams, ExporterSource
        from .serve import ServeError, serve_simulation

        failure: list[str] = []
        done = trio.Event()

        async def all_read(stats) -> None:
            # Stop receiving before the servers close (no EOF warnings) once every frame reached the
            # builder, or once nothing has moved for STALL_SECONDS (frames lost to a dropped connection).
            links = self._exporter.links
            last, still = -1, 0.0
            while any(link.frames < stats.cobo_frames.get(link.cobo, 0) for link in links):
                await trio.sleep(0.02)
                total = sum(link.frames for link in links)
                still = still + 0.02 if total == last else 0.0
                last = total
                if still >= STALL_SECONDS:
                    self.log.warning("loopback: %d of %d frames received; stopping", total, stats.frames)
                    break
            done.set()

        async with trio.open_nursery() as nursery:

            async def serve(task_status=trio.TASK_STATUS_IGNORED):
                try:
                    self._served = await serve_simulation(
                        sim,
                        base_port=0,
                        rate=self.params.rate,
                        truth=truth,
                        before_close=all_read,
                        task_status=task_status,
                    )
                except ServeError as err:
                    failure.append(str(err))
                    nursery.cancel_scope.cancel()

            ports = await nursery.start(serve)
            exporter_params = ExporterParams.from_mapping(
                {
                    "hosts": [f"127.0.0.1:{ports[c]}" for c in sorted(ports)],
                    "cobos": sorted(ports),
                    # A partial-readout frame holds up to 272 channels x 512 samples x 4 B (557,312 B).
                    "max_frame_bytes": MAX_PARTIAL_FRAME,
                }
            )
            self._exporter = exporter = ExporterSource(exporter_params, self.context)
            exporter.attach(self._queue.channel)
            await trio.to_thread.run_sync(exporter.warm_up)
            async with trio.open_nursery() as receivers:
                receivers.start_soon(exporter.run)
                await done.wait()
                receivers.cancel_scope.cancel()  # the exporter flushes what its builder still holds
        if failure:
            raise SourceError(f"simulate (loopback): {failure[0]}")
        self._generated = self._served.events if self._served is not None else 0

    @property
    def dropped(self) -> int:
        base = super().dropped
        return base + (self._exporter.dropped if self._exporter is not None else 0)

    def counters(self) -> dict[str, int]:
        counts = {"generated": self._generated}
        if self._served is not None:
            # What the simulated DAQ sent, to compare with what the receivers read.
            counts["served_frames"] = self._served.frames
            counts["served_bytes"] = self._served.bytes
        if self._exporter is not None:
            counts.update(self._exporter.counters())
        return counts

    def asad_counters(self) -> dict[tuple[int, int], dict[str, int]]:
        return self._exporter.asad_counters() if self._exporter is not None else {}

    def losses(self) -> dict[str, int]:
        return self._exporter.losses() if self._exporter is not None else {}

    def status(self) -> dict[str, str]:
        if self._exporter is not None:
            return self._exporter.status()
        return {"simulate": f"{self.emitted}/{self.params.events}"}

    def byte_counts(self) -> dict[str, int]:
        return self._exporter.byte_counts() if self._exporter is not None else {}

