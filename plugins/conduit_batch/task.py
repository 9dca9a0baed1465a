"""What a Dask worker runs for one run: the ordinary engine, in-process."""

from __future__ import annotations

import time

__all__ = ["RunFailed", "process_run"]


class RunFailed(RuntimeError):
    """A run stopped on an error (the message names the run and the cause)."""


def process_run(pipeline_path: str, overrides: list[str], run: int) -> dict:
    """Run the pipeline for one run; return its summary as plain data, raise RunFailed on error.

    The engine runs with ``workers = 0`` unless the pipeline says otherwise
    through the overrides: the cluster, not the engine, spreads the work.
    """
    from conduit.config import PipelineError, load_pipeline
    from conduit.engine import run_pipeline

    started = time.time()
    try:
        pipeline = load_pipeline(pipeline_path, ["engine.workers=0", *overrides])
    except PipelineError as err:
        raise RunFailed(f"run {run}: " + "; ".join(err.lines)) from None
    summary = run_pipeline(pipeline, handle_signals=False)
    if summary.error:
        raise RunFailed(f"run {run}: {summary.error}")
    return {
        "run": run,
        "received": summary.received,
        "analysed": summary.analysed,
        "failed": summary.failed,
        "wall_seconds": summary.wall_seconds,
        "outputs": summary.outputs,
        "started": started,
    }
