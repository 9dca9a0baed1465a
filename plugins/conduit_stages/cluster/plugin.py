"""Entry point module of the clustering stages (light: the stage modules load when the hook is called)."""

from conduit.hookspecs import hookimpl


@hookimpl
def conduit_register_stages(register):
    from .dbscan_stage import DbscanStage
    from .hdbscan_stage import HdbscanStage

    register(HdbscanStage)
    register(DbscanStage)
