"""The trio engine: source task, worker pool for transforms, one task per sink.

Public API (what a plugin that runs pipelines itself, like ``conduit batch``
or the Rerun importer, may use; loaded on first access, so importing this
package stays cheap)::

    from conduit.config import load_pipeline
    from conduit.engine import run_pipeline, format_summary

    summary = run_pipeline(load_pipeline("replay.toml"), max_events=100)
    print(format_summary(summary))

The modules inside (``runner``, ``pool``, ``metrics`` ...) are the core's own.
"""

from __future__ import annotations

from conduit.lazy import lazy_exports

_LAZY = {
    "run_pipeline": ("conduit.engine.runner", "run_pipeline"),
    "RunSummary": ("conduit.engine.runner", "RunSummary"),
    "format_summary": ("conduit.engine.summary", "format_summary"),
    "MetricsSnapshot": ("conduit.engine.metrics", "MetricsSnapshot"),
    "EngineParams": ("conduit.engine.params", "EngineParams"),
}

__all__ = list(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
