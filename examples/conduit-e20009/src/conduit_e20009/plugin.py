"""Entry point module: registers this package's stages (imports stay light)."""

from conduit.hookspecs import hookimpl

from .ion_chamber import IonChamberStage
from .linkage import LinkageClusterStage


@hookimpl
def conduit_register_stages(register):
    register(IonChamberStage)
    register(LinkageClusterStage)
