"""The truth file: what the simulator really generated, next to every output.

Layout (HDF5, documented in docs/simulator.md)::

    /                      attrs: format "conduit-simulate-truth:1", conduit_version, seed, preset,
                                  simulation (JSON of every SimulationParams value), preset_values (JSON:
                                  the values the preset filled in), detector (JSON),
                                  events (events written), pool_size (0 unless served from a pool)
    /particles             every event's particles in one table (PARTICLE_DTYPE, with an ``event`` column)
    /events/event_{id}     one group per generated event, named by its GET event id;
                           attrs id, index, timestamp, timestamp_other, reaction, cm_angle (rad),
                           excitation (MeV), beam_energy_vertex (MeV)
        particles          PARTICLE_DTYPE: species (name, Z, A, mass), role, vertex x y z (mm), polar and
                           azimuthal angle (rad), kinetic energy (MeV), brho (T·m), energy deposited (MeV)
        deposits           DEPOSIT_DTYPE: noiseless deposit points x y z (mm), energy (MeV), electrons, particle
        contributions      CONTRIBUTION_DTYPE: per (pad, particle) drift electrons and amplified charge, read flag
    /served                int64 (n, 2) [served event id, pool index] (pool serving only)

The file is flushed every ``flush_every`` events, so a reader sees what was
written even while a long serve is running.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .generator import PARTICLE_DTYPE, SimulatedEvent
from .presets import COMMON_DEFAULTS

if TYPE_CHECKING:
    from conduit.detector import DetectorParams
    from .params import SimulationParams

__all__ = ["TruthWriter", "read_truth", "FORMAT"]

FORMAT = "conduit-simulate-truth:1"


class TruthWriter:
    """Write events' truth to an HDF5 file (see the module docstring for the layout)."""

    def __init__(
        self,
        path: Path,
        params: SimulationParams,
        detector: DetectorParams,
        *,
        pool_size: int = 0,
        flush_every: int = 50,
    ):
        import h5py

        from conduit import __version__

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.path, "w")
        f = self._file
        f.attrs["format"] = FORMAT
        f.attrs["conduit_version"] = __version__
        f.attrs["seed"] = params.seed
        f.attrs["preset"] = params.preset
        f.attrs["simulation"] = json.dumps(params.to_dict())
        resolved = params.resolved()
        f.attrs["preset_values"] = json.dumps({k: getattr(resolved, k) for k in COMMON_DEFAULTS})
        f.attrs["detector"] = json.dumps(detector.to_dict())
        f.attrs["pool_size"] = pool_size
        f.attrs["events"] = 0
        self._events = f.create_group("events")
        self._particles = f.create_dataset(
            "particles", shape=(0,), maxshape=(None,), dtype=PARTICLE_DTYPE, chunks=(1024,)
        )
        self._served: list[tuple[int, int]] = []
        self._count = 0
        self._flush_every = flush_every

    def write(self, sim: SimulatedEvent) -> None:
        """Append one event's truth."""
        t = sim.truth
        ev = sim.event
        g = self._events.create_group(f"event_{ev.id}")
        g.attrs.update(
            id=ev.id,
            index=t.index,
            timestamp=ev.timestamp,
            timestamp_other=ev.timestamp_other,
            reaction=t.reaction,
            cm_angle=t.cm_angle,
            excitation=t.excitation,
            beam_energy_vertex=t.beam_energy_vertex,
        )
        g.create_dataset("particles", data=t.particles)
        g.create_dataset("deposits", data=t.deposits, compression="gzip", compression_opts=1, shuffle=True)
        g.create_dataset("contributions", data=t.contributions, compression="gzip", compression_opts=1, shuffle=True)
        n = self._particles.shape[0]
        self._particles.resize((n + len(t.particles),))
        self._particles[n:] = t.particles
        self._count += 1
        self._file.attrs["events"] = self._count
        if self._count % self._flush_every == 0:
            self._file.flush()

    def served(self, event_id: int, pool_index: int) -> None:
        """Record that a served event id carried the pool event ``pool_index`` (written at close)."""
        self._served.append((event_id, pool_index))

    def close(self) -> None:
        if self._file is None:
            return
        if self._served:
            self._file.create_dataset("served", data=np.asarray(self._served, dtype=np.int64))
        self._file.close()
        self._file = None

    def __enter__(self) -> TruthWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_truth(path: Path, event_id: int) -> dict[str, np.ndarray | dict]:
    """One event's truth as {'attrs', 'particles', 'deposits', 'contributions'} (tests, notebooks)."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f["events"][f"event_{event_id}"]
        return {
            "attrs": dict(g.attrs),
            "particles": g["particles"][()],
            "deposits": g["deposits"][()],
            "contributions": g["contributions"][()],
        }
