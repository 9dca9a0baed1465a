"""Batch replay of many runs on a Dask cluster (``conduit batch``).

One Dask task per run: the pipeline is loaded on the worker with its file
source's ``path`` template filled for that run, run by the ordinary engine,
and its outputs carry the run number. A manifest per finished run lets a
second invocation skip completed runs.

A plugin like any other: :mod:`.plugin` (entry point ``batch``) registers the
command (:mod:`.command`); runs go through the core's public API
(:func:`conduit.config.load_pipeline`, :func:`conduit.engine.run_pipeline`).
"""
