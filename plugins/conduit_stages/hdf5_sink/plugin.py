"""Registers the ``hdf5`` sink (entry point ``hdf5``)."""

from __future__ import annotations

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .sink import Hdf5Sink

    register(Hdf5Sink)
