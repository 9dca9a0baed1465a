"""Registers the ``rerun`` sink (entry point ``rerun``)."""

from __future__ import annotations

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .sink import RerunSink

    register(RerunSink)
