"""An event's traces and cloud written with direct calls into the HDF5 library h5py has loaded.

Of the ~0.3 ms that an event's group, two datasets and ten scalar attributes
cost through h5py (even its low-level API, :mod:`.h5fast`), more than half is
h5py's own per-call work: an identifier object per group, dataset, space and
attribute (registered in a weak dictionary), its lock, argument conversion.
Here the same C calls (``H5Gcreate2``, ``H5Dcreate2``, ``H5Dwrite``,
``H5Acreate2`` ...) go through ctypes to the very ``libhdf5`` h5py uses, with
the same types and creation properties, so the objects are the same as
:func:`.layout.write_traces` and :func:`.layout.write_cloud` make
(``tests/sinks/test_sinks_hdf5_writer.py`` compares them). Used by the writer
process (one thread). Anything unusual (compression, FRIB data, empty
arrays) goes through :mod:`.layout` instead. Given the part file's
:class:`.rawio.RawWriter`, a large dataset's bytes are written by it (direct
I/O at the offset HDF5 allocated) instead of by ``H5Dwrite``.

A failed call raises OSError with the C library's errno (no space left, file
too large), which :func:`.partfile.describe_os_error` turns into the one-line reason.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import h5py
import numpy as np

from . import h5fast, layout, rawio
from .rawio import External, RawWriter

__all__ = ["available", "write_traces", "write_cloud"]

_hid = ctypes.c_int64  # hid_t, as returned
# hid_t as an argument: passed as a pointer-sized integer (the same register on LP64), which ctypes converts
# from a Python int in a fast path (~740 fewer instructions per argument than c_int64's from_param, callgrind;
# about 100 identifiers per event).
_hid_arg = ctypes.c_void_p if ctypes.sizeof(ctypes.c_void_p) == ctypes.sizeof(ctypes.c_int64) else ctypes.c_int64
_DEFAULT = 0  # H5P_DEFAULT, H5S_ALL


def _load() -> Any:
    """The libhdf5 h5py has loaded (the same library instance, so identifiers are shared); None if not found."""
    import h5py.h5  # noqa: F401  (loads the library)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libhdf5" in line and "hdf5_hl" not in line}
    except OSError:
        return None
    if len(paths) != 1:
        return None
    try:
        lib = ctypes.CDLL(paths.pop(), use_errno=True)
        lib.H5Gcreate2.restype = _hid
        lib.H5Gcreate2.argtypes = [_hid_arg, ctypes.c_char_p, _hid_arg, _hid_arg, _hid_arg]
        lib.H5Dcreate2.restype = _hid
        lib.H5Dcreate2.argtypes = [_hid_arg, ctypes.c_char_p, _hid_arg, _hid_arg, _hid_arg, _hid_arg, _hid_arg]
        lib.H5Dwrite.argtypes = [_hid_arg, _hid_arg, _hid_arg, _hid_arg, _hid_arg, ctypes.c_void_p]
        lib.H5Acreate2.restype = _hid
        lib.H5Acreate2.argtypes = [_hid_arg, ctypes.c_char_p, _hid_arg, _hid_arg, _hid_arg, _hid_arg]
        lib.H5Awrite.argtypes = [_hid_arg, _hid_arg, ctypes.c_void_p]
        lib.H5Screate_simple.restype = _hid
        lib.H5Screate_simple.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p]
        lib.H5Dget_offset.restype = ctypes.c_uint64
        lib.H5Dget_offset.argtypes = [_hid_arg]
        lib.H5Pcopy.restype = _hid
        lib.H5Pcopy.argtypes = [_hid_arg]
        lib.H5Pclose.argtypes = [_hid_arg]
        lib.H5Pset_external.argtypes = [_hid_arg, ctypes.c_char_p, ctypes.c_int64, ctypes.c_uint64]
        for name in ("H5Aclose", "H5Dclose", "H5Gclose", "H5Sclose"):
            getattr(lib, name).argtypes = [_hid_arg]
    except (OSError, AttributeError):
        return None
    return lib


_LIB = _load()
_SCALAR = h5py.h5s.create(h5py.h5s.SCALAR)
_SCALAR_ID = _SCALAR.id
_LCPL = h5fast._LCPL
_DCPL = h5fast._DCPL
_HADDR_UNDEF = 2**64 - 1


def _dcpl_early() -> Any:
    """h5py's defaults, but the space allocated at creation and no fill value written (the data follows)."""
    plist = h5fast._dcpl()
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    plist.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return plist


_DCPL_EARLY = _dcpl_early()


def _dcpl_external() -> Any:
    """h5py's defaults, no fill value ever written (the bytes are in the external file already)."""
    plist = h5fast._dcpl()
    plist.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return plist


_DCPL_EXTERNAL = _dcpl_external()


def available() -> bool:
    return _LIB is not None


def _check(value: int, what: str) -> int:
    if value < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"HDF5 {what} failed" + (f": {os.strerror(err)}" if err else ""))
    return value


class _Attrs:
    """Scalar attributes of one fixed set of names and types, written in one go.

    Each value goes through a buffer made once, whose address is known: asking
    numpy for an array's address (``.ctypes.data``) costs ~5 µs, more than
    the HDF5 call itself.
    """

    def __init__(self, fields: list[tuple[str, np.dtype]]):
        self.fields = []
        for name, dtype in fields:
            buf = np.zeros((), dtype=np.dtype(dtype))
            self.fields.append((name.encode(), buf, buf.ctypes.data, h5fast._type(np.dtype(dtype)).id))

    def write(self, oid: int, values: list[Any]) -> None:
        # The C functions and the scalar space's id bound once per call: ten attributes per event.
        create, write, close, space = _LIB.H5Acreate2, _LIB.H5Awrite, _LIB.H5Aclose, _SCALAR_ID
        for (name, buf, address, tid), value in zip(self.fields, values):
            buf[()] = value
            aid = create(oid, name, tid, space, _DEFAULT, _DEFAULT)
            if aid < 0:
                _check(aid, "H5Acreate2")
            try:
                if write(aid, tid, address) < 0:
                    _check(-1, "H5Awrite")
            finally:
                close(aid)


