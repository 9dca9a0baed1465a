"""The ``histogram`` sink: fills the run's :class:`HistogramSet` from every analysed event.

It shares the set with the run as
:class:`conduit_physics.histograms.Histograms` (:mod:`.shared`): the
rerun sink draws it, the hdf5 sink saves it into its recording; this sink
saves its own file (``path``) unless a recorder saved them (in whatever order
the sinks close).
"""

from __future__ import annotations

from conduit.stage import SinkStage
from conduit_physics.histograms import Histograms
from conduit_physics.quantities import QUANTITIES

from .hset import HistogramSet
from .shared import RunHistograms, save_histogram_file
from .spec import HistogramParams

__all__ = ["HistogramSink"]

# Which artifact each event quantity reads (track quantities read their Quantity.artifact).
_EVENT_ARTIFACTS = {"cluster_multiplicity": "clusters", "n_tracks": "estimates", "cloud_points": "cloud"}


class HistogramSink(SinkStage):
    """1-D and 2-D histograms of estimate fields and event quantities, with SpecTcl-style gates."""

    name = "histogram"
    Params = HistogramParams
    #: Filling takes a fraction of a millisecond; dropping events would bias the counts.
    lossless = True
    #: Filling is cheap and never waits: called in the engine's event loop, no thread hand-off per batch.
    inline = True
    #: Gates can be added and edited while the run goes on (the control panel, ``conduit ctl set``).
    live_params = ("gates",)

    @classmethod
    def artifacts(cls, params):
        """The artifacts the histograms' quantities read (a gate's shape is drawn on one of these histograms)."""
        needed: set[str] = set()
        for spec in params.all_histograms():
            for q in (spec.x, spec.y):
                if q is not None and QUANTITIES[q].is_track:
                    needed.update({"estimates", QUANTITIES[q].artifact})
                elif q in _EVENT_ARTIFACTS:
                    needed.add(_EVENT_ARTIFACTS[q])
        return tuple(sorted(needed)), ()

    def open(self) -> None:
        if self.context.shared.get(Histograms) is not None:
            raise ValueError("only one histogram stage per pipeline (declare every histogram in it)")
        self.hset = HistogramSet.from_params(self.params, self.context.detector)
        self.histograms = RunHistograms(self.hset, self.context.shared, self.log)
        self.context.shared.publish(Histograms, self.histograms, by=self.name, single=True)
        self._begun = False

    def begin(self) -> None:
        if self.params.save and not self.histograms.recorders():
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
        histograms = getattr(self, "histograms", None)
        if histograms is None:
            return
        # Never begun: no event was counted, and an existing file stays as it was.
        histograms.owner_closed(self._save_own if self._begun and self.params.save else None)
        if histograms.error is not None:
            raise OSError(histograms.error)

    def _save_own(self) -> None:
        """Write the histograms to ``path`` (called once it is clear that no recorder saved them)."""
        path = self.context.format_path(self.params.path)
        with self.context.claim_output(path) as claim:
            claim.make_room()
            save_histogram_file(path, self.hset)
        self.histograms.written = path
        self.log.info("histograms saved to %s", path)

    def outputs(self) -> list[str]:
        histograms = getattr(self, "histograms", None)
        return [str(histograms.written)] if histograms is not None and histograms.written else []
