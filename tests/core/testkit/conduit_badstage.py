"""A plugin that imports fine but registers a stage breaking the contract."""

from conduit.hookspecs import hookimpl
from conduit.stage import TransformStage


class NoName(TransformStage):
    name = "Bad Name!"


@hookimpl
def conduit_register_stages(register):
    register(NoName)
