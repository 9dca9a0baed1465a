"""Stages that fail, stop, drop and give nothing, for the tests of the engine's failure semantics and counts.

Installed by the tests as a real distribution (like ``conduit_testkit``), beside it.
"""

from __future__ import annotations

import numpy as np

from conduit import Clusters, Direction, Params, SinkStage, StopRun, TransformStage, hookimpl, param


class StopParams(Params):
    at: int = param(5, "the event id on which the stage raises StopRun")


class StopAt(TransformStage):
    """Raises StopRun on one event: it cannot go on."""

    name = "outcomes.stop"
    provides = ("stopped_here",)
    Params = StopParams

    def process(self, event):
        if event.id == self.params.at:
            raise StopRun(f"the calibration ran out at event {event.id}")
        event.artifacts["stopped_here"] = False


class AlwaysFails(TransformStage):
    """Raises on every event."""

    name = "outcomes.always_fails"
    provides = ("never",)

    def process(self, event):
        raise RuntimeError("this stage cannot work")


class NeedsNever(TransformStage):
    """Needs what ``outcomes.always_fails`` should have made."""

    name = "outcomes.needs_never"
    requires = ("never",)
    provides = ("after_never",)

    def process(self, event):
        event.artifacts["after_never"] = 1


class DropParams(Params):
    items: int = param(5, "items per event")
    keep_below: int = param(2, "items with an index below this are kept; the others are dropped, counted", ge=0)


class Dropper(TransformStage):
    """Makes ``items`` things per event, keeps the first ``keep_below`` and counts the rest by reason."""

    name = "outcomes.drop"
    provides = ("kept",)
    Params = DropParams

    def process(self, event):
        kept = list(range(min(self.params.items, self.params.keep_below)))
        dropped = self.params.items - len(kept)
        odd = sum(1 for i in range(len(kept), self.params.items) if i % 2)
        self.count(event, "odd_index", odd)
        self.count(event, "even_index", dropped - odd)
        event.artifacts["kept"] = kept


class CrashParams(Params):
    at: int = param(3, "the event id on which the worker process dies")


class CrashWorker(TransformStage):
    """Kills its worker process on one event (a segfault in compiled code, the OOM killer)."""

    name = "outcomes.crash"
    provides = ("survived",)
    Params = CrashParams

    def process(self, event):
        if event.id == self.params.at:
            import os

            os._exit(3)
        event.artifacts["survived"] = True


class OneBlobClusterer(TransformStage):
    """A clusterer as a newcomer writes it from the artifact shapes alone: every point in one cluster, and
    no direction (Direction.NONE), which ``estimate`` rejects."""

    name = "outcomes.one_blob"
    requires = ("cloud",)
    provides = ("clusters",)

    def process(self, event):
        cloud = event.artifacts["cloud"]
        labels = np.zeros(len(cloud), dtype=np.int32)
        event.artifacts["clusters"] = Clusters(labels, np.array([0], dtype=np.int32),
                                               np.array([Direction.NONE], dtype=np.int8))


class SlowStopParams(Params):
    at: int = param(5, "the event id on which the sink raises StopRun")
    path: str = param("consumed.txt", "one line per event consumed (its id)")
    first_delay: float = param(0.3, "time the first event takes (s), so that the next ones wait in the queue")


class SlowStopSink(SinkStage):
    """A sink slow on its first event (the others queue up behind it) that raises StopRun on one event."""

    name = "outcomes.slow_stop_sink"
    Params = SlowStopParams

    def is_lossless(self):
        return True

    def open(self):
        self.file = open(self.context.format_path(self.params.path), "w")

    def consume(self, event):
        import time

        if event.id == 0:
            time.sleep(self.params.first_delay)
        if event.id == self.params.at:
            raise StopRun(f"the disk is full at event {event.id}")
        self.file.write(f"{event.id}\n")

    def close(self):
        self.file.close()


@hookimpl
def conduit_register_stages(register):
    for cls in (StopAt, AlwaysFails, NeedsNever, Dropper, CrashWorker, OneBlobClusterer, SlowStopSink):
        register(cls)
