"""How one event is laid out in HDF5: merger 1.0 traces, Spyral's Pointcloud and Cluster layouts.

Every writer takes an open h5py group and the event, and writes the event's
objects under names that are the same in a part file and in the final file
(see :mod:`.partfile`). Event objects are named by the GET event id.

* traces (attpc_merger "libattpc_merger:1.0")::

    /events                     attrs min_event, max_event (u64), min_get_ts, max_get_ts (u64),
                                      frib_run, frib_start, frib_stop, frib_time (u32, 0 = unknown),
                                      version = "libattpc_merger:1.0"
    /events/event_{id}/get_traces   int16 (n, 517) [cobo, asad, aget, channel, pad, 512 samples]
                                    attrs id (u32), timestamp, timestamp_other (u64)
    /events/event_{id}/frib_physics/{module}   FRIB arrays of the ``frib`` artifact (977, 1903, ...)

* point clouds (Spyral ``Pointcloud/run_NNNN.h5``)::

    /cloud                      attrs min_event, max_event
    /cloud/cloud_{id}           float64 (N, 8) [x, y, z, amplitude, integral, pad, time, scale],
                                z strictly increasing (the pointcloud stage's tie jitter)
                                attrs orig_run, orig_event (int64), ic_amplitude, ic_integral, ic_centroid,
                                      ic_multiplicity (float64; -1.0 when unknown)

* clusters (Spyral ``Cluster/run_NNNN.h5``)::

    /cluster                    attrs min_event, max_event
    /cluster/event_{id}         attrs nclusters (int64), orig_run, orig_event, ic_* (as for clouds)
    /cluster/event_{id}/cluster_{i}   attrs label, direction (int64: -1 none, 0 forward, 1 backward);
                                      dataset cloud float64 (M, 5) [x, y, z, integral, scale]

* estimates: ``/estimates``, one row per track: the fields of
  :data:`conduit.artifacts.ESTIMATE_DTYPE` (``event`` = the GET event id) plus
  ``run`` and ``ic_*``, chunked and extendable (see :data:`.sink.TABLE_DTYPE`);
  with layout "spyral" also Spyral's ``Estimation/run_NNNN.parquet`` (:mod:`.spyral`).

* kinematics (with a ``kinematics`` stage, recorded with the estimates):
  ``/kinematics``, one row per estimate row, the fields of
  :data:`conduit.artifacts.KINEMATICS_DTYPE`; attrs ``units``, ``status_codes``
  and ``fit_status_codes`` (the meaning of each code, comma-separated).

* failed stages: ``/stage_failures``, one row per stage that failed on an
  event or was not run on it because an input was missing (created at the
  first such row): ``event`` (int64, the GET event id), ``stage``, ``outcome``
  (``failed`` or ``not run``) and ``error`` (the exception, or why it was not
  run), strings UTF-8 (:data:`FAILURE_DTYPE`).

Spyral reads event objects only under their plain names (``cloud_{id}``,
``event_{id}``), so it does not see the suffixed copies of a repeated id.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from conduit.artifacts import FIT_STATUS, INTEGRAL, KINEMATICS_DTYPE, KINEMATICS_STATUS, SCALE, X, Y, Z

__all__ = [
    "MERGER_VERSION",
    "EVENTS",
    "CLOUD",
    "CLUSTER",
    "ESTIMATES",
    "KINEMATICS",
    "STAGE_FAILURES",
    "FAILURE_DTYPE",
    "failure_rows",
    "append_failures",
    "kinematics_rows",
    "concat_rows",
    "append_kinematics",
    "event_name",
    "cloud_name",
    "write_traces",
    "write_cloud",
    "write_clusters",
    "ic_attributes",
    "events_group_attrs",
    "range_attrs",
]

MERGER_VERSION = "libattpc_merger:1.0"
EVENTS, CLOUD, CLUSTER, ESTIMATES = "events", "cloud", "cluster", "estimates"
KINEMATICS = "kinematics"
STAGE_FAILURES = "stage_failures"
_TEXT = h5py.string_dtype("utf-8")
#: A row of ``/stage_failures``.
FAILURE_DTYPE = np.dtype([("event", np.int64), ("stage", _TEXT), ("outcome", _TEXT), ("error", _TEXT)])
#: Longest error text kept per row (characters): a traceback-long message would bloat a file of many failures.
ERROR_CHARS = 300
_IC_KEYS = ("amplitude", "integral", "centroid", "multiplicity")


def event_name(event_id: int, duplicate: int = 0) -> str:
    """``event_{id}``; a repeated id (a DAQ counter reset) gets ``event_{id}_{k}`` so nothing is lost."""
    return f"event_{event_id}" if not duplicate else f"event_{event_id}_{duplicate}"


def cloud_name(event_id: int, duplicate: int = 0) -> str:
    return f"cloud_{event_id}" if not duplicate else f"cloud_{event_id}_{duplicate}"


def ic_attributes(event: Any) -> dict[str, float]:
    """``ic_amplitude`` ... from an ``ion_chamber`` artifact (dict), else -1.0 each (Spyral's 'unknown')."""
    ic = event.get("ion_chamber") if hasattr(event, "get") else None
    out = {}
    for key in _IC_KEYS:
        value = -1.0
        if isinstance(ic, dict) and ic.get(key) is not None:
            value = float(ic[key])
        out[f"ic_{key}"] = value
    return out


def _origin_attrs(event: Any) -> dict[str, Any]:
    """``orig_run``, ``orig_event`` (int64, as Spyral writes them; run -1 when unknown) and ``ic_*`` (float64)."""
    return {
        "orig_run": np.int64(event.run if event.run is not None else -1),
        "orig_event": np.int64(event.id),
        **ic_attributes(event),
    }


def write_traces(group: Any, event: Any, name: str, *, frib: bool = True, **dataset_options: Any) -> None:
    """``group[name]/get_traces`` with id/timestamp attrs, plus ``frib_physics`` when the event has FRIB data."""
    from .h5fast import create_dataset, create_group, set_attrs

    eg = create_group(group, name)
    traces = np.ascontiguousarray(event.traces, dtype=np.int16)
    ds = create_dataset(eg, "get_traces", traces, **(dataset_options if len(traces) else {}))
    set_attrs(ds, {"id": np.uint32(event.id) if 0 <= event.id < 2**32 else np.uint64(event.id),
                   "timestamp": np.uint64(event.timestamp), "timestamp_other": np.uint64(event.timestamp_other),
                   "complete": np.uint8(bool(event.complete))})
    fribdata = event.get("frib") if frib else None
    if isinstance(fribdata, dict) and fribdata:
        fg = eg.create_group("frib_physics")
        for key, value in fribdata.items():
            if isinstance(value, np.ndarray):
                fg.create_dataset(str(key), data=value)
            elif isinstance(value, (int, float, np.integer, np.floating)):
                fg.attrs[str(key)] = value


def write_cloud(group: Any, event: Any, name: str, **dataset_options: Any) -> bool:
    """``group[name]``: the (N, 8) point cloud with Spyral's attributes; False when the event has none."""
    cloud = event.get("cloud")
    if cloud is None:
        return False
    from .h5fast import create_dataset, set_attrs

    cloud = np.ascontiguousarray(cloud, dtype=np.float64).reshape(-1, 8)
    ds = create_dataset(group, name, cloud, **(dataset_options if len(cloud) else {}))
    set_attrs(ds, _origin_attrs(event))
    return True


def write_clusters(group: Any, event: Any, name: str) -> bool:
    """``group[name]/cluster_{i}`` (x, y, z, integral, scale) per cluster; False without clusters."""
    clusters = event.get("clusters")
    cloud = event.get("cloud")
    if clusters is None or cloud is None:
        return False
    from .h5fast import create_dataset, create_group, set_attrs

    eg = create_group(group, name)
    set_attrs(eg, {"nclusters": np.int64(clusters.count), **_origin_attrs(event)})
    columns = [X, Y, Z, INTEGRAL, SCALE]
    for k in range(clusters.count):
        cg = create_group(eg, f"cluster_{k}")
        set_attrs(cg, {"label": np.int64(clusters.cluster_labels[k]), "direction": np.int64(clusters.directions[k])})
        rows = clusters.indices(k)
        create_dataset(cg, "cloud", np.ascontiguousarray(cloud[rows][:, columns], dtype=np.float64))
    return True


def events_group_attrs(min_event: int, max_event: int, min_ts: int, max_ts: int) -> dict[str, Any]:
    """The merger 1.0 ``/events`` attributes."""
    return {
        "min_event": np.uint64(min_event),
        "max_event": np.uint64(max_event),
        "min_get_ts": np.uint64(min_ts),
        "max_get_ts": np.uint64(max_ts),
        "frib_run": np.uint32(0),
        "frib_start": np.uint32(0),
        "frib_stop": np.uint32(0),
        "frib_time": np.uint32(0),
        "version": MERGER_VERSION,
    }


def range_attrs(min_event: int, max_event: int) -> dict[str, Any]:
    """``min_event`` / ``max_event`` of Spyral's cloud and cluster groups."""
    return {"min_event": np.int64(min_event), "max_event": np.int64(max_event)}


def kinematics_rows(batch: list[Any]) -> np.ndarray | None:
    """The ``kinematics`` rows of a batch of events (``event`` = the GET event id); None when there are none."""
    parts = []
    for event in batch:
        rows = event.get("kinematics") if hasattr(event, "get") else None
        if rows is not None and len(rows):
            rows = np.asarray(rows, dtype=KINEMATICS_DTYPE).copy()
            rows["event"] = event.id
            parts.append(rows)
    return concat_rows(parts)


def concat_rows(parts: list[np.ndarray]) -> np.ndarray | None:
    """Rows of one structured dtype joined into one array (None for none).

    ``np.concatenate`` promotes structured dtypes field by field in Python for
    every array joined: about 2 µs per row array, which at a commit of a few
    hundred events was 15 % of the writer's CPU. The dtypes are equal, so the
    rows are copied into one array of that dtype instead.
    """
    if not parts:
        return None
    out = np.empty(sum(len(p) for p in parts), dtype=parts[0].dtype)
    start = 0
    for p in parts:
        out[start:start + len(p)] = p
        start += len(p)
    return out


def append_kinematics(master: Any, rows: np.ndarray | None) -> None:
    """Append ``rows`` to the master's ``/kinematics`` table, created at the first rows."""
    _append_rows(master, KINEMATICS, rows, chunks=1024, attrs={
        "units": ("energies MeV (kinetic, at the vertex), excitation MeV, angles rad, ejectile_brho T·m, "
                  "reaction_x/y/z mm, fit_residual mm"),
        "status_codes": ",".join(KINEMATICS_STATUS),
        "fit_status_codes": ",".join(FIT_STATUS)})


def _append_rows(master: Any, name: str, rows: np.ndarray | None, *, chunks: int,
                 attrs: dict[str, Any] | None = None) -> None:
    """Append ``rows`` to the extendable table ``name`` of the master, created (with ``attrs``) at the first rows."""
    if rows is None:
        return
    if name not in master:
        table = master.create_dataset(name, shape=(0,), maxshape=(None,), dtype=rows.dtype, chunks=(chunks,))
        table.attrs.update(attrs or {})
    table = master[name]
    start = table.shape[0]
    table.resize((start + len(rows),))
    table[start:] = rows


def failure_rows(batch: list[Any]) -> np.ndarray | None:
    """The ``/stage_failures`` rows of a batch of events (``Event.failures``, ``Event.skipped_stages``)."""
    rows = []
    for event in batch:
        for outcome, marks in (("failed", getattr(event, "failures", {})),
                               ("not run", getattr(event, "skipped_stages", {}))):
            rows.extend((event.id, stage, outcome, text[:ERROR_CHARS]) for stage, text in marks.items())
    return np.array(rows, dtype=FAILURE_DTYPE) if rows else None


def append_failures(master: Any, rows: np.ndarray | None) -> None:
    """Append ``rows`` to the master's ``/stage_failures`` table, created at the first rows."""
    _append_rows(master, STAGE_FAILURES, rows, chunks=256)
