"""The ``histogram`` sink: fills the shared :class:`HistogramSet` from every analysed event."""

from __future__ import annotations

import os
from pathlib import Path

from conduit.stage import SinkStage

from .hset import HistogramSet
from .quantities import QUANTITIES
from .spec import HistogramParams

__all__ = ["HistogramSink", "SHARED_KEY", "RECORDED_KEY"]

#: ``context.shared`` key of the run's HistogramSet.
SHARED_KEY = "histograms"
#: ``context.shared`` key set by a sink that saves the histograms itself (the hdf5 sink).
RECORDED_KEY = "histograms_recorded_by"

# Which artifact each event quantity reads (track quantities read their Quantity.artifact).
_EVENT_ARTIFACTS = {"cluster_multiplicity": "clusters", "n_tracks": "estimates", "cloud_points": "cloud"}


class HistogramSink(SinkStage):
    """1-D and 2-D histograms of estimate fields and event quantities, with SpecTcl-style gates."""

    name = "histogram"
    Params = HistogramParams
    #: Filling takes a fraction of a millisecond; dropping events would bias the counts.
    lossless = True
    #: Gates can be added and edited while the run goes on (the control panel, ``conduit ctl set``).
    live_params = ("gates",)

    @classmethod
    def artifacts(cls, params):
        needed: set[str] = set()
        for spec in params.all_histograms():
            for q in (spec.x, spec.y):
                if q is None:
                    continue
                if QUANTITIES[q].is_track:
                    needed.update({"estimates", QUANTITIES[q].artifact})
                elif q in _EVENT_ARTIFACTS:
                    needed.add(_EVENT_ARTIFACTS[q])
        for gate in params.gates:
            if gate.histogram is not None:
                spec = next((h for h in params.all_histograms() if h.name == gate.histogram), None)
                for q in (() if spec is None else (spec.x, spec.y)):
                    if q is not None and QUANTITIES[q].is_track:
                        needed.update({"estimates", QUANTITIES[q].artifact})
                    elif q in _EVENT_ARTIFACTS:
                        needed.add(_EVENT_ARTIFACTS[q])
        return tuple(sorted(needed)), ()

    def open(self) -> None:
        if SHARED_KEY in self.context.shared:
            raise ValueError("only one histogram stage per pipeline (declare every histogram in it)")
        self.hset = HistogramSet.from_params(self.params, self.context.detector)
        self.context.shared[SHARED_KEY] = self.hset
        self._written: Path | None = None
        self._begun = False

    def begin(self) -> None:
        if self.params.save and not self.context.shared.get(RECORDED_KEY):
            self.context.format_path(self.params.path)  # a live run without a run number: fail now, not at the end
        self._begun = True

    def consume(self, event) -> None:
        self.hset.fill(event)

    def on_reset(self) -> None:
        self.hset.reset()

    def update_params(self, params: HistogramParams) -> None:
        self.params = params
        self.hset.set_gates(params.gates)
        self.log.info("gates now: %s", ", ".join(g.name for g in params.gates) or "none")

    def close(self) -> None:
        if not getattr(self, "_begun", False) or not self.params.save or self.context.shared.get(RECORDED_KEY):
            return  # never begun: no event was counted, and an existing file stays as it was
        path = self.context.format_path(self.params.path)
        with self.context.claim_output(path) as claim:
            claim.make_room()
            save_histogram_file(path, self.hset)
        self._written = path
        self.log.info("histograms saved to %s", path)

    def outputs(self) -> list[str]:
        return [str(self._written)] if getattr(self, "_written", None) else []


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
