"""The ``simulate`` source: events generated in-process, straight into the engine.

::

    [source]
    kind = "simulate"
    events = 500
    preset = "default"
    seed = 7
    truth = "out/truth_{run:04d}.h5"   # optional

Every :class:`~conduit.simulate.params.SimulationParams` option is a key of
the table (the same options as ``conduit simulate --help``), plus ``run`` and
``truth``. Detector settings come from ``[detector]``. Generation runs in a
worker thread (the numba kernels release the GIL), one event at a time.

This module is imported at plugin discovery: it imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl
from ..params import param
from ..source import Source, SourceError
from .params import SimulationParams

__all__ = ["SimulateSource", "SimulateSourceParams"]


class SimulateSourceParams(SimulationParams):
    """The simulation parameters plus the run number and an optional truth file."""

    run: int | None = param(None, "run number given to the events and to output names ({run})", ge=0)
    truth: Path | None = param(None, "write the truth HDF5 file here ({run} is filled in); default: none")

    def simulation(self) -> SimulationParams:
        """The plain :class:`SimulationParams` part."""
        names = {s.name for s in SimulationParams.specs()}
        return SimulationParams(**{k: v for k, v in vars(self).items() if k in names})


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
        """Build the pad lookup grid and compile (or load) the numba kernels."""
        self._make().warm_up()

    async def run(self, task_status: Any = None) -> None:
        import trio

        from .generator import EventSequence

        sim = await trio.to_thread.run_sync(self._make)
        sequence = EventSequence(sim)
        truth = None
        if self.params.truth is not None:
            from .truth import TruthWriter

            self._truth_path = self.context.format_path(self.params.truth)
            truth = TruthWriter(self._truth_path, sim.params, sim.detector, pool_size=sequence.pool)
            self.log.info("truth: %s", self._truth_path)
        try:
            for n in range(len(sequence)):
                generated, fresh = await trio.to_thread.run_sync(sequence.get, n)
                if truth is not None:
                    if fresh:
                        truth.write(generated)
                    if sequence.pool:
                        truth.served(generated.event.id, sequence.source_index(n))
                self._generated += fresh
                await self.emit(generated.event)
        finally:
            if truth is not None:
                truth.close()

    def counters(self) -> dict[str, int]:
        return {"generated": self._generated}

    def status(self) -> dict[str, str]:
        return {"simulate": f"{self.emitted}/{self.params.events}"}


@hookimpl
def conduit_register_sources(register) -> None:
    register(SimulateSource)
