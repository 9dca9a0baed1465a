"""Registers the ``panel`` service (entry point ``panel``)."""

from __future__ import annotations

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_services(register):
    from .service import PanelService

    register(PanelService)
