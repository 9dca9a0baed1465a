"""A numpy dtype named in a message to another process, and made back there; both made once per dtype.

The hdf5 sink's writer process and the rerun sink's draw process receive arrays as bytes with their dtype
named beside them. A structured dtype's ``descr`` costs numpy ~100-160 µs per call and ``np.dtype(descr)``
~50 µs (the estimates of every event): a string made once and a dictionary lookup on both sides instead.
"""

from __future__ import annotations

import ast

import numpy as np

__all__ = ["dtype_name", "dtype_named"]

_NAMES: dict[np.dtype, str] = {}
_DTYPES: dict[str, np.dtype] = {}


def dtype_name(dtype: np.dtype) -> str:
    """The name of ``dtype`` in a message: its ``str``, or the ``repr`` of its ``descr`` when structured."""
    name = _NAMES.get(dtype)
    if name is None:
        name = _NAMES[dtype] = repr(dtype.descr) if dtype.names else dtype.str
    return name


def dtype_named(name: str) -> np.dtype:
    """The dtype :func:`dtype_name` named ``name``."""
    dtype = _DTYPES.get(name)
    if dtype is None:
        dtype = _DTYPES[name] = np.dtype(ast.literal_eval(name) if name.startswith("[") else name)
    return dtype
