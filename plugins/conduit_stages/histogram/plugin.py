"""Registers the ``histogram`` sink (entry point ``histogram``)."""

from __future__ import annotations

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .sink import HistogramSink

    register(HistogramSink)
