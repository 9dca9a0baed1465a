"""attpc-conduit: online data conduit for the AT-TPC.

Everything a plugin author needs is importable from here::

    from conduit import TransformStage, SinkStage, Source, Params, param, hookimpl, StopRun, RunContext, Event

The names are loaded on first use (module ``__getattr__``), so ``import
conduit`` stays cheap: heavy modules (numba kernels, hdbscan, rerun, h5py,
trio) are never imported by it. The modules behind them are the public API
too (docs/architecture.md lists them): :mod:`conduit.stage`,
:mod:`conduit.source`, :mod:`conduit.params`, :mod:`conduit.event`,
:mod:`conduit.artifacts`, :mod:`conduit.hookspecs`, :mod:`conduit.shared`.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: Public name -> (module, attribute), imported on first access.
_LAZY = {
    "hookimpl": ("conduit.hookspecs", "hookimpl"),
    "Params": ("conduit.params", "Params"),
    "param": ("conduit.params", "param"),
    "Problem": ("conduit.params", "Problem"),
    "ParamError": ("conduit.params", "ParamError"),
    "Event": ("conduit.event", "Event"),
    "Stage": ("conduit.stage", "Stage"),
    "TransformStage": ("conduit.stage", "TransformStage"),
    "SinkStage": ("conduit.stage", "SinkStage"),
    "RunContext": ("conduit.stage", "RunContext"),
    "StageContext": ("conduit.stage", "StageContext"),
    "StopRun": ("conduit.stage", "StopRun"),
    "Source": ("conduit.source", "Source"),
    "SourceError": ("conduit.source", "SourceError"),
    "Shared": ("conduit.shared", "Shared"),
    "Clusters": ("conduit.artifacts", "Clusters"),
    "Direction": ("conduit.artifacts", "Direction"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    # Lazy so that `conduit --help` does not pay for numpy.
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'conduit' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
