"""conduit.testing: simulated events through the registry, stages run in process, the stage contract test,
and the pytest plugin that offers them as fixtures.

Each broken stage below breaks exactly one rule, and check_stage must name it.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from conduit.artifacts import Clusters
from conduit.event import Event
from conduit.params import Params, param
from conduit.stage import TransformStage
from conduit.testing import check_stage, make_event, make_events, run_stages

from conduit_test_support import run_pytest


def test_make_event_is_a_realistic_simulated_event_and_repeatable():
    a, b = make_event("default", seed=5), make_event("default", seed=5)
    other = make_event("default", seed=6)
    assert isinstance(a, Event) and a.traces.shape[1] == 517 and a.traces.shape[0] > 100
    np.testing.assert_array_equal(a.traces, b.traces)
    assert a.traces is not b.traces  # a test may change its copy
    assert a.traces.shape != other.traces.shape or not np.array_equal(a.traces, other.traces)
    events = make_events(3, "default", seed=5)
    assert [e.id for e in events] == [0, 1, 2] and np.array_equal(events[0].traces, a.traces)
    assert make_event("default", seed=5, index=2).id == 2


def test_run_stages_runs_a_chain_and_leaves_its_inputs_alone():
    events = make_events(4, "default", seed=2)
    done = run_stages(["pointcloud", ("cluster.dbscan", {"eps": 12.0}), "estimate"], events)
    assert [e.id for e in done] == [0, 1, 2, 3] and all(e.analysed for e in done)
    assert all(not e.artifacts for e in events)
    assert sum(len(e.artifacts["estimates"]) for e in done) >= 3
    for e in done:
        assert len(e.artifacts["clusters"].labels) == len(e.artifacts["cloud"])
    with pytest.raises(KeyError, match="estimate requires 'cloud', 'clusters', which event 0 does not have"):
        run_stages(["estimate"], events[0])
    with pytest.raises(KeyError, match="no stage named 'cluster.hdbscn' \\(did you mean 'cluster.hdbscan'\\?\\)"):
        run_stages(["cluster.hdbscn"], events[0])


@pytest.mark.parametrize("name", ["pointcloud", "cluster.hdbscan", "cluster.dbscan", "estimate", "histogram"])
def test_the_builtin_stages_keep_the_contract(name):
    check = check_stage(name)
    assert check.ok and len(check.events) == 3


class CountParams(Params):
    threshold: float = param(10.0, "smallest amplitude counted (ADC)", ge=0)


class Counter(TransformStage):
    """Counts cloud points above a threshold (a correct stage)."""

    name = "test.counter"
    requires = ("cloud",)
    provides = ("count",)
    Params = CountParams

    def process(self, event):
        event.artifacts["count"] = int(np.sum(event.artifacts["cloud"][:, 3] > self.params.threshold))


class Stateful(Counter):
    """Adds the previous event's count: results depend on the order of events."""

    name = "test.stateful"

    def process(self, event):
        before = getattr(self, "last", 0)
        super().process(event)
        self.last = event.artifacts["count"]
        event.artifacts["count"] += before


class Forgetful(Counter):
    name = "test.forgetful"

    def process(self, event):
        pass


class CloudBreaker(TransformStage):
    """Keeps every other point of the cloud, as float32 and without its last columns."""

    name = "test.cloudbreaker"
    requires = ("cloud",)
    provides = ("cloud",)

    def process(self, event):
        event.artifacts["cloud"] = event.artifacts["cloud"][::2, :5].astype(np.float32)


class ShortLabels(TransformStage):
    name = "test.shortlabels"
    requires = ("cloud",)
    provides = ("clusters",)

    def process(self, event):
        event.artifacts["clusters"] = Clusters.empty(len(event.artifacts["cloud"]) - 1)


class UndocumentedParams(Params):
    cut: float = param(-1.0, "", ge=0)


class Undocumented(Counter):
    name = "test.undocumented"
    Params = UndocumentedParams

    def process(self, event):
        event.artifacts["count"] = 0


def test_a_correct_stage_passes_and_its_events_are_returned():
    check = check_stage(Counter)
    assert check.ok and check.upstream == ["pointcloud"]
    assert all(e.artifacts["count"] > 0 for e in check.events)


@pytest.mark.parametrize("stage, expected", [
    (Stateful, ["'count' differs between two instances given the events in another order"]),
    (Forgetful, ["'count' is in provides but process() did not set it"]),
    (CloudBreaker, ["'cloud' must be a float64 array (N, 8)"]),
    (ShortLabels, ["clusters.labels has"]),
    (Undocumented, ["parameter 'cut' has no one-line doc", "defaults: cut: must be ≥ 0, got -1.0"]),
])
def test_each_broken_rule_is_named(stage, expected):
    check = check_stage(stage, raise_on_problems=False)
    assert not check.ok
    for text in expected:
        assert any(text in p for p in check.problems), (text, check.problems)
    with pytest.raises(AssertionError, match=f"{stage.name} breaks the stage contract"):
        check_stage(stage)


def test_a_stage_defined_inside_a_function_cannot_go_to_workers():
    class Local(Counter):
        name = "test.local"

    check = check_stage(Local, raise_on_problems=False)
    assert len(check.problems) == 1 and check.problems[0].startswith("pickling: worker processes get the stage class")


def test_fixtures_come_from_the_installed_pytest_plugin(tmp_path):
    """A test file that imports nothing from conduit.testing gets make_event, run_stages and check_stage."""
    (tmp_path / "test_uses_fixtures.py").write_text(textwrap.dedent("""
        def test_fixtures(make_event, run_stages, check_stage):
            event = make_event("default", 4)
            [done] = run_stages(["pointcloud"], event)
            assert len(done.artifacts["cloud"]) > 50
            assert check_stage("pointcloud").ok
    """))
    result = run_pytest(tmp_path, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_check_leaves_no_directory_behind_unless_given_one(tmp_path, monkeypatch):
    """A sink's outputs go to a temporary directory removed when the check returns; a given base_dir is kept."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert check_stage("hdf5").ok
    assert list(scratch.iterdir()) == []
    kept = tmp_path / "kept"
    kept.mkdir()
    assert check_stage("hdf5", base_dir=kept).ok
    assert any(kept.rglob("*.h5"))
