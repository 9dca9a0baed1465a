"""Saving histograms and gates to HDF5 and reading them back.

Layout under a group (``/histograms`` in the run file, or the root of the
histogram sink's own file)::

    histograms/                    attrs: events (int), angle_unit = "deg", format = "conduit-histograms:1"
        <name>/                    attrs: x, y ("" for 1-D), x_unit, y_unit, gate ("" = none),
                                          entries, outside, dimensions
            counts   int64 (x_bins,) or (x_bins, y_bins)   counts[i, j] = bin x_edges[i].., y_edges[j]..
            x_edges  float64 (x_bins + 1,)
            y_edges  float64 (y_bins + 1,)                 2-D only
        gates/<gate>/              attrs: kind, histogram, quantities, members
            polygon  float64 (K, 2)                        polygon gates
            interval float64 (2,)                          interval gates
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .hset import HistogramSet

__all__ = ["write_histograms", "read_histograms", "FORMAT"]

FORMAT = "conduit-histograms:1"


def write_histograms(parent: Any, hset: HistogramSet, name: str = "histograms") -> None:
    """Write ``hset`` (a consistent snapshot) into the h5py group ``parent[name]`` (replaced if present)."""
    views = hset.snapshot()
    with hset.lock:
        events = hset.events
        gates = list(hset.gates.values())
    if name in parent:
        del parent[name]
    group = parent.create_group(name)
    group.attrs["events"] = np.int64(events)
    group.attrs["angle_unit"] = "deg"
    group.attrs["format"] = FORMAT
    for view in views:
        g = group.create_group(view.name)
        g.attrs["dimensions"] = view.dimensions
        g.attrs["x"] = view.x.quantity.name
        g.attrs["x_unit"] = view.x.quantity.unit
        g.attrs["y"] = "" if view.y is None else view.y.quantity.name
        g.attrs["y_unit"] = "" if view.y is None else view.y.quantity.unit
        g.attrs["gate"] = view.gate or ""
        g.attrs["entries"] = np.int64(view.entries)
        g.attrs["outside"] = np.int64(view.outside)
        g.create_dataset("counts", data=view.counts)
        g.create_dataset("x_edges", data=view.x.edges)
        if view.y is not None:
            g.create_dataset("y_edges", data=view.y.edges)
    gates_group = group.create_group("gates")
    for gate in gates:
        gg = gates_group.create_group(gate.name)
        gg.attrs["kind"] = gate.kind
        gg.attrs["histogram"] = gate.histogram or ""
        gg.attrs["quantities"] = ",".join(gate.quantities)
        gg.attrs["members"] = ",".join(gate.members)
        if gate.polygon is not None:
            gg.create_dataset("polygon", data=gate.polygon)
        if gate.interval is not None:
            gg.create_dataset("interval", data=np.asarray(gate.interval, dtype=np.float64))


def read_histograms(group: Any) -> dict[str, dict[str, Any]]:
    """{name: {"counts", "x_edges", ["y_edges"], attrs...}} from a group written by :func:`write_histograms`."""
    out: dict[str, dict[str, Any]] = {}
    for name, g in group.items():
        if name == "gates":
            continue
        entry: dict[str, Any] = {k: _plain(v) for k, v in g.attrs.items()}
        for key in ("counts", "x_edges", "y_edges"):
            if key in g:
                entry[key] = g[key][...]
        out[name] = entry
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
