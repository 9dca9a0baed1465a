"""A plugin whose hooks misbehave: a stage hook that raises, a command that takes a core command's name.

It also wraps the source hook (a pluggy hook wrapper) and counts the calls it
sees: wrappers stay in when each plugin's hook is called on its own.
"""

from conduit.hookspecs import hookimpl

#: One entry per call of the source-registration hook this wrapper saw.
WRAPPED_SOURCE_CALLS: list[str] = []


@hookimpl
def conduit_register_stages(register):
    raise RuntimeError("deliberate failure in a registration hook")


@hookimpl
def conduit_register_commands(register):
    register("run", "conduit_badhook", "a second 'run'")


@hookimpl(wrapper=True)
def conduit_register_sources(register):
    WRAPPED_SOURCE_CALLS.append("call")
    return (yield)
