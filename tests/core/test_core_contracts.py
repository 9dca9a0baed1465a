"""Artifact contracts: the standard artifacts' forms checked at stage boundaries, and the order of stages
that modify an artifact checked when the pipeline loads."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conduit.artifacts import (CONTRACTS, ArtifactError, Clusters, check_outputs, empty_cloud, empty_estimates,
                               empty_kinematics)
from conduit.config.pipeline import PipelineError
from conduit.engine.runner import run_pipeline
from conduit.event import Event
from conduit.stage import RunContext, SinkStage, StageDefinitionError, TransformStage
from conduit_test_support import pipeline_from_tables, read_collected


SOURCE = 'kind = "counting"\nevents = 20'


def _stage(name: str, provides=(), modifies=()):
    """A stage object (as the engine holds it) declaring ``provides`` / ``modifies``."""
    cls = type("Probe", (TransformStage,), {"name": name, "provides": tuple(provides), "modifies": tuple(modifies)})
    return cls(cls.Params(), RunContext())


def _event(**artifacts) -> Event:
    event = Event(5)
    event.artifacts.update(artifacts)
    return event


def _clusters(n: int, k: int = 2, labels_dtype=np.int32) -> Clusters:
    return Clusters(np.zeros(n, dtype=labels_dtype), np.arange(k, dtype=np.int32), np.zeros(k, dtype=np.int8))


# -- forms ------------------------------------------------------------------------------------------------


def test_every_standard_artifact_has_a_declared_form():
    assert sorted(CONTRACTS) == ["cloud", "clusters", "estimates", "kinematics"]
    good = {"cloud": empty_cloud(4), "clusters": _clusters(4), "estimates": empty_estimates(2),
            "kinematics": empty_kinematics(2)}
    check_outputs(_stage("ok.all", provides=good), _event(**good))  # nothing raised


@pytest.mark.parametrize("name, value, expected", [
    ("cloud", np.zeros((4, 8), dtype=np.float32), "got dtype float32"),
    ("cloud", np.zeros((4, 7)), "got shape (4, 7)"),
    ("cloud", [[0.0] * 8], "got list"),
    ("clusters", np.zeros(4, dtype=np.int32), "got ndarray"),
    ("clusters", _clusters(4, labels_dtype=np.int64), "labels: got dtype int64"),
    ("clusters", Clusters(np.zeros(4, np.int32), np.arange(2, dtype=np.int32), np.zeros(3, np.int8)),
     "2 cluster_labels but 3 directions (one per cluster)"),
    ("estimates", np.zeros(2, dtype=[("event", np.int64)]), "got dtype a structured dtype with other fields"),
    ("estimates", np.zeros((2, 3)), "got shape (2, 3)"),
    ("kinematics", empty_estimates(2), "got dtype a structured dtype with other fields"),
])
def test_a_bad_artifact_is_refused_naming_the_stage(name, value, expected):
    event = _event(**{name: value})
    with pytest.raises(ArtifactError) as err:
        check_outputs(_stage("myexp.maker", provides=(name,)), event)
    assert name not in event.artifacts  # taken off: no later stage or sink reads it
    message = str(err.value)
    assert message.startswith(f"stage 'myexp.maker' produced a bad artifact: '{name}' must be ")
    assert message.endswith(expected)


def test_only_what_the_stage_touched_is_checked():
    """A bad artifact another stage left is that stage's failure, not this one's; absent ones are fine."""
    event = _event(cloud=np.zeros((4, 8), dtype=np.float32))
    check_outputs(_stage("myexp.other", provides=("hits",)), event)
    check_outputs(_stage("myexp.maker", provides=("clusters",)), _event())


def test_labels_must_line_up_with_the_cloud_and_the_culprit_is_named():
    cloud, clusters = empty_cloud(10), _clusters(12)
    with pytest.raises(ArtifactError, match=r"^stage 'myexp.cluster' left 'clusters' and 'cloud' out of line: "
                                            r"12 rows of 'clusters' for 10 of 'cloud' \(one label per cloud row\)$"):
        check_outputs(_stage("myexp.cluster", provides=("clusters",)), _event(cloud=cloud, clusters=clusters))
    # A cloud filter after the clusterer: the filter is named and told where it belongs.
    with pytest.raises(ArtifactError, match=r"^stage 'myexp.filter' left 'clusters' and 'cloud' out of line: .*"
                                            r"a stage that changes 'cloud' belongs before the stages that derive"):
        check_outputs(_stage("myexp.filter", modifies=("cloud",)), _event(cloud=cloud, clusters=clusters))
    with pytest.raises(ArtifactError, match="3 rows of 'kinematics' for 2 of 'estimates'"):
        check_outputs(_stage("myexp.kin", provides=("kinematics",)),
                      _event(estimates=empty_estimates(2), kinematics=empty_kinematics(3)))


def test_modifies_counts_as_required_and_provided_and_is_validated():
    probe = _stage("myexp.filter", provides=("n_removed",), modifies=("cloud",))
    assert type(probe).artifacts(probe.params) == (("cloud",), ("n_removed", "cloud"))
    bad = type("Bad", (TransformStage,), {"name": "myexp.bad", "modifies": "cloud"})
    with pytest.raises(StageDefinitionError, match="modifies must be a tuple of artifact names"):
        bad.validate_definition()
    sink = type("Sink", (SinkStage,), {"name": "myexp.sink", "modifies": ("cloud",)})
    with pytest.raises(StageDefinitionError, match="myexp.sink: a sink cannot modify artifacts"):
        sink.validate_definition()


# -- at run time ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_the_engine_fails_the_stage_whose_artifact_breaks_the_contract(contract_site, tmp_path, caplog, workers):
    """Short labels on every event: the clusterer fails on all 20 (named), its consumer is never run with them."""
    stages = """
    [[stage]]
    use = "contractkit.cloud"

    [[stage]]
    use = "contractkit.labels"
    short = true

    [[stage]]
    use = "contractkit.count"

    [[stage]]
    use = "testkit.collect"
    path = "out.jsonl"
    lossless = true
    """
    p = pipeline_from_tables(tmp_path, SOURCE, stages, f"workers = {workers}")
    with caplog.at_level(logging.ERROR, logger="conduit.engine"):
        summary = run_pipeline(p, handle_signals=False)
    assert summary.received == summary.analysed == 20
    assert summary.failed == {"contractkit.labels": 20}
    assert "contractkit.count" not in summary.stage_ms  # skipped: its input failed its contract every time
    records, closed = read_collected(tmp_path / "out.jsonl")
    assert closed and len(records) == 20  # the sinks get the event without the bad artifact, in either mode
    assert all(r["artifacts"] == ["cloud"] for r in records)
    first = next(r.getMessage() for r in caplog.records if "contractkit.labels" in r.getMessage())
    assert ("ArtifactError: stage 'contractkit.labels' left 'clusters' and 'cloud' out of line: "
            "9 rows of 'clusters' for 10 of 'cloud'") in first


def test_a_wrong_dtype_is_caught_where_it_is_made(contract_site, tmp_path):
    stages = """
    [[stage]]
    use = "contractkit.cloud"
    dtype = "float32"

    [[stage]]
    use = "contractkit.labels"
    """
    summary = run_pipeline(pipeline_from_tables(tmp_path, SOURCE, stages), handle_signals=False)
    assert summary.failed == {"contractkit.cloud": 20}
    assert "contractkit.labels" not in summary.stage_ms


def test_a_declared_filter_before_the_clusterer_runs_and_its_cloud_reaches_the_clusterer(contract_site, tmp_path):
    stages = """
    [[stage]]
    use = "contractkit.cloud"

    [[stage]]
    use = "contractkit.filter"
    minimum = 3.0

    [[stage]]
    use = "contractkit.labels"

    [[stage]]
    use = "contractkit.count"
    """
    events = []
    summary = run_pipeline(pipeline_from_tables(tmp_path, SOURCE, stages, "workers = 1"), handle_signals=False,
                           on_event=events.append)
    assert summary.failed == {} and len(events) == 20
    for event in events:  # the filtered cloud came back from the worker process (modifies = provided too)
        assert len(event.artifacts["cloud"]) == len(event.artifacts["clusters"].labels) == 10 + event.id % 5 - 3


# -- when the pipeline loads ------------------------------------------------------------------------------


ORDER = """
[[stage]]
use = "contractkit.cloud"

