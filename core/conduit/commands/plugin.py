"""Registers the core's own sub-commands, exactly as a plugin registers its own (entry point ``commands``)."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def conduit_register_commands(register) -> None:
    register("run", "conduit.commands.run", "run a pipeline (conduit run pipelines/online.toml)")
    register("check", "conduit.commands.check", "validate a pipeline and print it resolved, without running it")
    register("stages", "conduit.commands.stages", "list every discovered stage and source, with parameters")
    register("new-stage", "conduit.commands.new_stage", "write a ready-to-install stage plugin package skeleton")
