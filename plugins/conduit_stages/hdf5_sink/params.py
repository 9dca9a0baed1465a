"""Parameters of the ``hdf5`` sink."""

from __future__ import annotations

from typing import Literal

from conduit.params import Params, Problem, param

__all__ = ["Hdf5Params"]


class Hdf5Params(Params):
    """What the ``hdf5`` sink records, where, and how often it makes it crash-safe."""

    path: str = param(
        "out/run_{run:04d}.h5",
        "run file (template with {run}): traces, estimates, histograms; clouds and clusters too with layout 'file'",
    )
    layout: Literal["file", "spyral"] = param(
        "file",
        "'file': everything in the run file; 'spyral': clouds in WORKSPACE/Pointcloud/run_NNNN.h5, clusters in "
        "WORKSPACE/Cluster/run_NNNN.h5 and estimates also in WORKSPACE/Estimation/run_NNNN.parquet",
    )
    workspace: str = param("out/workspace", "Spyral workspace directory for layout 'spyral'")
    traces: bool = param(True, "record the trace matrix (attpc_merger 1.0 layout, /events)")
    frib: bool = param(True, "with the traces, record the event's FRIB data (frib_physics) when present")
    cloud: bool = param(True, "record point clouds (Spyral Pointcloud layout, /cloud)")
    clusters: bool = param(True, "record clusters (Spyral Cluster layout, /cluster)")
    estimates: bool = param(True, "record the estimates table (/estimates), and /kinematics when a kinematics stage runs")
    histograms: bool = param(True, "save the histogram stage's histograms and gates at the end (/histograms)")
    flush_interval: float = param(2.0, "seconds between flushes; events flushed survive a crash (s)", gt=0)
    max_batch_mb: float = param(256.0, "flush earlier when this much event data is waiting (MB)", gt=0)
    compression: Literal["none", "lzf", "gzip"] = param(
        "none", "compression of traces and clouds ('none' is what attpc_merger writes)"
    )
    consolidate: bool = param(
        True, "at the end, make the recording one self-contained file (the writer's store renamed into place, "
              "seconds); else keep file + .parts/"
    )
    fsync: bool = param(False, "fsync every flush (also survive power loss / OS crash, not just a killed process)")
    lossless: bool = param(True, "never drop events for this sink, even when a live run is behind")
    write_thread: bool = param(
        False, "write traces and clouds to the disk from a second thread of the writer process instead of submitting "
               "them by Linux AIO (the default overlaps the disk with the next event's HDF5 work without a thread; "
               "the thread costs more CPU and was slower in every measurement)"
    )

    def check(self) -> list[Problem]:
        problems = []
        for key in ("path", "workspace"):
            try:
                getattr(self, key).format(run=1)
            except (KeyError, IndexError, ValueError) as err:
                problems.append(Problem((key,), f"bad template {getattr(self, key)!r}: only {{run}} may be used "
                                                f"({err})"))
        if not any((self.traces, self.cloud, self.clusters, self.estimates, self.histograms)):
            problems.append(Problem(("traces",), "nothing to record: enable traces, cloud, clusters, estimates "
                                                 "or histograms"))
        return problems
