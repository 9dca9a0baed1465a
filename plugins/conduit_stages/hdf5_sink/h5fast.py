"""Creating the many small objects of a recording through h5py's low-level API.

A recorded event is a handful of HDF5 objects and about twenty scalar
attributes (the layouts of :mod:`.layout`); through h5py's high-level API
each attribute costs about 100 µs of checks and conversions (does it exist?
delete it, guess the type, ...) on objects that were just created and have
none. These helpers make the same objects (same types, same creation
properties as h5py's defaults: no timestamps, UTF-8 names) with direct
calls, so that recording takes about half the CPU time, all of it holding
the GIL the event loop also needs.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

__all__ = ["set_attrs", "create_dataset", "create_group", "link_external"]

_SCALAR = h5py.h5s.create(h5py.h5s.SCALAR)
_TYPES: dict[np.dtype, Any] = {}


def _lcpl() -> Any:
    plist = h5py.h5p.create(h5py.h5p.LINK_CREATE)
    plist.set_char_encoding(h5py.h5t.CSET_UTF8)
    return plist


def _dcpl() -> Any:
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_obj_track_times(False)
    plist.set_attr_creation_order(0)
    return plist


_LCPL = _lcpl()
_DCPL = _dcpl()


def _type(dtype: np.dtype) -> Any:
    tid = _TYPES.get(dtype)
    if tid is None:
        tid = _TYPES[dtype] = h5py.h5t.py_create(dtype, logical=True)
    return tid


def set_attrs(obj: Any, values: dict[str, Any]) -> None:
    """Numeric scalar attributes on a freshly created object (strings go through h5py's high-level API)."""
    oid = obj.id
    for key, value in values.items():
        arr = np.asarray(value)
        if arr.shape != () or arr.dtype.kind not in "biuf":
            obj.attrs[key] = value
            continue
        h5py.h5a.create(oid, key.encode(), _type(arr.dtype), _SCALAR).write(arr)


def create_dataset(group: Any, name: str, data: np.ndarray, **options: Any) -> h5py.Dataset:
    """``group.create_dataset(name, data=data)`` (contiguous, no filters); options go to h5py's own."""
    arr = np.ascontiguousarray(data)
    if options or arr.size == 0:
        return group.create_dataset(name, data=arr, **options)
    space = h5py.h5s.create_simple(arr.shape)
    dsid = h5py.h5d.create(group.id, name.encode(), _type(arr.dtype), space, dcpl=_DCPL, lcpl=_LCPL)
    dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, arr)
    return h5py.Dataset(dsid)


def create_group(group: Any, name: str) -> h5py.Group:
    """``group.create_group(name)``."""
    return h5py.Group(h5py.h5g.create(group.id, name.encode(), lcpl=_LCPL))


def link_external(group: Any, name: str, filename: str, path: str) -> None:
    """``group[name] = h5py.ExternalLink(filename, path)``."""
    group.id.links.create_external(name.encode(), filename.encode(), path.encode(), lcpl=_LCPL)
