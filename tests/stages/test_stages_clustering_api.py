"""The public clustering API (conduit_physics.clustering): a subclass implements labels(cloud) and nothing else.

The built-in clusterers are checked to be exactly such subclasses, so what an
outsider's clusterer gets is what cluster.hdbscan gets.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conduit.artifacts import Clusters, Direction
from conduit.detector import DetectorParams
from conduit.event import Event
from conduit.params import param
from conduit.plugins import get_registry
from conduit.stage import RunContext, StageDefinitionError
from conduit_physics.clustering import ClusterLabelsError, Clusterer, ClusterParams, postprocess
from stages_synth import cloud_from_points, helix_points


def two_track_cloud(rng):
    """Two helical tracks and 15 noise points, sorted by z, with the true track per row (-1 noise)."""
    a = helix_points((0, 3, 300), math.radians(55), 0.3, 100, noise=0.8, rng=rng)
    b = helix_points((2, -1, 500), math.radians(120), 2.5, 70, noise=0.8, rng=rng)
    a, b = (t[np.hypot(t[:, 0], t[:, 1]) > 20.0] for t in (a, b))
    noise = rng.uniform([-250, -250, 0], [250, 250, 1000], (15, 3))
    pts = np.vstack([a, b, noise])
    truth = np.repeat([0, 1, -1], [len(a), len(b), 15])
    order = np.argsort(pts[:, 2], kind="stable")
    return cloud_from_points(pts), truth[order]


class TruthParams(ClusterParams):
    offset: int = param(100, "added to the true track index (any label values are allowed)", ge=0)


class TruthClusterer(Clusterer):
    """Labels every point with its true track (the test's oracle), counting its calls."""

    name = "test.truth"
    Params = TruthParams
    truth: np.ndarray | None = None
    calls: list[int] = []

    def labels(self, cloud):
        type(self).calls.append(len(cloud))
        if self.truth is not None and len(self.truth) == len(cloud):
            return np.where(self.truth >= 0, self.truth + self.params.offset, -1)
        return np.zeros(len(cloud), dtype=np.int64)


def context(field=2.85):
    return RunContext(detector=DetectorParams(magnetic_field=field))


def test_builtin_clusterers_use_exactly_the_public_api():
    registry = get_registry()
    for name in ("cluster.hdbscan", "cluster.dbscan"):
        cls = registry.stages[name]
        assert issubclass(cls, Clusterer) and issubclass(cls.Params, ClusterParams)
        # Only labels() is their own: size cut, post-processing, artifact and warm-up are the base class's.
        for method in ("cluster", "process", "warm_up"):
            assert getattr(cls, method) is getattr(Clusterer, method), (name, method)
        assert cls.labels is not Clusterer.labels


def test_a_subclass_gets_the_whole_post_processing(rng):
    cloud, truth = two_track_cloud(rng)
    stage = TruthClusterer(TruthParams(), context())
    stage.truth = truth
    event = Event(id=1, artifacts={"cloud": cloud})
    stage.process(event)
    clusters = event.artifacts["clusters"]
    # Exactly the post-processing the built-ins run, on the subclass's labels.
    expected = postprocess(cloud, np.where(truth >= 0, truth + 100, -1), stage.params, 2.85)
    np.testing.assert_array_equal(clusters.labels, expected.labels)
    np.testing.assert_array_equal(clusters.directions, expected.directions)
    assert isinstance(clusters, Clusters) and clusters.labels.dtype == np.int32 and len(clusters.labels) == len(cloud)
    assert sorted(clusters.cluster_labels.tolist()) == [100, 101]
    assert set(clusters.directions.tolist()) == {Direction.FORWARD, Direction.BACKWARD}
    # LOF cleaning ran: noise points labelled as part of a track are taken out again.
    stage.truth = np.where(truth >= 0, truth, 0)
    cleaned = stage.cluster(cloud)
    assert np.sum(cleaned.labels[truth < 0] >= 0) <= 2  # of 15 (one may lie near a track)
    assert np.sum(cleaned.labels >= 0) >= 0.95 * np.sum(truth >= 0)
    stage.params = TruthParams(outlier_scale_factor=0.0)
    assert np.sum(stage.cluster(cloud).labels[truth < 0] >= 0) == 15  # without it, they stay


def test_the_size_cut_comes_before_labels(rng):
    cloud, _ = two_track_cloud(rng)
    TruthClusterer.calls = []
    stage = TruthClusterer(TruthParams(min_cloud_size=len(cloud) + 1), context())
    clusters = stage.cluster(cloud)
    assert clusters.count == 0 and len(clusters.labels) == len(cloud) and TruthClusterer.calls == []


def test_warm_up_runs_labels_on_two_cloud_sizes_and_both_joins():
    TruthClusterer.calls = []
    stage = TruthClusterer(TruthParams(), context())
    stage.warm_up()
    assert len(TruthClusterer.calls) == 4 and len(set(TruthClusterer.calls)) == 2
    assert stage.params == TruthParams()  # restored


@pytest.mark.parametrize("result, message", [
    (lambda n: np.zeros(n - 1, dtype=int), "returned shape"),
    (lambda n: np.zeros((n, 1), dtype=int), "returned shape"),
    (lambda n: np.zeros(n), "float64 values; expected integers"),
    (lambda n: np.zeros(n, dtype=bool), "bool values; expected integers"),
])
def test_labels_that_are_not_one_int_per_row_are_refused_naming_the_stage(rng, result, message):
    class Bad(Clusterer):
        name = "test.bad"

        def labels(self, cloud):
            return result(len(cloud))

    cloud, _ = two_track_cloud(rng)
    with pytest.raises(ClusterLabelsError, match=f"^test.bad: labels\\(cloud\\) .*{message}"):
        Bad(ClusterParams(), context()).cluster(cloud)


def test_a_clusterer_breaking_the_contract_is_refused_when_registered():
    class NoLabels(Clusterer):
        name = "test.nolabels"

    class WrongParams(Clusterer):
        name = "test.wrongparams"
        from conduit.stage import NoParams as Params

        def labels(self, cloud):
            return np.zeros(len(cloud), dtype=int)

    with pytest.raises(StageDefinitionError, match="must implement labels"):
        NoLabels.validate_definition()
    with pytest.raises(StageDefinitionError, match="must subclass conduit_physics.clustering.ClusterParams"):
        WrongParams.validate_definition()
    TruthClusterer.validate_definition()
