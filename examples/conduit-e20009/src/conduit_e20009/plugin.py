"""Entry point module: registers this package's stages (kept light: `conduit --help` imports it)."""

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .ion_chamber import IonChamberStage
    from .linkage import LinkageClusterStage

    register(IonChamberStage)
    register(LinkageClusterStage)
