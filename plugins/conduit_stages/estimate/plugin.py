"""Entry point module of the ``estimate`` stage (light: numba loads only when the stage runs)."""

from conduit.hookspecs import hookimpl

from .stage import EstimateStage


@hookimpl
def conduit_register_stages(register):
    register(EstimateStage)
