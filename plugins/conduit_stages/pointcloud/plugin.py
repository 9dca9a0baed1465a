"""Entry point module of the ``pointcloud`` stage (light: numba loads only when a stage runs)."""

from conduit.hookspecs import hookimpl

from .stage import PointcloudStage


@hookimpl
def conduit_register_stages(register):
    register(PointcloudStage)