_TRACE_ATTRS_32 = _Attrs([("id", np.uint32), ("timestamp", np.uint64), ("timestamp_other", np.uint64),
                          ("complete", np.uint8)])
_TRACE_ATTRS_64 = _Attrs([("id", np.uint64), ("timestamp", np.uint64), ("timestamp_other", np.uint64),
                          ("complete", np.uint8)])
_CLOUD_ATTRS = _Attrs([("orig_run", np.int64), ("orig_event", np.int64), ("ic_amplitude", np.float64),
                       ("ic_integral", np.float64), ("ic_centroid", np.float64), ("ic_multiplicity", np.float64)])


def _dataset(loc: int, name: bytes, data: np.ndarray, raw: RawWriter | External | None = None) -> int:
    """A contiguous dataset holding ``data`` (h5py's defaults: no timestamps); its open identifier.

    With ``raw`` (the file's :class:`.rawio.RawWriter`) a dataset of
    ``rawio.THRESHOLD`` bytes or more gets its file space at once and its bytes
    are written there by ``raw`` (direct I/O), not by ``H5Dwrite``. With an
    :class:`.rawio.External` such a dataset is external storage of the bytes
    already written there (a part's copy of a store's dataset, :mod:`.store`).
    """
    lib = _LIB
    tid = h5fast._type(data.dtype)
    dims = (ctypes.c_uint64 * data.ndim)(*data.shape)
    large = raw is not None and data.nbytes >= rawio.THRESHOLD
    direct = large and not isinstance(raw, External)
    space = _check(lib.H5Screate_simple(data.ndim, dims, None), "H5Screate_simple")
    try:
        if large and not direct:
            dcpl = _check(lib.H5Pcopy(_DCPL_EXTERNAL.id), "H5Pcopy")
            try:
                _check(lib.H5Pset_external(dcpl, raw.name, raw.take(data.nbytes), data.nbytes), "H5Pset_external")
                return _check(lib.H5Dcreate2(loc, name, tid.id, space, _LCPL.id, dcpl, _DEFAULT), "H5Dcreate2")
            finally:
                lib.H5Pclose(dcpl)
        ds = _check(lib.H5Dcreate2(loc, name, tid.id, space, _LCPL.id, (_DCPL_EARLY if direct else _DCPL).id,
                                   _DEFAULT), "H5Dcreate2")
    finally:
        lib.H5Sclose(space)
    try:
        if direct:
            offset = lib.H5Dget_offset(ds)
            if offset == _HADDR_UNDEF:
                raise OSError(0, "HDF5 H5Dget_offset failed")
            raw.write(data, offset)
        else:
            _check(lib.H5Dwrite(ds, tid.id, _DEFAULT, _DEFAULT, _DEFAULT, data.ctypes.data), "H5Dwrite")
    except BaseException:
        lib.H5Dclose(ds)
        raise
    return ds


def write_traces(group: Any, event: Any, name: str, *, frib: bool = True, raw: RawWriter | External | None = None,
                 **dataset_options: Any) -> None:
    """As :func:`.layout.write_traces` (the same objects), in direct calls when nothing unusual is asked.

    ``raw``: the part file's raw writer (see :func:`_dataset`).
    """
    traces = event.traces
    fribdata = event.get("frib") if frib else None
    if (_LIB is None or dataset_options or not len(traces) or fribdata
            or traces.dtype != np.int16 or not traces.flags.c_contiguous):
        layout.write_traces(group, event, name, frib=frib, **dataset_options)
        return
    lib = _LIB
    eg = _check(lib.H5Gcreate2(group.id.id, name.encode(), _LCPL.id, _DEFAULT, _DEFAULT), "H5Gcreate2")
    try:
        ds = _dataset(eg, b"get_traces", traces, raw)
        try:
            attrs = _TRACE_ATTRS_32 if 0 <= event.id < 2**32 else _TRACE_ATTRS_64
            attrs.write(ds, [event.id, event.timestamp, event.timestamp_other, bool(event.complete)])
        finally:
            lib.H5Dclose(ds)
    finally:
        lib.H5Gclose(eg)


def write_cloud(group: Any, event: Any, name: str, *, raw: RawWriter | External | None = None,
                **dataset_options: Any) -> bool:
    """As :func:`.layout.write_cloud` (the same object), in direct calls when nothing unusual is asked."""
    cloud = event.get("cloud")
    if cloud is None:
        return False
    if (_LIB is None or dataset_options or cloud.dtype != np.float64 or cloud.ndim != 2 or cloud.shape[1] != 8
            or not len(cloud) or not cloud.flags.c_contiguous):
        return layout.write_cloud(group, event, name, **dataset_options)
    ds = _dataset(group.id.id, name.encode(), cloud, raw)
    try:
        ic = layout.ic_attributes(event)
        _CLOUD_ATTRS.write(ds, [event.run if event.run is not None else -1, event.id, ic["ic_amplitude"],
                                ic["ic_integral"], ic["ic_centroid"], ic["ic_multiplicity"]])
    finally:
        _LIB.H5Dclose(ds)
    return True
