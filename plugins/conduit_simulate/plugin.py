"""Registers the ``simulate`` source kind and the ``conduit simulate`` command (entry point ``simulate``).

Kept light: the source module and the command module are imported only when used.
"""

from __future__ import annotations

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_sources(register) -> None:
    from .source import SimulateSource

    register(SimulateSource)


@hookimpl
def conduit_register_commands(register) -> None:
    register("simulate", "conduit_simulate.command",
             "make synthetic AT-TPC data: serve 11 DataExporters or write files")
