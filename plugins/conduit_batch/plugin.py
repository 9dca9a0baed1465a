"""Registers the ``conduit batch`` command (entry point ``batch``); the command module is imported only when run."""

from __future__ import annotations

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_commands(register) -> None:
    register("batch", "conduit_batch.command", "replay many runs on a Dask cluster")
