"""The hooks a conduit plugin can implement.

A plugin is any importable module (or object) named by an entry point in the
``conduit`` group::

    [project.entry-points.conduit]
    myexperiment = "myexperiment_conduit.plugin"

and implementing one or more of the hooks below with :data:`conduit.hookimpl`.
The built-in stages and sources are registered exactly this way. Hooks are
called with keyword arguments; every implementation is called.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("conduit")
hookimpl = pluggy.HookimplMarker("conduit")


@hookspec
def conduit_register_stages(register: Callable[[type], None]) -> None:
    """Register stage classes by calling ``register(StageClass)`` once per class.

    Each class subclasses :class:`conduit.stage.TransformStage` or
    :class:`conduit.stage.SinkStage` and declares ``name``, ``requires``,
    ``provides`` and ``Params``. Import heavy libraries inside the stage's
    methods, not at module level, so that discovery stays fast.
    """


@hookspec
def conduit_register_sources(register: Callable[[type], None]) -> None:
    """Register source classes (:class:`conduit.source.Source` subclasses) by ``kind``."""


@hookspec
def conduit_register_services(register: Callable[[type], None]) -> None:
    """Register service classes (:class:`conduit.service.Service` subclasses) by ``name``.

    A service is a task the engine runs in its own nursery, beside the
    pipeline, from start-up to the last closed output, with the engine's
    control API (:class:`conduit.engine.control.EngineControl`: status
    snapshot, pause/resume, stop, reset, new run, parameter changes). It is
    configured by the top-level pipeline table of its name (``[panel]``),
    validated against its ``Params`` like any stage table. The built-in
    control panel (``conduit_panel``) is registered this way.
    """
