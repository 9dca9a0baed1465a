"""The plugin-facing API in one place, the typed shared objects, and parameter errors that keep their reason."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import conduit
from conduit.params import ParamError, Params, did_you_mean, param
from conduit.shared import Shared, SharedError


def test_everything_a_plugin_needs_comes_from_conduit_cheaply():
    from conduit.engine.runner import StopRun as engine_stop
    from conduit.stage import RunContext, SinkStage, StageContext, StopRun, TransformStage

    assert conduit.StopRun is StopRun is engine_stop  # raised by stages, caught by the engine: one class
    assert conduit.RunContext is RunContext and conduit.StageContext is StageContext is RunContext
    assert conduit.TransformStage is TransformStage and conduit.SinkStage is SinkStage
    assert set(conduit.__all__) >= {"TransformStage", "SinkStage", "Source", "Params", "param", "hookimpl",
                                    "StopRun", "RunContext", "Event", "Shared"}
    with pytest.raises(AttributeError, match="no attribute 'Stopper'"):
        conduit.Stopper  # noqa: B018
    code = ("import sys, conduit\nfrom conduit import TransformStage, Params, param, hookimpl, StopRun, RunContext\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'numba', 'h5py', 'trio', 'rerun'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class Histos:
    """A stand-in interface for the registry tests."""


class Plenty(Histos):
    pass


def test_shared_objects_are_looked_up_by_type_and_stay_in_the_main_process():
    shared = Shared()
    assert shared.get(Histos) is None and shared.all(Histos) == []
    first, second = Plenty(), Plenty()
    shared.publish(Histos, first, by="histogram", single=True)
    with pytest.raises(SharedError, match="only one Histos per run; histogram already publishes one"):
        shared.publish(Histos, second, by="other", single=True)
    with pytest.raises(SharedError, match="other: object does not implement Histos"):
        shared.publish(Histos, object(), by="other")
    shared.publish(Histos, second, by="other")
    assert shared.get(Histos) is first and shared.all(Histos) == [first, second]
    assert shared.publishers(Histos) == ["histogram", "other"]
    context = conduit.RunContext(run=4)
    context.shared.publish(Histos, first, by="histogram")
    copy = pickle.loads(pickle.dumps(context))  # what a worker process receives
    assert copy.run == 4 and copy.shared.get(Histos) is None


class Inner(Params):
    low: float = param(0.0, "lower edge")


class Outer(Params):
    window: tuple[float, float] | None = param(None, "[low, high]")
    inner: Inner | None = param(None, "a nested table")
    either: int | str = param(0, "a number or a name")


def test_union_parameters_keep_the_reason_of_the_option_meant():
    with pytest.raises(ParamError) as err:
        Outer.from_mapping({"window": [1.0, 2.0, 3.0]})
    assert [(p.dotted(), p.message) for p in err.value.problems] == [("window", "expected 2 values, got 3")]
    with pytest.raises(ParamError) as err:
        Outer.from_mapping({"inner": {"lowe": 1.0}})
    assert [p.dotted() for p in err.value.problems] == ["inner.lowe"]
    assert "did you mean 'low'?" in err.value.problems[0].message
    with pytest.raises(ParamError) as err:
        Outer.from_mapping({"either": [1]})
    assert err.value.problems[0].message == "expected int | str, got [1] (list)"
    assert Outer.from_mapping({"window": None, "either": "x"}).either == "x"


def test_did_you_mean_is_one_helper():
    assert did_you_mean("pointclod", ["pointcloud", "estimate"]) == " (did you mean 'pointcloud'?)"
    assert did_you_mean("zzz", ["pointcloud"]) == ""
    assert did_you_mean("cluster.hdbscn", ["cluster.hdbscan", "cluster.dbscan"], n=2, cutoff=0.5) == (
        " (did you mean 'cluster.hdbscan' or 'cluster.dbscan'?)")
