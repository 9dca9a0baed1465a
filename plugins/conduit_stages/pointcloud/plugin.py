"""Entry point module of the ``pointcloud`` stage (light: the stage module loads when the hook is called)."""

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .stage import PointcloudStage

    register(PointcloudStage)
