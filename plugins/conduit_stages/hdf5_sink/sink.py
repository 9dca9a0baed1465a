"""The ``hdf5`` sink: crash-safe recording of traces, clouds, clusters, estimates and histograms.

Events are kept in memory and written every ``flush_interval`` seconds as one
part file per output file, then published atomically through the output's
master file (see :mod:`.partfile`). After a SIGKILL the output opens with a
plain ``h5py.File(path, "r")`` and holds every flushed event; at a normal end
the parts are consolidated into one self-contained file.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from conduit.artifacts import ESTIMATE_DTYPE
from conduit.stage import SinkStage, StopRun
from conduit_physics.histograms import HistogramRecorder, Histograms

from . import layout, spyral
from .idcount import IdCounter
from .leftovers import tidy_leftovers
from .losses import write_loss_attributes, write_parameter_attributes, write_stage_attributes
from .params import Hdf5Params
from .partfile import PartitionedFile, WriteError, consolidate

__all__ = ["Hdf5Sink", "TABLE_DTYPE"]

#: The /estimates table: the estimate fields plus where the event came from (Spyral's columns).
TABLE_DTYPE = np.dtype(
    ESTIMATE_DTYPE.descr
    + [("run", np.int32), ("ic_amplitude", np.float64), ("ic_integral", np.float64),
       ("ic_centroid", np.float64), ("ic_multiplicity", np.float64)]
)

_Z_TIES = "clouds_with_z_ties"


class _HistogramsInRecording(HistogramRecorder):
    """Tells the histogram stage that this sink records the histograms, and whether it did."""

    def __init__(self) -> None:
        self.saved: bool | None = None

    def histograms_saved(self) -> bool | None:
        return self.saved


@dataclasses.dataclass
class _Target:
    """One output file and what it holds."""

    file: PartitionedFile
    kinds: tuple[str, ...]  # of layout.EVENTS, CLOUD, CLUSTER, ESTIMATES
    ranges: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    timestamps: list[int] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    seen: dict[str, IdCounter] = dataclasses.field(default_factory=lambda: defaultdict(IdCounter))
    duplicates: int = 0

    def name_for(self, kind: str, event_id: int) -> str:
        """The object name of this event, unique even when an event id repeats."""
        dup = self.seen[kind].add(event_id)
        if dup:
            self.duplicates += 1
        make = layout.cloud_name if kind == layout.CLOUD else layout.event_name
        return make(event_id, dup)

    def note(self, kind: str, event_id: int) -> None:
        r = self.ranges.get(kind)
        self.ranges[kind] = [event_id, event_id] if r is None else [min(r[0], event_id), max(r[1], event_id)]
        self.counts[kind] += 1


class Hdf5Sink(SinkStage):
    """Crash-safe HDF5 recording: merger 1.0 traces, Spyral clouds/clusters, estimates, histograms."""

    name = "hdf5"
    Params = Hdf5Params

    def is_lossless(self) -> bool:
        return self.params.lossless

    # -- life cycle ------------------------------------------------------------------

    def open(self) -> None:
        """Lock every output path, tidy what a killed run left there, stage fresh masters (``path.tmp``).

        No existing file is replaced here: that happens in :meth:`begin`.
        """
        p = self.params
        self._options: dict[str, Any] = {} if p.compression == "none" else {"compression": p.compression}
        self.pending: list[Any] = []
        self.pending_bytes = 0
        self.last_flush = time.monotonic()
        self.flushed_events = 0
        self.received = 0
        self.error: str | None = None
        self.begun = False
        self.consolidated: list[Path] = []
        self.parquet: Path | None = None
        self.claims: list[Any] = []
        self.run_path = self.context.format_path(p.path)
        self.losses: dict[str, int] = {}  # latest loss counts from the engine (on_metrics)
        self.stage_outcomes: dict[str, dict] = {}  # what each stage did, from the engine (on_metrics)
        self.parameter_changes: list[Any] = []  # changes made while running (on_parameters)
        self.targets: list[_Target] = []
        run_kinds = []
        if p.traces:
            run_kinds.append(layout.EVENTS)
        if p.layout == "file":
            run_kinds += [k for k, on in ((layout.CLOUD, p.cloud), (layout.CLUSTER, p.clusters)) if on]
        if p.estimates:
            run_kinds.append(layout.ESTIMATES)
        self.run_target = _Target(PartitionedFile(self.run_path, fsync=p.fsync), tuple(run_kinds))
        self.targets.append(self.run_target)
        self.parquet_path: Path | None = None
        if p.layout == "spyral":
            self._open_spyral_workspace()
        paths = [t.file.path for t in self.targets] + ([self.parquet_path] if self.parquet_path else [])
        for path in paths:  # another run on any of them: refuse before anything is written
            self.claims.append(self.context.claim_output(path))
        for target in self.targets:
            tidy_leftovers(target.file.path, self.log)
            # Fail now, before any event, if a path is not writable.
            target.file.stage(lambda f, t=target: self._init_master(f, t))
        self.histogram_recording: _HistogramsInRecording | None = None
        if p.histograms:
            self.histogram_recording = _HistogramsInRecording()
            self.context.shared.publish(HistogramRecorder, self.histogram_recording, by=self.name)

    def begin(self) -> None:
        """Keep (or, as configured, replace) the files already at the output paths; publish the new masters."""
        for target, claim in zip(self.targets, self.claims):
            claim.make_room()
            target.file.publish()
        self.begun = True

    def consume(self, event) -> None:
        if self.error is not None:
            raise StopRun(self.error)
        self.received += 1
        self.pending.append(event)
        self.pending_bytes += _event_bytes(event)
        if (time.monotonic() - self.last_flush >= self.params.flush_interval
                or self.pending_bytes >= self.params.max_batch_mb * 1e6):
            self._flush_or_stop()

    def on_metrics(self, metrics) -> None:
        self.losses = dict(metrics.losses)
        self.stage_outcomes = dict(getattr(metrics, "stages", {}))
        if self.error is None and self.pending and time.monotonic() - self.last_flush >= self.params.flush_interval:
            try:
                self._flush_or_stop()
            except Exception:
                pass  # recorded in self.error; the next consume stops the run

    def on_parameters(self, change) -> None:
        """Note a parameter change; written to the run file's attributes at the next flush and at the end."""
        self.parameter_changes.append(change)

    def close(self) -> None:
        if not getattr(self, "targets", None):
            self._release()
            return
        try:
            if self.begun:
                self._finish()
        finally:
            for target in self.targets:
                target.file.discard()  # a master staged for a run that never began
            self._release()
            self._report_histograms()

    def _report_histograms(self) -> None:
        """Tell the histogram stage whether they are in the recording (else it saves its own file)."""
        recording = getattr(self, "histogram_recording", None)
        if recording is None:
            return
        recording.saved = bool(recording.saved)
        for histograms in self.context.shared.all(Histograms):
            histograms.recorder_finished(recording)

    def _release(self) -> None:
        for claim in getattr(self, "claims", []):
            claim.release()

    def _finish(self) -> None:
        problems = []
        if self.pending and self.error is None:
            try:
                self.flush()
            except WriteError as err:
                self._record_error(f"{err} (the events of the last {self.params.flush_interval:g} s are lost)")
        if self.error is None:
            try:  # the final loss counts (the engine sends a last on_metrics before close)
                self.run_target.file.update(lambda m: self._write_run_attributes(m))
            except WriteError as err:
                problems.append(str(err))
        if self.params.histograms and self.error is None:
            histograms = self.context.shared.get(Histograms)
            if histograms is not None:
                try:
                    self.run_target.file.update(histograms.write)
                    self.histogram_recording.saved = True  # type: ignore[union-attr]
                except WriteError as err:
                    problems.append(str(err))
        if self.parquet_path is not None and self.error is None:
            try:
                self.claims[-1].make_room()
                spyral.write_estimation_parquet(self.run_path, self.parquet_path)
                self.parquet = self.parquet_path
            except Exception as err:  # report, keep the HDF5 outputs
                problems.append(f"{self.parquet_path} not written: {err}")
        if self.params.consolidate and self.error is None:
            for target in self.targets:
                t0 = time.perf_counter()
                if target.file.parts:
                    self.log.info("consolidating %s (%d parts)", target.file.path, target.file.parts)
                try:
                    copied = consolidate(target.file.path)
                except WriteError as err:
                    problems.append(f"{err}; the file stays readable as {target.file.path} + "
                                    f"{target.file.parts_dir.name}/")
                    continue
                if copied:
                    self.consolidated.append(target.file.path)
                    self.log.info("consolidated %s (%d objects from %d parts) in %.2f s", target.file.path,
                                  copied, target.file.parts, time.perf_counter() - t0)
        elif self.error is not None:
            self.log.error("%s: kept %d flushed events (file + parts); it is consolidated at the next run on this "
                           "path, or now with `python -m conduit_stages.hdf5_sink.consolidate %s`",
                           self.run_path, self.flushed_events, self.run_path)
        self.log.info("recorded %s", self.describe())
        for target in self.targets:
            if target.duplicates:
                self.log.warning("%s: %d repeated event ids were recorded under suffixed names (event_ID_K)",
                                 target.file.path, target.duplicates)
            if target.counts[_Z_TIES]:
                self.log.warning("%s: %d of %d clouds have points with equal z; Spyral's ClusterPhase fails on "
                                 "them (set the pointcloud stage's tie_jitter > 0)", target.file.path,
                                 target.counts[_Z_TIES], target.counts[layout.CLOUD])
        if problems:
            raise WriteError("; ".join(problems))

    def unwritten(self) -> int:
        """Events consumed but never flushed (a failed write loses the batch in memory)."""
        return max(getattr(self, "received", 0) - getattr(self, "flushed_events", 0), 0)

    def outputs(self) -> list[str]:
        """The files written (plain paths: ``conduit batch`` reads them back from the run summary)."""
        out = [str(t.file.path) for t in getattr(self, "targets", []) if t.file.created]
        if getattr(self, "parquet", None) is not None:
            out.append(str(self.parquet))
        return out

    def describe(self) -> str:
        """'N events, N cloud, ... rows' per output file, for the log."""
        parts = []
        for target in self.targets:
            what = [f"{target.counts[k]} {k}" for k in target.kinds if k != layout.ESTIMATES]
            if layout.ESTIMATES in target.kinds:
                what.append(f"{target.counts[layout.ESTIMATES]} estimate rows")
                if target.counts[layout.KINEMATICS]:
                    what.append(f"{target.counts[layout.KINEMATICS]} kinematics rows")
            parts.append(f"{target.file.path} ({', '.join(what) or 'histograms'})")
        return "; ".join(parts)

    # -- Spyral's workspace (layout "spyral", see .spyral) --------------------------------

    def _open_spyral_workspace(self) -> None:
        p = self.params
        workspace = self.context.format_path(p.workspace)
        for on, phase, kind in ((p.cloud, spyral.POINTCLOUD, layout.CLOUD), (p.clusters, spyral.CLUSTER, layout.CLUSTER)):
            if on:
                path = spyral.workspace_file(workspace, phase, self.context.run)
                self.targets.append(_Target(PartitionedFile(path, fsync=p.fsync), (kind,)))
        problem = spyral.trace_file_problem(self.run_path, self.context.run)
        if problem:
            self.log.warning("%s", problem)
        if p.estimates:
            self.parquet_path = spyral.workspace_file(workspace, spyral.ESTIMATION, self.context.run)
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError as err:
                raise RuntimeError(f"layout 'spyral' writes {spyral.ESTIMATION}/*.parquet, which needs pyarrow "
                                   f"({err}): pip install 'attpc-conduit[spyral]', or set estimates = false") from None

    def _note_z_ties(self, target: _Target, event) -> None:
        """Count clouds Spyral's splines would fail on; say so once at the first (the total comes at close)."""
        if spyral.strictly_increasing_z(event.get("cloud")):
            return
        if not target.counts[_Z_TIES]:
            self.log.warning("%s: the cloud of event %d has points with equal z, which Spyral's ClusterPhase "
                             "fails on (more are counted, not logged)", target.file.path, event.id)
        target.counts[_Z_TIES] += 1

    # -- writing ---------------------------------------------------------------------

    def _flush_or_stop(self) -> None:
        try:
            self.flush()
        except WriteError as err:
            self._record_error(f"{err}; stopping (every event flushed before is kept)")
            raise StopRun(self.error) from None

    def _record_error(self, message: str) -> None:
        self.error = message  # the histograms are then not recorded here: the histogram stage saves them
        self.log.error("%s", message)

    def flush(self) -> None:
        """Write the pending events to every output file (one part each), then forget them."""
        batch = self.pending
        if not batch:
            self.last_flush = time.monotonic()
            return
        for target in self.targets:
            self._commit(target, batch)
        self.flushed_events += len(batch)
        self.pending = []
        self.pending_bytes = 0
        self.last_flush = time.monotonic()
        self.log.debug("flushed %d events to %s (%d events flushed in total)", len(batch), self.run_path,
                       self.flushed_events)

    def _commit(self, target: _Target, batch: list[Any]) -> None:
        p = self.params
        rows = kin_rows = None
        failure_rows = layout.failure_rows(batch) if target is self.run_target else None
        if layout.ESTIMATES in target.kinds:
            parts = [_table_rows(ev) for ev in batch]
            parts = [r for r in parts if r is not None and len(r)]
            rows = np.concatenate(parts) if parts else None
            kin_rows = layout.kinematics_rows(batch)

        def write_part(f) -> dict[str, list[str]]:
            links: dict[str, list[str]] = {}
            for kind in target.kinds:
                if kind == layout.ESTIMATES:
                    continue
                group = f.create_group(kind)
                names = links.setdefault(kind, [])
                for ev in batch:
                    if kind == layout.EVENTS:
                        name = target.name_for(kind, ev.id)
                        layout.write_traces(group, ev, name, frib=p.frib, **self._options)
                    elif kind == layout.CLOUD:
                        if ev.get("cloud") is None:
                            continue
                        name = target.name_for(kind, ev.id)
                        layout.write_cloud(group, ev, name, **self._options)
                        self._note_z_ties(target, ev)
                    else:
                        if ev.get("clusters") is None or ev.get("cloud") is None:
                            continue
                        name = target.name_for(kind, ev.id)
                        layout.write_clusters(group, ev, name)
                    names.append(name)
                    target.note(kind, ev.id)
                    if kind == layout.EVENTS:
                        ts = int(ev.timestamp)
                        target.timestamps = [ts, ts] if not target.timestamps else [
                            min(target.timestamps[0], ts), max(target.timestamps[1], ts)]
            return {k: v for k, v in links.items() if v}

        def update_master(m) -> None:
            for kind in target.kinds:
                if kind == layout.EVENTS and kind in target.ranges:
                    lo, hi = target.ranges[kind]
                    m[kind].attrs.update(layout.events_group_attrs(lo, hi, *target.timestamps))
                elif kind in (layout.CLOUD, layout.CLUSTER) and kind in target.ranges:
                    m[kind].attrs.update(layout.range_attrs(*target.ranges[kind]))
            if rows is not None:
                table = m[layout.ESTIMATES]
                start = table.shape[0]
                table.resize((start + len(rows),))
                table[start:] = rows
            layout.append_kinematics(m, kin_rows)
            layout.append_failures(m, failure_rows)
            m.attrs["events_flushed"] = np.int64(self.flushed_events + len(batch))
            if target is self.run_target:
                self._write_run_attributes(m)

        counts_before = dict(target.counts)
        seen_before = {k: v.copy() for k, v in target.seen.items()}
        ranges_before = {k: list(v) for k, v in target.ranges.items()}
        try:
            target.file.commit(write_part, update_master)
        except WriteError:
            target.counts.clear()
            target.counts.update(counts_before)
            target.seen.clear()
            target.seen.update(seen_before)
            target.ranges = ranges_before
            raise
        if rows is not None:
            target.counts[layout.ESTIMATES] += len(rows)
        if kin_rows is not None:
            target.counts[layout.KINEMATICS] += len(kin_rows)

    def _write_run_attributes(self, m) -> None:
        write_loss_attributes(m, self.losses)
        write_stage_attributes(m, self.stage_outcomes)
        if self.parameter_changes:
            write_parameter_attributes(m, changes=self.parameter_changes)

    def _init_master(self, f, target: _Target) -> None:
        from conduit import __version__

        f.attrs["writer"] = f"attpc-conduit {__version__}"
        f.attrs["run"] = np.int64(self.context.run if self.context.run is not None else -1)
        f.attrs["layout"] = self.params.layout
        f.attrs["events_flushed"] = np.int64(0)
        write_parameter_attributes(f, self.context.pipeline, [])
        for kind in target.kinds:
            if kind == layout.EVENTS:
                f.create_group(kind).attrs.update(layout.events_group_attrs(0, 0, 0, 0))
            elif kind in (layout.CLOUD, layout.CLUSTER):
                f.create_group(kind).attrs.update(layout.range_attrs(0, 0))
            elif kind == layout.ESTIMATES:
                table = f.create_dataset(kind, shape=(0,), maxshape=(None,), dtype=TABLE_DTYPE, chunks=(1024,))
                table.attrs["units"] = ("vertex/center/radius/arclength mm, polar/azimuthal rad, brho T·m, "
                                        "dE ADC·TB, dEdx ADC·TB/mm")


def _table_rows(event) -> np.ndarray | None:
    est = event.get("estimates")
    if est is None:
        return None
    rows = np.zeros(len(est), dtype=TABLE_DTYPE)
    for name in ESTIMATE_DTYPE.names:
        rows[name] = est[name]
    rows["event"] = event.id
    rows["run"] = event.run if event.run is not None else -1
    for key, value in layout.ic_attributes(event).items():
        rows[key] = value
    return rows


def _event_bytes(event) -> int:
    total = event.traces.nbytes
    cloud = event.get("cloud")
    if cloud is not None:
        total += cloud.nbytes * 2  # the cluster copy
    return total
