"""Registers the ``panel`` service and the ``conduit status`` / ``conduit ctl`` commands (entry point ``panel``).

Kept light: `conduit --help` imports this module; the service and command modules load when used.
"""

from __future__ import annotations

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_services(register):
    from .service import PanelService

    register(PanelService)


@hookimpl
def conduit_register_commands(register):
    register("status", "conduit_panel.commands.status", "show a running conduit's status (through its control panel)")
    register("ctl", "conduit_panel.commands.ctl", "steer a running conduit: pause, resume, stop, reset, new-run, set")
