"""Entry point module of the clustering stages (light: hdbscan/numba load only when a stage runs)."""

from conduit.hookspecs import hookimpl

from .dbscan_stage import DbscanStage
from .hdbscan_stage import HdbscanStage


@hookimpl
def conduit_register_stages(register):
    register(HdbscanStage)
    register(DbscanStage)
