"""Test helpers for stage-plugin authors, and the pytest plugin that offers them as fixtures.

::

    from conduit.testing import make_event, run_stages, check_stage

    def test_contract():
        check_stage(MyClusterer)                 # definition, parameters, pickling, artifacts, warm-up

    def test_on_a_real_event():
        event = make_event("default", seed=3)    # a realistic simulated event (GET traces)
        [done] = run_stages(["pointcloud", MyClusterer, "estimate"], event)
        assert len(done.artifacts["estimates"]) > 0

* :func:`make_event` ``(preset, seed)``, :func:`make_events` ``(n, preset, seed)``: events from the simulator
  (the ``simulate`` source kind, found through the plugin registry like any source);
* :func:`run_stages` ``(stages, events)``: stages (registered names, classes, ``(name, {params})``) run in
  this process in pipeline order, as a worker runs them; sinks consume the events;
* :func:`check_stage` ``(MyStage)``: the contract test (:mod:`.contract`); raises ``AssertionError`` listing
  every problem;
* :func:`artifact_problems`, :func:`same_artifact`: the standard artifacts' forms, and equality of artifacts.

Installed with attpc-conduit as a pytest plugin (entry point ``pytest11``):
in any test, the fixtures ``make_event``, ``run_stages`` and ``check_stage``
are these functions, without an import. They run their own trio loop: call
them from synchronous tests and fixtures. This module is a public API of
attpc-conduit (docs/writing-a-plugin.md, "Test it").
"""

from __future__ import annotations

import pytest

from .contract import StageCheck, artifact_problems, check_stage, same_artifact, upstream_for
from .events import make_event, make_events, resolve_stage, run_stages

__all__ = ["make_event", "make_events", "run_stages", "resolve_stage", "check_stage", "StageCheck",
           "artifact_problems", "same_artifact", "upstream_for"]


@pytest.fixture(name="make_event")
def _make_event_fixture():
    """:func:`conduit.testing.make_event`: ``make_event(preset="default", seed=1)`` -> a simulated Event."""
    return make_event


@pytest.fixture(name="run_stages")
def _run_stages_fixture():
    """:func:`conduit.testing.run_stages`: ``run_stages([...], events)`` -> the events after the stages."""
    return run_stages


@pytest.fixture(name="check_stage")
def _check_stage_fixture():
    """:func:`conduit.testing.check_stage`: ``check_stage(MyStage)`` raises listing every contract problem."""
    return check_stage
