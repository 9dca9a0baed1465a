"""What the main process and the workers send each other per event, pickled compactly.

cloudpickle (what trio-parallel, the engine's former worker pool, pickled
with) calls back into Python for every object it meets (about 35 µs for an
event and 75 µs for a chain result of the default mix, twice plain pickle's
time). Numpy's own pickling of an array also spells out its dtype
each time, field by field for a structured one (13 µs to pickle and 23 µs to
unpickle :data:`conduit.artifacts.ESTIMATE_DTYPE`).

:func:`pack` pickles with the plain (C) pickler, protocol 5, and reduces each
C-contiguous numpy array to its bytes, its shape and a short dtype key (the
dtype string, or the index of a structured dtype of :mod:`conduit.artifacts`);
the worker pipes (:mod:`.workers`) then only copy the resulting bytes. :func:`unpack` is
``pickle.loads``: arrays come back equal, writable, with the same dtype and
shape. Objects the plain pickler cannot handle (classes defined in a script
or notebook) are pickled with cloudpickle instead.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any

import numpy as np

from ..artifacts import ESTIMATE_DTYPE, KINEMATICS_DTYPE

__all__ = ["pack", "unpack"]

#: Structured dtypes sent as their index here (the same table in every process: it is code).
KNOWN_DTYPES: tuple[np.dtype, ...] = (ESTIMATE_DTYPE, KINEMATICS_DTYPE)

_keys: dict[np.dtype, Any] = {}
_dtypes: dict[Any, np.dtype] = {}


def _dtype_key(dtype: np.dtype) -> Any:
    """A short picklable stand-in for ``dtype``: its string, an index in KNOWN_DTYPES, or the dtype itself."""
    key = _keys.get(dtype)
    if key is None:
        if dtype.names is None and dtype.metadata is None and dtype.subdtype is None:
            key = dtype.str
        elif dtype in KNOWN_DTYPES:
            key = KNOWN_DTYPES.index(dtype)
        else:
            return dtype  # rare: pickled in full
        _keys[dtype] = key
    return key


def _array(data: bytes | bytearray, key: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The array :func:`_reduce_array` took apart (writable, as unpickled arrays are)."""
    dtype = _dtypes.get(key) if not isinstance(key, np.dtype) else key
    if dtype is None:
        dtype = _dtypes[key] = KNOWN_DTYPES[key] if isinstance(key, int) else np.dtype(key)
    array = np.frombuffer(data, dtype=dtype)
    if isinstance(data, bytes):  # a read-only source array's bytes
        array = array.copy()
    return array.reshape(shape)


#: Kinds of dtype whose arrays export their buffer as they are (bool, integers, floats, complex): a PickleBuffer
#: of the array itself, 0.5 µs, instead of one of a uint8 view of it, 4 µs (five arrays per chain result).
_BUFFER_KINDS = frozenset("biufc")


def _reduce_array(array: np.ndarray):
    dtype = array.dtype
    if dtype.hasobject or dtype.itemsize == 0 or not array.flags.c_contiguous:
        return array.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    # In-band, a PickleBuffer of a writable array is stored as a bytearray (one copy, no dtype spelled out);
    # other dtypes (structured, datetime64: the buffer protocol refuses some) as the bytes of a uint8 view.
    data = pickle.PickleBuffer(array if dtype.kind in _BUFFER_KINDS else array.reshape(-1).view(np.uint8))
    return _array, (data, _dtype_key(dtype), array.shape)


_DISPATCH = copyreg.dispatch_table.copy()
_DISPATCH[np.ndarray] = _reduce_array  # exact type: subclasses (masked arrays, ...) pickle as usual


def pack(obj: Any) -> bytes:
    """``obj`` pickled (protocol 5), numpy arrays compactly; cloudpickle when plain pickle cannot."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.dispatch_table = _DISPATCH
    try:
        pickler.dump(obj)
        data = buffer.getvalue()
    except (pickle.PicklingError, AttributeError, TypeError):  # a class only the sender has (local, dynamic)
        data = None
    # Plain pickle names a class of the sender's script by reference, as __main__.Name, which the
    # receiver lacks: such objects go by value (a string "__main__" in the data only costs the slow path).
    if data is None or b"__main__" in data:
        try:  # a class of a script or notebook travels by value
            import cloudpickle
        except ImportError:  # pragma: no cover - cloudpickle comes with trio-parallel, a dependency
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def unpack(data: bytes) -> Any:
    """What :func:`pack` pickled."""
    return pickle.loads(data)
