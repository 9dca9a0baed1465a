"""Reading merged HDF5 files written by attpc_merger (legacy, 1.0, 2.0; get_format.md 3).

:func:`open_merged` detects the layout and returns a :class:`MergedFile` that
reads events by their file index ``n`` (``event_{n}`` / ``evt{n}_data``).
:attr:`MergedFile.indices` lists the events the file holds, from the group
listing: the range attributes (``min_event .. max_event``, inclusive; Spyral's
1.0/2.0 readers stop one short) are checked against it, never trusted to
enumerate (a corrupt ``max_event`` of 10^9 must not mean 10^9 lookups).
Traces must be int16; another integer or float type is converted only when no
value changes, else the event is refused.

* legacy (detected by a ``/meta`` group): ``/get/evt{n}_data``, ``/get/evt{n}_header``
  = [event id, timestamp, timestamp_other] (float64), range in ``/meta/meta``,
  FRIB data in ``/frib/evt/evt{n}_{module}``;
* 1.0 (``/events`` attr ``version`` ``libattpc_merger:1.0``, also ``0.2.0``,
  harmonizer, synchronizer): ``/events/event_{n}/get_traces`` with attrs ``id``,
  ``timestamp``, ``timestamp_other`` on the dataset;
* 2.0 (``libattpc_merger:2.0``): ``/events/event_{n}/get/{pads, si_*}`` with the attrs
  on the ``get`` group.

FRIB/SIS3300 datasets (``977``, ``1903`` ...) come back as a dict name -> array, the
2.0 silicon datasets (``si_upstream_front`` ...) likewise. Errors are
:class:`MergedFileError` with one line naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MergedFile", "MergedFileError", "MergedEvent", "open_merged", "LEGACY", "V1", "V2"]

LEGACY, V1, V2 = "legacy", "1.0", "2.0"
_LEGACY_NAME = re.compile(r"^evt(\d+)_data$")
_EVENT_NAME = re.compile(r"^event_(\d+)$")
_V1_VERSIONS = ("libattpc_merger:1.0", "libattpc_merger:0.2.0", "harmonizer:", "synchronizer:")


class MergedFileError(RuntimeError):
    """A merged file that cannot be read (one line naming the file)."""


@dataclasses.dataclass
class MergedEvent:
    index: int  #: n in event_{n}
    event_id: int  #: the GET event id
    traces: np.ndarray  #: int16 (n, 517)
    timestamp: int
    timestamp_other: int
    frib: dict[str, np.ndarray] | None
    silicon: dict[str, np.ndarray] | None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


class MergedFile:
    """One open merged file (use :func:`open_merged`; close with :meth:`close` or ``with``)."""

    def __init__(self, path: Path, handle, layout: str, version: str, first: int, last: int):
        self.path = path
        self.file = handle
        self.layout = layout
        self.version = version
        #: The file's inclusive event index range.
        self.first = first
        self.last = last

    def __enter__(self) -> MergedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.file.close()
        except Exception:  # noqa: BLE001 - closing a broken file must not mask the real error
            pass

    def has(self, n: int) -> bool:
        """True when event index ``n`` is stored."""
        if self.layout == LEGACY:
            return f"evt{n}_data" in self.file["get"]
        return f"event_{n}" in self.file["events"]

    @functools.cached_property
    def indices(self) -> np.ndarray:
        """Sorted int64 indices ``n`` of the events the file holds (from its group listing, not its attributes)."""
        group = self.file["get"] if self.layout == LEGACY else self.file["events"]
        pattern = _LEGACY_NAME if self.layout == LEGACY else _EVENT_NAME
        found = [int(m.group(1)) for name in group if (m := pattern.match(name))]
        return np.array(sorted(found), dtype=np.int64)

    def select(self, first: int | None = None, last: int | None = None) -> np.ndarray:
        """Indices of the stored events in [first, last] (either bound may be None: open)."""
        idx = self.indices
        lo = 0 if first is None else np.searchsorted(idx, first, side="left")
        hi = len(idx) if last is None else np.searchsorted(idx, last, side="right")
        return idx[lo:hi]

    def count(self, first: int, last: int) -> int:
        """Events stored with index in [first, last]."""
        return len(self.select(first, last))

    def range_problem(self) -> str | None:
        """One line when the range attributes disagree with the events stored, else None."""
        idx = self.indices
        where = "/meta/meta" if self.layout == LEGACY else "/events min_event/max_event"
        if not len(idx):
            return f"{self.path}: {where} say events {self.first}..{self.last} but the file holds none"
        if idx[0] != self.first or idx[-1] != self.last:
            return (f"{self.path}: {where} say events {self.first}..{self.last} but the file holds {len(idx)} "
                    f"events, {idx[0]}..{idx[-1]}; reading the events it holds")
        return None

    def read(self, n: int) -> MergedEvent | None:
        """Event index ``n``, or None when the file lacks it. Raises MergedFileError on bad content."""
        try:
            if self.layout == LEGACY:
                return self._read_legacy(n)
            return self._read_events(n)
        except MergedFileError:
            raise
        except (KeyError, ValueError, TypeError, OSError) as err:
            raise MergedFileError(f"{self.path}: event {n}: cannot read ({self.layout} layout): {err}") from None

    def _check_traces(self, n: int, traces: np.ndarray) -> np.ndarray:
        if traces.ndim != 2 or traces.shape[1] != 517:
            raise MergedFileError(f"{self.path}: event {n}: traces have shape {traces.shape}, expected (n, 517)")
        return np.ascontiguousarray(_as_int16(traces, f"{self.path}: event {n}"))

    def _read_legacy(self, n: int) -> MergedEvent | None:
        get = self.file["get"]
        name = f"evt{n}_data"
        if name not in get:
            return None
        traces = self._check_traces(n, get[name][()])
        header = np.asarray(get[f"evt{n}_header"][()], np.float64).ravel()
        frib = None
        if "frib" in self.file and "evt" in self.file["frib"]:
            evt = self.file["frib"]["evt"]
            prefix = f"evt{n}_"
            frib = {}
            for module in ("977", "1903", "1904", "1905", "1906"):
                if prefix + module in evt:
                    frib[module] = evt[prefix + module][()]
            frib = frib or None
        return MergedEvent(n, int(header[0]), traces, int(header[1]), int(header[2]) if header.size > 2 else 0,
                           frib, None)

    def _read_events(self, n: int) -> MergedEvent | None:
        events = self.file["events"]
        name = f"event_{n}"
        if name not in events:
            return None
        group = events[name]
        silicon = None
        if self.layout == V1:
            dset = group["get_traces"]
            traces = self._check_traces(n, dset[()])
            attrs = dset.attrs
        else:
            get = group["get"]
            traces = self._check_traces(n, get["pads"][()])
            attrs = get.attrs
            silicon = {k: np.asarray(get[k][()]) for k in get if k.startswith("si_")} or None
        frib = None
        if "frib_physics" in group:
            physics = group["frib_physics"]
            frib = {k: np.asarray(physics[k][()]) for k in physics} or None
        return MergedEvent(n, int(attrs.get("id", n)), traces, int(attrs.get("timestamp", 0)),
                           int(attrs.get("timestamp_other", 0)), frib, silicon)


_INT16 = np.iinfo(np.int16)


def _as_int16(traces: np.ndarray, where: str) -> np.ndarray:
    """Traces as int16: int16 as is; other integer or float types only when no value changes, else an error.

    Every merger writes int16; another type means a foreign or damaged file, and
    a silent cast would wrap values (int32 70000 -> 4464).
    """
    if traces.dtype == np.int16:
        return traces
    kind = traces.dtype.kind
    if kind not in "iuf":
        raise MergedFileError(f"{where}: traces are {traces.dtype}, expected int16")
    if traces.size:
        if kind == "f" and not np.all(np.isfinite(traces)):
            raise MergedFileError(f"{where}: traces are {traces.dtype} with NaN or infinite values, expected int16")
        lo, hi = traces.min(), traces.max()
        if lo < _INT16.min or hi > _INT16.max:
            raise MergedFileError(f"{where}: traces are {traces.dtype} with values {lo}..{hi}, outside int16 "
                                  f"({_INT16.min}..{_INT16.max}); not converted")
        if kind == "f" and not np.array_equal(traces, np.round(traces)):
            raise MergedFileError(f"{where}: traces are {traces.dtype} with fractional values, expected int16; "
                                  "not converted")
    return traces.astype(np.int16)


def open_merged(path: Path) -> MergedFile:
    """Open a merged file and detect its layout; raise :class:`MergedFileError` (one line)."""
    import h5py

    if not path.exists():
        raise MergedFileError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise MergedFileError(f"{path}: cannot open as HDF5: {str(err).splitlines()[0]}") from None
    try:
        return _detect(path, handle)
    except MergedFileError:
        handle.close()
        raise
    except (KeyError, ValueError, TypeError, OSError) as err:
        handle.close()
        raise MergedFileError(f"{path}: unreadable merged file: {err}") from None


def _detect(path: Path, f) -> MergedFile:
    import h5py

    if "meta" in f and "get" in f:
        meta = np.asarray(f["meta"]["meta"][()]).ravel()
        if meta.size < 3:
            raise MergedFileError(f"{path}: legacy layout but /meta/meta has {meta.size} values, expected 4")
        first, last = int(meta[0]), int(meta[2])
        if first > last:
            raise MergedFileError(f"{path}: /meta/meta first event {first} > last event {last}")
        return MergedFile(path, f, LEGACY, "legacy", first, last)
    if "events" in f and isinstance(f["events"], h5py.Group):
        events = f["events"]
        version = _text(events.attrs.get("version", ""))
        if "min_event" not in events.attrs or "max_event" not in events.attrs:
            raise MergedFileError(f"{path}: /events lacks the min_event/max_event attributes")
        first, last = int(events.attrs["min_event"]), int(events.attrs["max_event"])
        if first > last:
            raise MergedFileError(f"{path}: /events attributes min_event {first} > max_event {last}")
        if version.startswith("libattpc_merger:2."):
            layout = V2
        elif version.startswith(_V1_VERSIONS):
            layout = V1
        else:
            probe = events.get(f"event_{first}")
            if probe is None:  # the attributes may be wrong: look at any stored event
                name = next((n for n in events if _EVENT_NAME.match(n)), None)
                probe = events.get(name) if name is not None else None
            if isinstance(probe, h5py.Group) and "get_traces" in probe:
                layout = V1
            elif isinstance(probe, h5py.Group) and "get" in probe:
                layout = V2
            else:
                raise MergedFileError(f"{path}: unknown merged layout (version {version!r})")
        return MergedFile(path, f, layout, version, first, last)
    raise MergedFileError(f"{path}: unknown HDF5 layout: neither /meta (legacy merger) nor /events "
                          "(attpc_merger 1.0/2.0)")
