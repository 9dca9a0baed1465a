"""Stages that keep or break the artifact contracts, and stages whose set-up fails (the error-path tests).

Installed by ``tests/core/test_core_contracts.py`` as a real distribution
(entry point ``contractkit``) next to the testkit, whose ``counting`` source
feeds them.
"""

from __future__ import annotations

import numpy as np

from conduit.artifacts import CLOUD_COLUMNS, Clusters, Direction, Z
from conduit.hookspecs import hookimpl
from conduit.params import Params, param
from conduit.stage import SinkStage, TransformStage


def cloud_rows(event_id: int) -> int:
    """Rows of the cloud ``contractkit.cloud`` makes for event ``event_id``."""
    return 10 + event_id % 5


class CloudParams(Params):
    dtype: str = param("float64", "dtype of the cloud made (anything but float64 breaks the contract)")


class MakeCloud(TransformStage):
    """A (10 + id % 5, 8) cloud sorted by z; amplitude = row number."""

    name = "contractkit.cloud"
    requires = ("traces",)
    provides = ("cloud",)
    Params = CloudParams

    def process(self, event):
        n = cloud_rows(event.id)
        cloud = np.zeros((n, len(CLOUD_COLUMNS)), dtype=self.params.dtype)
        cloud[:, Z] = np.arange(n)
        cloud[:, 3] = np.arange(n)
        event.artifacts["cloud"] = cloud


class LabelParams(Params):
    short: bool = param(False, "give one label too few (breaks len(labels) == len(cloud))")


class TwoLabels(TransformStage):
    """Two clusters: the first half of the cloud and the rest."""

    name = "contractkit.labels"
    requires = ("cloud",)
    provides = ("clusters",)
    Params = LabelParams

    def process(self, event):
        n = len(event.artifacts["cloud"]) - (1 if self.params.short else 0)
        labels = (np.arange(n) >= n // 2).astype(np.int32)
        event.artifacts["clusters"] = Clusters(labels, np.array([0, 1], dtype=np.int32),
                                               np.array([Direction.FORWARD, Direction.NONE], dtype=np.int8))


class FilterParams(Params):
    minimum: float = param(3.0, "smallest amplitude kept (ADC)")


class CloudFilter(TransformStage):
    """Drops cloud rows below an amplitude: declares that it modifies the cloud."""

    name = "contractkit.filter"
    modifies = ("cloud",)
    Params = FilterParams

    def process(self, event):
        cloud = event.artifacts["cloud"]
        event.artifacts["cloud"] = cloud[cloud[:, 3] >= self.params.minimum]


class UndeclaredFilter(CloudFilter):
    """The same filter written the old way: requires and provides the cloud, no ``modifies``."""

    name = "contractkit.filter_undeclared"
    requires = ("cloud",)
    provides = ("cloud",)
    modifies = ()


class CountLabels(TransformStage):
    """Reads the clusters (as an estimator would)."""

    name = "contractkit.count"
    requires = ("cloud", "clusters")
    provides = ("labelled",)

    def process(self, event):
        event.artifacts["labelled"] = int(np.count_nonzero(event.artifacts["clusters"].labels >= 0))


class ColdParams(Params):
    message: str = param("no calibration table", "what warm_up raises")


class ColdStage(TransformStage):
    """Fails to warm up."""

    name = "contractkit.cold"
    requires = ("traces",)
    provides = ("warm",)
    Params = ColdParams

    def warm_up(self):
        raise FileNotFoundError(self.params.message)

    def process(self, event):
        event.artifacts["warm"] = True


class RangeParams(Params):
    low: float = param(0.0, "lower edge")
    high: float = param(1.0, "upper edge")

    def check(self):
        if self.high <= self.low:  # raising, as the guide allows, instead of returning a Problem
            raise ValueError(f"high ({self.high:g}) must be above low ({self.low:g})")
        return []


class RangeStage(TransformStage):
    """Its parameters' check() raises ValueError."""

    name = "contractkit.range"
    requires = ("traces",)
    provides = ("in_range",)
    Params = RangeParams

    def process(self, event):
        event.artifacts["in_range"] = True


class BadSinkParams(Params):
    fail_open: bool = param(False, "raise in open() instead of in consume()")


class BadSink(SinkStage):
    """Reads an artifact no stage made: KeyError on every event (or in open())."""

    name = "contractkit.badsink"
    Params = BadSinkParams

    def open(self):
        if self.params.fail_open:
            raise KeyError("path")

    def consume(self, event):
        self.last = event.artifacts["cloud"]


STAGES = (MakeCloud, TwoLabels, CloudFilter, UndeclaredFilter, CountLabels, ColdStage, RangeStage, BadSink)


@hookimpl
def conduit_register_stages(register):
    for cls in STAGES:
        register(cls)
