"""Entry point module of the ``kinematics`` stage (light: numba loads only when the stage runs)."""

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .stage import KinematicsStage

    register(KinematicsStage)