[[stage]]
use = "contractkit.labels"

[[stage]]
use = "{filter}"
"""


@pytest.mark.parametrize("filter_stage", ["contractkit.filter", "contractkit.filter_undeclared"])
def test_check_refuses_a_cloud_filter_after_the_clusterer_with_file_and_line(contract_site, tmp_path,
                                                                             filter_stage):
    with pytest.raises(PipelineError) as err:
        pipeline_from_tables(tmp_path, SOURCE, ORDER.format(filter=filter_stage))
    path = tmp_path / "pipe.toml"
    assert err.value.lines == [
        f"{path}:16: stage.3.use: stage '{filter_stage}' modifies 'cloud' after stage 2 'contractkit.labels' "
        f"({path}:13) derived 'clusters' from it: they would no longer line up; "
        f"place '{filter_stage}' before stage 2"]


def test_a_filter_before_the_clusterer_and_a_second_filter_pass(contract_site, tmp_path):
    stages = ORDER.replace('use = "contractkit.labels"', 'use = "contractkit.filter"').format(
        filter="contractkit.filter") + '\n[[stage]]\nuse = "contractkit.labels"\n'
    pipeline = pipeline_from_tables(tmp_path, SOURCE, stages)
    assert [s.modifies for s in pipeline.stages] == [(), ("cloud",), ("cloud",), ()]


def test_check_and_stages_show_what_a_stage_modifies(contract_site, tmp_path):
    from conduit_test_support import run_cli

    (tmp_path / "pipe.toml").write_text(f"[source]\n{SOURCE}\n" + ORDER.replace(
        'use = "contractkit.labels"', 'use = "contractkit.filter"').format(filter="contractkit.labels"))
    out = run_cli("check", str(tmp_path / "pipe.toml"))
    assert out.returncode == 0, out.stderr
    assert "stage 2: contractkit.filter (transform; requires cloud; provides cloud; modifies cloud)" in out.stdout
    listing = run_cli("stages").stdout
    assert "contractkit.filter  [transform]" in listing
    assert "    requires: -    provides: -    modifies: cloud" in listing
