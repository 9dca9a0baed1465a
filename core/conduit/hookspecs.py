"""The hooks a conduit plugin can implement.

A plugin is any importable module (or object) named by an entry point in the
``conduit`` group::

    [project.entry-points.conduit]
    myexperiment = "myexperiment_conduit.plugin"

and implementing one or more of the hooks below with :data:`conduit.hookimpl`.
The built-in sources, stages, the simulator, batch replay and the core's own
sub-commands (``run``, ``check``, ``stages``, ``new-stage``) are registered
exactly this way. Hooks are called through pluggy with keyword arguments;
every implementation is called, once per plugin, so that one that raises is
reported by name and the others still register (``CONDUIT_TRACE_PLUGINS=1``
or ``conduit --trace-plugins ...`` prints every hook call).

Keep the module an entry point names light: import stage classes (and what
they import: numpy, numba ...) inside the hook, so that ``conduit --help``,
which loads every plugin to list their commands, stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("conduit")
hookimpl = pluggy.HookimplMarker("conduit")


@hookspec
def conduit_register_stages(register: Callable[[type], None]) -> None:
    """Register stage classes by calling ``register(StageClass)`` once per class.

    Each class subclasses :class:`conduit.TransformStage` or
    :class:`conduit.SinkStage` and declares ``name``, ``requires``,
    ``provides`` and ``Params``. Import heavy libraries inside the stage's
    methods, not at module level, so that discovery stays fast.
    """


@hookspec
def conduit_register_sources(register: Callable[[type], None]) -> None:
    """Register source classes (:class:`conduit.Source` subclasses) by ``kind``."""


@hookspec
def conduit_register_commands(register: Callable[..., None]) -> None:
    """Register ``conduit`` sub-commands: ``register(name, target, help)``.

    ``target`` is the dotted name of a module (imported only when the
    command runs, so naming it costs nothing at start-up) or an object; it
    provides ``add_arguments(parser)`` (an ``argparse.ArgumentParser``),
    ``main(args) -> int`` (the exit status) and optionally ``DESCRIPTION``
    (the text of ``conduit NAME --help``). ``help`` is the one line
    ``conduit --help`` shows::

        @hookimpl
        def conduit_register_commands(register):
            register("calibrate", "myexp_conduit.calibrate", "fit the pad gains of a run")
    """


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
