"""The ``hdf5`` sink: crash-safe recording of traces, clouds, clusters, estimates and histograms.

The HDF5 objects are made by a writer process the sink owns (:mod:`.writer`):
the main process copies each event's traces and cloud into shared memory;
the writer makes each event's objects once, in the store of each output
file, notes what they are made from in the output's journal and updates the
output's master file atomically every ``flush_interval`` seconds (see
:mod:`.journal`, :mod:`.partfile`). At a normal end the store becomes the
file (consolidation). After a SIGKILL of this process the writer finishes the
recording itself; after a SIGKILL of the writer this process makes the
committed events into part files: either way the output opens with a plain
``h5py.File(path, "r")`` and holds every flushed event.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from conduit.stage import SinkStage, StopRun
from conduit_physics.histograms import HistogramRecorder, Histograms

from . import layout, spyral
from .journal import wait_for_writer
from .leftovers import tidy_leftovers
from .losses import write_loss_attributes, write_parameter_attributes, write_stage_attributes
from .params import Hdf5Params
from .partfile import PartitionedFile, WriteError, consolidate
from .recorder import TABLE_DTYPE, Z_TIES, Target
from .writer import WriterDied, WriterProcess, WriterSpec

__all__ = ["Hdf5Sink", "TABLE_DTYPE"]

class _HistogramsInRecording(HistogramRecorder):
    """Tells the histogram stage that this sink records the histograms, and whether it did."""

    def __init__(self) -> None:
        self.saved: bool | None = None

    def histograms_saved(self) -> bool | None:
        return self.saved


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
        self.writer: WriterProcess | None = None
        self.flushed_events = 0  # committed by the writer
        self.dropped_full = 0  # lossy only: the writer was behind with every ring slot in use
        self.finishing = False
        self.writer_died = False
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
        self.targets: list[Target] = []
        run_kinds = []
        if p.traces:
            run_kinds.append(layout.EVENTS)
        if p.layout == "file":
            run_kinds += [k for k, on in ((layout.CLOUD, p.cloud), (layout.CLUSTER, p.clusters)) if on]
        if p.estimates:
            run_kinds.append(layout.ESTIMATES)
        self.run_target = Target(PartitionedFile(self.run_path, fsync=p.fsync), tuple(run_kinds))
        self.targets.append(self.run_target)
        self.parquet_path: Path | None = None
        if p.layout == "spyral":
            self._open_spyral_workspace()
        paths = [t.file.path for t in self.targets] + ([self.parquet_path] if self.parquet_path else [])
        for path in paths:  # another run on any of them: refuse before anything is written
            self.claims.append(self.context.claim_output(path))
        for target in self.targets:
            wait_for_writer(target.file.path, say=self.log.warning)  # a killed run's writer finishing its file
            tidy_leftovers(target.file.path, self.log)
            # Fail now, before any event, if a path is not writable.
            target.file.stage(lambda f, t=target: self._init_master(f, t))
        self.histogram_recording: _HistogramsInRecording | None = None
        if p.histograms:
            self.histogram_recording = _HistogramsInRecording()
            self.context.shared.publish(HistogramRecorder, self.histogram_recording, by=self.name)
        self._start_writer()

    def _start_writer(self) -> None:
        """Start the writer process (joined in :meth:`close`) and say which artifacts it needs."""
        p = self.params
        kinds = {kind for target in self.targets for kind in target.kinds}
        keys = {"ion_chamber"}
        if layout.EVENTS in kinds and p.frib:
            keys.add("frib")
        if kinds & {layout.CLOUD, layout.CLUSTER}:
            keys.add("cloud")
        if layout.CLUSTER in kinds:
            keys.add("clusters")
        if layout.ESTIMATES in kinds:
            keys.update(("estimates", "kinematics"))
        self.artifact_keys = tuple(sorted(keys))
        spec = WriterSpec(targets=[(str(t.file.path), t.kinds) for t in self.targets], fsync=p.fsync, frib=p.frib,
                          options=self._options, flush_interval=p.flush_interval,
                          max_batch_bytes=p.max_batch_mb * 1e6, consolidate=p.consolidate,
                          write_thread=p.write_thread)
        self.writer = WriterProcess(spec, self._on_report)
        if self.writer.ring_problem:
            self.log.warning("no shared memory for the hdf5 writer (%s): events go to it through a socket (slower)",
                             self.writer.ring_problem)

    def begin(self) -> None:
        """Keep (or, as configured, replace) the files already at the output paths; publish the new masters."""
        for target, claim in zip(self.targets, self.claims):
            claim.make_room()
            target.file.publish()
        self.begun = True

    def consume(self, event) -> None:
        # Counted before anything else: an event handed to a sink that has just stopped is not written, and
        # must be counted so (unwritten()), whether the error was found before this call or during it.
        self.received += 1
        if self.error is not None:
            raise StopRun(self.error)
        writer = self.writer
        assert writer is not None
        try:
            writer.poll()  # commits, warnings, a failed write
            if self.error is None:
                if not writer.has_room():
                    if not self.params.lossless:
                        self._drop_full()
                        return
                    writer.wait_for_room()  # lossless: wait for the writer, never drop
                writer.send_event(event, self.artifact_keys)
        except WriterDied as err:
            self._writer_died(err)
        if self.error is not None:
            raise StopRun(self.error)

    def _drop_full(self) -> None:
        """A lossy sink whose writer is behind: drop the event, counted (said once, the total at close)."""
        if not self.dropped_full:
            self.log.warning("%s: the hdf5 writer is behind (every ring slot in use): dropping events (lossless = "
                             "false); the total is reported at the end", self.run_path)
        self.dropped_full += 1

    def on_metrics(self, metrics) -> None:
        losses, outcomes = dict(metrics.losses), dict(getattr(metrics, "stages", {}))
        changed = (losses, outcomes) != (self.losses, self.stage_outcomes)
        self.losses, self.stage_outcomes = losses, outcomes
        self._tell_writer(changed)

    def on_parameters(self, change) -> None:
        """Note a parameter change; written to the run file's attributes at the next flush and at the end."""
        self.parameter_changes.append(change)
        self._tell_writer(True)

    def _tell_writer(self, state_changed: bool) -> None:
        """Give the writer the run's latest losses, outcomes and parameter changes; read its reports."""
        if self.writer is None or self.writer.finished or self.error is not None:
            return
        try:
            if state_changed:
                self.writer.set_run_state(self.losses, self.stage_outcomes, self.parameter_changes)
            self.writer.poll()
        except WriterDied as err:
            self._writer_died(err)  # recorded in self.error; the next consume stops the run

    def _on_report(self, kind: str, payload: Any) -> None:
        """A report of the writer process (read in this process)."""
        if kind in ("committed", "finished"):
            n, (flushed, targets) = payload if kind == "committed" else (None, payload)
            self.flushed_events = flushed
            for target, report in zip(self.targets, targets):
                target.counts.clear()
                target.counts.update(report.counts)
                target.duplicates = report.duplicates
                target.file.parts = report.parts
            if n is not None:
                self.log.debug("flushed %d events to %s (%d events flushed in total)", n, self.run_path, flushed)
        elif kind == "warn":
            self.log.warning("%s", payload)
        elif kind == "error":
            text, _lost = payload
            if self.error is None:
                if self.finishing:
                    self._record_error(f"{text} (the events of the last {self.params.flush_interval:g} s are lost)")
                else:
                    self._record_error(f"{text}; stopping (every event flushed before is kept)")

    def _link_parts(self, problems: list[str]) -> None:
        """The writer died: make the events it committed into part files, linked from the masters."""
        from .journal import link_journal
        from .recorder import write_object

        for target in self.targets:
            try:
                link_journal(target.file.path, write_object, fsync=self.params.fsync)
            except (OSError, RuntimeError, KeyError) as err:
                problems.append(f"cannot link the committed events of {target.file.path} ({err})")

    def _writer_died(self, err: WriterDied) -> None:
        self.writer_died = True
        if self.error is None:
            lost = self.writer.sent - self.flushed_events if self.writer is not None else 0
            self._record_error(f"{err}: {lost} events handed to it since its last commit are not written; "
                               f"every event committed before is kept in {self.run_path}")

    def close(self) -> None:
        if not getattr(self, "targets", None):
            self._release()
            return
        try:
            if self.begun:
                self._finish()
        finally:
            if self.writer is not None and not self.writer.finished:
                self.writer.kill()  # start-up failed, or the writer died: nothing more to commit
            elif self.writer is not None:
                self.writer.end()  # after the consolidation: until then it would finish the recording if we died
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
        self.finishing = True
        if not self.writer_died:
            try:
                if self.error is None:
                    self._tell_writer(True)  # the final losses
                # Commits the last events (a failure is reported to _on_report) and closes the stores; after a
                # failed write the writer makes the committed events into part files.
                if not self.writer_died:
                    self.writer.finish()
            except WriterDied as err:
                self._writer_died(err)
        if self.dropped_full:
            self.log.warning("%s: %d events dropped while the hdf5 writer was behind (lossless = false)",
                             self.run_path, self.dropped_full)
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
                    self.log.info("consolidating %s (%d batches)", target.file.path, target.file.parts)
                try:
                    copied = consolidate(target.file.path)
                except WriteError as err:
                    problems.append(f"{err}; the file stays readable as {target.file.path} + "
                                    f"{target.file.parts_dir.name}/")
                    continue
                if copied:
                    self.consolidated.append(target.file.path)
                    self.log.info("consolidated %s (%d objects from %d batches) in %.2f s", target.file.path,
                                  copied, target.file.parts, time.perf_counter() - t0)
        elif self.error is not None:
            if self.writer_died:
                self._link_parts(problems)
            self.log.error("%s: kept %d flushed events (file + parts); it is consolidated at the next run on this "
                           "path, or now with `python -m conduit_stages.hdf5_sink.consolidate %s`",
                           self.run_path, self.flushed_events, self.run_path)
        self.log.info("recorded %s", self.describe())
        for target in self.targets:
            if target.duplicates:
                self.log.warning("%s: %d repeated event ids were recorded under suffixed names (event_ID_K)",
                                 target.file.path, target.duplicates)
            if target.counts[Z_TIES]:
                self.log.warning("%s: %d of %d clouds have points with equal z; Spyral's ClusterPhase fails on "
                                 "them (set the pointcloud stage's tie_jitter > 0)", target.file.path,
                                 target.counts[Z_TIES], target.counts[layout.CLOUD])
        if problems:
            raise WriteError("; ".join(problems))

    def unwritten(self) -> int:
        """Events consumed but never committed (a failed write, a dead writer, a lossy sink's drops)."""
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
                self.targets.append(Target(PartitionedFile(path, fsync=p.fsync), (kind,)))
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

    def _record_error(self, message: str) -> None:
        self.error = message  # the histograms are then not recorded here: the histogram stage saves them
        self.log.error("%s", message)

    def flush(self) -> None:
        """Commit every event handed to the writer so far, now (it also commits every ``flush_interval``)."""
        try:
            self.writer.flush()
        except WriterDied as err:
            self._writer_died(err)
        if self.error is not None:
            raise WriteError(self.error)

    def _write_run_attributes(self, m) -> None:
        write_loss_attributes(m, self.losses)
        write_stage_attributes(m, self.stage_outcomes)
        if self.parameter_changes:
            write_parameter_attributes(m, changes=self.parameter_changes)

    def _init_master(self, f, target: Target) -> None:
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
