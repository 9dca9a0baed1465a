"""attpc-conduit: online data conduit for the AT-TPC.

The public surface for plugin authors is re-exported here: :data:`hookimpl`,
the stage and source base classes, :class:`Params` and :func:`param`, and
:class:`Event`. Heavy modules (numba kernels, hdbscan, rerun, h5py) are never
imported by ``import conduit``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "hookimpl",
    "Params",
    "param",
    "Event",
    "TransformStage",
    "SinkStage",
    "StageContext",
    "Source",
]

_LAZY = {
    "hookimpl": ("conduit.hookspecs", "hookimpl"),
    "Params": ("conduit.params", "Params"),
    "param": ("conduit.params", "param"),
    "Event": ("conduit.event", "Event"),
    "TransformStage": ("conduit.stage", "TransformStage"),
    "SinkStage": ("conduit.stage", "SinkStage"),
    "StageContext": ("conduit.stage", "StageContext"),
    "Source": ("conduit.source", "Source"),
}


def __getattr__(name: str):
    # Lazy so that `conduit --help` does not pay for numpy.
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'conduit' has no attribute {name!r}") from None
    import importlib

    return getattr(importlib.import_module(module_name), attr)
