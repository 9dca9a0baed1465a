"""Entry point module of the ``estimate`` stage (light: the stage module loads when the hook is called)."""

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .stage import EstimateStage

    register(EstimateStage)
