"""Writing events into a recording's part files one event at a time, and committing them (see :mod:`.partfile`).

This is the work of the writer process (:mod:`.writer`): every event is
written into the open part file of each output as it arrives, so that its
trace matrix can be released at once; :meth:`Recorder.commit` then closes the
parts and publishes them through the masters (every ``flush_interval``). The
file layout is :mod:`.layout`'s, the same as when whole batches were written.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from conduit.artifacts import ESTIMATE_DTYPE

from . import h5direct, layout, rawio, spyral
from .idcount import IdCounter
from .losses import write_loss_attributes, write_parameter_attributes, write_stage_attributes
from .partfile import PartitionedFile, WriteError, describe_os_error
from .store import STORE_NAME, Store

__all__ = ["Target", "Recorder", "TABLE_DTYPE", "Z_TIES", "table_rows"]

#: The /estimates table: the estimate fields plus where the event came from (Spyral's columns).
TABLE_DTYPE = np.dtype(
    ESTIMATE_DTYPE.descr
    + [("run", np.int32), ("ic_amplitude", np.float64), ("ic_integral", np.float64),
       ("ic_centroid", np.float64), ("ic_multiplicity", np.float64)]
)
#: Count of clouds with equal z (Spyral's ClusterPhase fails on them).
Z_TIES = "clouds_with_z_ties"


@dataclasses.dataclass
class Target:
    """One output file, what it holds, and its part being written."""

    file: PartitionedFile
    kinds: tuple[str, ...]  # of layout.EVENTS, CLOUD, CLUSTER, ESTIMATES
    ranges: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    timestamps: list[int] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    seen: dict[str, IdCounter] = dataclasses.field(default_factory=lambda: defaultdict(IdCounter))
    duplicates: int = 0
    # The part being written (None between commits) and what it holds so far.
    part: Any = None
    store: Store | None = None  # the final file, written while recording (.store); opened with the first part
    groups: dict[str, Any] = dataclasses.field(default_factory=dict)
    links: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    rows: list[np.ndarray] = dataclasses.field(default_factory=list)
    kinematics: list[np.ndarray] = dataclasses.field(default_factory=list)
    failures: list[np.ndarray] = dataclasses.field(default_factory=list)
    _before: tuple | None = None

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

    def start_part(self, disk: rawio.DiskQueue | None = None) -> None:
        """Open the next part and remember the bookkeeping to restore if it is never published."""
        self._before = (dict(self.counts), {k: v.copy() for k, v in self.seen.items()},
                        {k: list(v) for k, v in self.ranges.items()}, list(self.timestamps), self.duplicates)
        self.part = self.file.open_part(**rawio.file_alignment())
        if self.store is None:
            try:
                self.store = Store(self.file.parts_dir, tuple(k for k in self.kinds if k != layout.ESTIMATES), disk)
            except (OSError, RuntimeError) as err:
                raise WriteError(f"cannot write {self.file.parts_dir}: {describe_os_error(err)}") from None
        self.groups = {kind: self.part.create_group(kind) for kind in self.kinds if kind != layout.ESTIMATES}
        self.links, self.rows, self.kinematics, self.failures = {}, [], [], []

    def abandon_part(self) -> None:
        """Forget the part being written (its write failed): bookkeeping as before it."""
        if self.store is not None:
            self.store.usable = False  # it holds events of this part: never the final file
        if self.part is not None:
            self.file.abandon_part(self.part)
        if self._before is not None:
            counts, seen, ranges, timestamps, duplicates = self._before
            self.counts.clear()
            self.counts.update(counts)
            self.seen.clear()
            self.seen.update(seen)
            self.ranges, self.timestamps, self.duplicates = ranges, timestamps, duplicates
        self._clear()

    def _clear(self) -> None:
        self.part, self.groups, self.links, self._before = None, {}, {}, None
        self.rows, self.kinematics, self.failures = [], [], []


class Recorder:
    """Writes events into the parts of its targets and commits them; one per writer process.

    ``run_target`` (the first target) also gets the run's attributes: losses,
    stage outcomes, parameter changes (:meth:`set_run_state`). ``warn(text)``
    reports something the user should know once (clouds with equal z).
    """

    def __init__(self, targets: list[Target], *, frib: bool, options: dict[str, Any],
                 warn: Callable[[str], None], write_thread: bool = False):
        self.targets = targets
        self.run_target = targets[0]
        self.frib = frib
        self.options = options
        self.warn = warn
        self.pending = 0  # events written into the open parts
        self.flushed_events = 0  # events committed
        self.losses: dict[str, int] = {}
        self.stage_outcomes: dict[str, dict] = {}
        self.parameter_changes: list[dict] = []
        self.disk = rawio.DiskQueue()  # the stores' direct writes, in the background (with write_thread)
        self.write_thread = write_thread

    def set_run_state(self, losses: dict[str, int], stage_outcomes: dict[str, dict],
                      parameter_changes: list[dict]) -> None:
        self.losses, self.stage_outcomes, self.parameter_changes = losses, stage_outcomes, parameter_changes

    def add(self, event: Any) -> None:
        """Write ``event`` into the open part of every target (opened here if needed); raises WriteError."""
        for target in self.targets:
            try:
                if target.part is None:
                    target.start_part(self.disk if self.write_thread else None)
                self._write(target, event)
            except WriteError:
                raise
            except (OSError, RuntimeError) as err:
                raise WriteError(f"cannot write {target.file.next_part_path}: {describe_os_error(err)}") from None
        self.pending += 1

    def commit(self, before_publish: Callable[[], None] | None = None) -> int:
        """Publish the open parts through their masters; the number of events committed. Raises WriteError.

        ``before_publish`` is called before each master is replaced (see :meth:`.PartitionedFile.publish_part`).
        """
        if not self.pending:
            return 0
        self.wait_for_disk(self.disk.submitted)  # a part may only point at bytes that are written
        n = self.pending
        for target in self.targets:
            if target.part is None:
                continue
            links = {k: v for k, v in target.links.items() if v}
            rows = layout.concat_rows(target.rows)
            kin_rows = layout.concat_rows(target.kinematics)
            fail_rows = layout.concat_rows(target.failures)
            if target.store is not None and target.file.fsync:
                target.store.sync()
            target.file.publish_part(target.part, links,
                                     lambda m, t=target: self._update_master(m, t, rows, kin_rows, fail_rows, n),
                                     before_publish)
            if rows is not None:
                target.counts[layout.ESTIMATES] += len(rows)
            if kin_rows is not None:
                target.counts[layout.KINEMATICS] += len(kin_rows)
            target._clear()
        self.flushed_events += n
        self.pending = 0
        return n

    def wait_for_disk(self, ticket: int) -> None:
        """Wait for the background writes up to ``ticket`` (:class:`.rawio.DiskQueue`); raises WriteError."""
        try:
            self.disk.wait(ticket)
        except OSError as err:
            where = self.run_target.file.parts_dir / STORE_NAME
            raise WriteError(f"cannot write {where}: {describe_os_error(err)}") from None

    def finish(self, *, complete: bool) -> None:
        """Close the stores (after the last commit); ``complete``: mark them as the final files (.store)."""
        try:
            for target in self.targets:
                if target.store is not None:
                    store, target.store = target.store, None
                    store.finish(self.flushed_events, complete=complete and not self.pending,
                                 fsync=target.file.fsync)
        finally:
            self.disk.close()

    def abandon(self) -> int:
        """Drop the open parts (a write failed); the number of events lost with them."""
        for target in self.targets:
            target.abandon_part()
        lost, self.pending = self.pending, 0
        return lost

    def write_run_attributes(self, m: Any) -> None:
        write_loss_attributes(m, self.losses)
        write_stage_attributes(m, self.stage_outcomes)
        if self.parameter_changes:
            write_parameter_attributes(m, changes=self.parameter_changes)

    # -- one event, one target -----------------------------------------------------------

    def _write(self, target: Target, ev: Any) -> None:
        """Write ``ev``'s objects into the store (large datasets by direct I/O), then into the part (pointing there)."""
        store = target.store
        for kind in target.kinds:
            if kind == layout.ESTIMATES:
                rows = table_rows(ev)
                if rows is not None and len(rows):
                    target.rows.append(rows)
                kin = layout.kinematics_rows([ev])
                if kin is not None:
                    target.kinematics.append(kin)
                continue
            if kind == layout.CLOUD and ev.get("cloud") is None:
                continue
            if kind == layout.CLUSTER and (ev.get("clusters") is None or ev.get("cloud") is None):
                continue
            name = target.name_for(kind, ev.id)
            self._write_kind(kind, store.groups[kind], ev, name, store.raw)
            external = store.external()
            self._write_kind(kind, target.groups[kind], ev, name, external)
            if not external.done:
                raise RuntimeError(f"{name}: the part's copy did not use every dataset written to the store")
            if kind == layout.EVENTS:
                ts = int(ev.timestamp)
                target.timestamps = [ts, ts] if not target.timestamps else [
                    min(target.timestamps[0], ts), max(target.timestamps[1], ts)]
            elif kind == layout.CLOUD:
                self._note_z_ties(target, ev)
            target.links.setdefault(kind, []).append(name)
            target.note(kind, ev.id)
        if target is self.run_target:
            failures = layout.failure_rows([ev])
            if failures is not None:
                target.failures.append(failures)

    def _write_kind(self, kind: str, group: Any, ev: Any, name: str, raw: rawio.RawWriter | rawio.External) -> None:
        """One object of ``ev`` (its traces, cloud or clusters) as ``group[name]``."""
        if kind == layout.EVENTS:
            h5direct.write_traces(group, ev, name, frib=self.frib, raw=raw, **self.options)
        elif kind == layout.CLOUD:
            h5direct.write_cloud(group, ev, name, raw=raw, **self.options)
        else:
            layout.write_clusters(group, ev, name)

    def _note_z_ties(self, target: Target, event: Any) -> None:
        """Count clouds Spyral's splines would fail on; say so once at the first (the total comes at close)."""
        if spyral.strictly_increasing_z(event.get("cloud")):
            return
        if not target.counts[Z_TIES]:
            self.warn(f"{target.file.path}: the cloud of event {event.id} has points with equal z, which Spyral's "
                      f"ClusterPhase fails on (more are counted, not logged)")
        target.counts[Z_TIES] += 1

    def _update_master(self, m: Any, target: Target, rows, kin_rows, fail_rows, n: int) -> None:
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
        layout.append_failures(m, fail_rows)
        m.attrs["events_flushed"] = np.int64(self.flushed_events + n)
        if target is self.run_target:
            self.write_run_attributes(m)


def table_rows(event: Any) -> np.ndarray | None:
    """The /estimates rows of one event (None without estimates)."""
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
