"""Read a recording back with rerun's own reader (rerun.chunk.RrdReader) into plain Python rows."""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path


_ROW_ID = "rerun.controls.RowId"


def read_rrd(path: str | Path) -> dict[str, list[dict]]:
    """{entity path: [row dict (column name -> value), ...]} over every chunk, in file order.

    Static rows have no timeline columns. Rows of one entity are sorted by
    the ``event`` timeline when present, then in the order they were logged
    (their RowId).
    """
    from rerun.chunk import RrdReader

    rows: dict[str, list[dict]] = defaultdict(list)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # streamed files have no footer; stream() handles them
        reader = RrdReader(str(path))
        for chunk in reader.stream():
            batch = _plain_columns(chunk.to_record_batch())
            n = chunk.num_rows
            for i in range(n):
                rows[chunk.entity_path].append({k: v[i] for k, v in batch.items()} | {"_static": chunk.is_static})
    for entity, entries in rows.items():
        # Rerun orders rows of the same time by their RowId (time-ordered ids): the file's order is the
        # batcher's, which groups rows by the components they carry.
        if entries and all("event" in r for r in entries if not r["_static"]):
            entries.sort(key=lambda r: (not r["_static"], r.get("event") or -1, r.get(_ROW_ID) or b""))
        else:
            entries.sort(key=lambda r: (not r["_static"], r.get(_ROW_ID) or b""))
    return dict(rows)


def _plain_columns(record_batch) -> dict[str, list]:
    """Columns as Python lists; duration/timestamp timelines as int64 nanoseconds."""
    import pyarrow as pa

    out = {}
    for name, column in zip(record_batch.schema.names, record_batch.columns):
        if pa.types.is_duration(column.type) or pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        out[name] = column.to_pylist()
    return out


def blueprints(path: str | Path) -> list:
    from rerun.chunk import RrdReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(RrdReader(str(path)).blueprints())


def event_rows(rows: dict[str, list[dict]], entity: str) -> list[dict]:
    """The rows of ``entity`` logged on the event timeline (not static)."""
    return [r for r in rows.get(entity, []) if not r["_static"] and r.get("event") is not None]


def latest(rows: dict[str, list[dict]], entity: str) -> dict:
    """The last row of ``entity`` (by event, then file order)."""
    return rows[entity][-1]


def image_of(rows: dict[str, list[dict]], entity: str):
    """The newest ``Image`` of ``entity`` as a (height, width, channels) uint8 array (its latest-at state: a
    format that did not change is not logged again)."""
    import numpy as np

    row = latest_state(rows, entity)
    fmt = row["Image:format"][0]
    pixels = np.array(row["Image:buffer"][0], dtype=np.uint8)
    return pixels.reshape(fmt["height"], fmt["width"], -1)


def texts(rows: dict[str, list[dict]], prefix: str) -> list[str]:
    """Every label of the newest row of each entity under ``prefix`` (text labels of the plots), in path order."""
    out: list[str] = []
    for entity in sorted(rows):
        if entity == prefix or entity.startswith(prefix.rstrip("/") + "/"):
            row = rows[entity][-1]
            for key in ("Points2D:labels", "Points3D:labels"):
                if row.get(key):
                    out.extend(row[key])
    return out


def latest_state(rows: dict[str, list[dict]], entity: str, event: int | None = None) -> dict:
    """What the viewer shows of ``entity`` at ``event`` (default: the end): for each component, the newest value
    logged at or before it (rows may leave out what they do not change), static values first, dropping what a
    recursive ``Clear`` of the entity or an ancestor logged after it removed (a clear and the rows of the same
    event: the rows come after it, as the view logs them)."""
    ancestors = {"/".join(entity.split("/")[:k]) or "/" for k in range(1, entity.count("/") + 1)} | {entity}
    cleared = max((r["event"] for path in ancestors for r in rows.get(path, [])
                   if not r["_static"] and r.get("Clear:is_recursive") == [True]
                   and (event is None or r["event"] <= event)), default=None)
    state: dict = {}
    for r in rows.get(entity, []):
        timed = not r["_static"]
        if timed and (event is not None and r.get("event") is not None and r["event"] > event):
            continue
        if timed and cleared is not None and r.get("event") is not None and r["event"] < cleared:
            continue
        state.update({k: v for k, v in r.items() if ":" in k and v is not None and not k.startswith("Clear:")})
    return state
