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

from conduit.lazy import lazy_exports

#: Public name -> module, imported on first use: pytest loads this plugin in every test run of the
#: environment, which then pays for pytest alone, not for numpy and the contracts.
_LAZY = {
    "make_event": "events", "make_events": "events", "run_stages": "events", "resolve_stage": "events",
    "check_stage": "contract", "StageCheck": "contract", "artifact_problems": "contract",
    "same_artifact": "contract", "upstream_for": "contract",
}

__all__ = list(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)


@pytest.fixture(name="make_event")
def _make_event_fixture():
    """:func:`conduit.testing.make_event`: ``make_event(preset="default", seed=1)`` -> a simulated Event."""
    return __getattr__("make_event")


@pytest.fixture(name="run_stages")
def _run_stages_fixture():
    """:func:`conduit.testing.run_stages`: ``run_stages([...], events)`` -> the events after the stages."""
    return __getattr__("run_stages")


@pytest.fixture(name="check_stage")
def _check_stage_fixture():
    """:func:`conduit.testing.check_stage`: ``check_stage(MyStage)`` raises listing every contract problem."""
    return __getattr__("check_stage")
