"""Component data as Arrow arrays of exactly the types Rerun 0.41 stores, logged without the SDK's conversions.

Rerun's Python SDK converts every component it is given (numpy or lists) in
Python, per call: a line strip at a time, colours packed row by row, each
field of an archetype through its own converter. The live view logs ~16
entities per drawn event, so that machinery, not the data, was most of its
cost. Here each component is built once as the Arrow array Rerun itself
would make (float32 positions and radii, RGBA packed into uint32, UTF-8
text; the types are read from the SDK's component classes) and
:func:`components` pairs the arrays with the archetype's own component
descriptors, which ``log(path, components(...))`` sends as they are. What is
stored is the same as with ``rr.Points3D(...)`` etc.: tests compare both, and
a recording made before this module with one made after.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from itertools import accumulate
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["positions", "strips", "flat_strips", "offset_strips", "pack", "colors", "rgba", "floats", "flag", "texts",
           "utf8", "class_ids", "joined_texts", "TextTable", "fixed", "batches", "components", "field", "row",
           "log_row", "send_row", "blob"]


@cache
def _type(component: str) -> pa.DataType:
    import rerun as rr

    return getattr(rr.components, f"{component}Batch")._ARROW_DATATYPE


def positions(xy: np.ndarray, dims: int) -> pa.Array:
    """(N, dims) positions (any float dtype) as Position2D / Position3D data (float32)."""
    flat = np.ascontiguousarray(xy, dtype=np.float32)
    return _fixed_lists(_type(f"Position{dims}D"), flat, flat.size // dims)


def _fixed_lists(kind: pa.DataType, flat: np.ndarray, n: int) -> pa.Array:
    """``n`` fixed-size lists of ``kind`` over the contiguous float32 ``flat`` (no copy, no check: the
    buffers are Arrow's as they are)."""
    values = pa.Array.from_buffers(pa.float32(), flat.size, [None, pa.py_buffer(flat)])
    return pa.Array.from_buffers(kind, n, [None], children=[values])


def strips(parts: Sequence[np.ndarray], dims: int = 2) -> pa.Array:
    """Line strips (each an (n, dims) array) as LineStrip2D / LineStrip3D data: one list of float32 points each."""
    kind = _type(f"LineStrip{dims}D")
    sizes = np.fromiter((len(p) for p in parts), dtype=np.int32, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    flat = (np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1, dims) for p in parts]) if len(parts)
            else np.zeros((0, dims), dtype=np.float32)).reshape(-1)
    points = pa.FixedSizeListArray.from_arrays(pa.array(flat), type=kind.value_type)
    return pa.ListArray.from_arrays(pa.array(offsets), points, type=kind)


def flat_strips(points: np.ndarray, sizes: np.ndarray, dims: int = 2) -> pa.Array:
    """Line strips given as all their points at once ((N, dims), strip after strip) and the point count of
    each: the same data as :func:`strips` of the pieces, without a conversion per strip."""
    kind = _type(f"LineStrip{dims}D")
    offsets = np.zeros(len(sizes) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    flat = np.ascontiguousarray(points, dtype=np.float32).reshape(-1)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(flat),
                                                                                         type=kind.value_type),
                                    type=kind)


def offset_strips(points: np.ndarray, offsets: np.ndarray, dims: int = 2) -> pa.Array:
    """Line strips given as float32 points ((N, dims), strip after strip) and the int32 offsets of the strips
    (len(strips) + 1, from 0 to N): :func:`flat_strips` when both are made in that form already."""
    kind = _type(f"LineStrip{dims}D")
    points = np.ascontiguousarray(points, dtype=np.float32)
    return pa.Array.from_buffers(kind, len(offsets) - 1, [None, pa.py_buffer(np.ascontiguousarray(
        offsets, dtype=np.int32))], children=[_fixed_lists(kind.value_type, points, points.size // dims)])


def pack(rgb: Any) -> np.ndarray:
    """One RGB(A) triple or (N, 3|4) uint8 rows packed as Rerun's colours (0xRRGGBBAA uint32), opaque unless
    given alpha."""
    if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 2 and rgb.shape[1] == 3:
        # bytes A, B, G, R read as one little-endian uint32 are 0xRRGGBBAA: no shifts, one copy
        out = np.full((len(rgb), 4), 255, dtype=np.uint8)
        out[:, :0:-1] = rgb
        return out.view("<u4").reshape(-1).astype(np.uint32)
    array = np.asarray(rgb, dtype=np.uint32).reshape(-1, np.shape(rgb)[-1] if np.ndim(rgb) else 3)
    alpha = array[:, 3] if array.shape[1] == 4 else np.uint32(255)
    return ((array[:, 0] << 24) | (array[:, 1] << 16) | (array[:, 2] << 8) | alpha).astype(np.uint32)


def colors(rgb: Any) -> pa.Array:
    """RGB(A) colours (see :func:`pack`) as Color data."""
    if isinstance(rgb, tuple):  # one colour for a whole part: the same few every time
        return _one_color(rgb)
    return rgba(pack(rgb))


@cache
def _one_color(rgb: tuple) -> pa.Array:
    return rgba(pack(rgb))


def rgba(packed: np.ndarray) -> pa.Array:
    """Packed colours (uint32 0xRRGGBBAA, e.g. :meth:`.colors.ColorScale.rgba`) as Color data."""
    return _primitive(_type("Color"), np.uint32, packed)


def _primitive(kind: pa.DataType, dtype: Any, values: Any) -> pa.Array:
    """``values`` (one per item) as an Arrow array of the primitive ``kind`` over their own buffer (no
    conversion pass: ``pa.array`` of numpy data costs half as much again per array, a drawn event makes ~6)."""
    flat = np.ascontiguousarray(np.atleast_1d(np.asarray(values, dtype=dtype))).reshape(-1)
    return pa.Array.from_buffers(kind, flat.size, [None, pa.py_buffer(flat)])


def floats(values: Any, component: str = "Radius") -> pa.Array:
    """One value or one per item as float32 component data (Radius, DrawOrder ...)."""
    if isinstance(values, (float, int)):
        return _one_float(float(values), component)
    return _primitive(_type(component), np.float32, values)


@cache
def _one_float(value: float, component: str) -> pa.Array:
    return pa.array(np.array([value], dtype=np.float32), type=_type(component))


@cache
def flag(value: bool) -> pa.Array:
    """One boolean as ShowLabels data."""
    return pa.array([bool(value)], type=_type("ShowLabels"))


def texts(labels: Sequence[str]) -> pa.Array:
    """Labels as Text data (UTF-8): their bytes and offsets given to Arrow as they are (``pa.array`` of Python
    strings runs pyarrow's generic converter, several times dearer per call once its code is out of the cache;
    a drawn event makes four)."""
    encoded = [label.encode() for label in labels]
    offsets = np.fromiter(accumulate(map(len, encoded), initial=0), dtype=np.int32, count=len(encoded) + 1)
    return pa.Array.from_buffers(_type("Text"), len(encoded), [None, pa.py_buffer(offsets),
                                                               pa.py_buffer(b"".join(encoded))])


def utf8(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """Text data from an Arrow string array's buffers: int32 ``offsets`` (items + 1) and the UTF-8 ``data``."""
    joined = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    return joined if joined.type == _type("Text") else joined.cast(_type("Text"))


def blob(data: np.ndarray) -> pa.Array:
    """The bytes of a contiguous array as one Blob (an image's buffer), without a copy."""
    flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    kind = _type("Blob")
    values = pa.Array.from_buffers(kind.value_type, flat.size, [None, pa.py_buffer(flat)])
    offsets = pa.py_buffer(np.array([0, flat.size], dtype=np.int32))
    return pa.Array.from_buffers(kind, 1, [None, offsets], children=[values])


def class_ids(ids: np.ndarray) -> pa.Array:
    """Annotation class ids (one per item) as ClassId data."""
    return _primitive(_type("ClassId"), np.uint16, ids)


class TextTable:
    """Strings addressed by an integer (e.g. "pad 1234: " by pad number) kept as one UTF-8 buffer."""

    def __init__(self, strings: Sequence[str]):
        encoded = [s.encode() for s in strings]
        self.lengths = np.array([len(b) for b in encoded], dtype=np.int64)
        self.starts = np.zeros(len(encoded), dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=self.starts[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.lengths)


def joined_texts(first: TextTable, first_index: np.ndarray, second: TextTable, second_index: np.ndarray
                 ) -> pa.Array:
    """Text data whose item ``i`` is ``first[first_index[i]] + second[second_index[i]]``.

    The bytes are gathered by a compiled kernel (no Python string per item):
    ~20 times faster than formatting 700 hover labels one by one.
    """
    from .kernels import join_texts

    offsets, data = join_texts(first.data, first.starts, first.lengths, np.asarray(first_index, dtype=np.int64),
                               second.data, second.starts, second.lengths, np.asarray(second_index, dtype=np.int64))
    return utf8(offsets, data)


def fixed(archetype: Any) -> dict[Any, pa.Array]:
    """An archetype's components as a row (:func:`row`), built once and joined to what changes per event."""
    out = {}
    for batch in archetype.as_component_batches():
        array = batch.as_arrow_array()
        if array is not None:
            out.setdefault(batch.component_descriptor(), array)
    return out


def batches(archetype: Any) -> list[Any]:
    """The component batches of an archetype (built once, logged many times with ``log(path, batches)``)."""
    return list(archetype.as_component_batches())


class _Ready:
    """A component batch over an array that already has its Rerun type (Rerun's ``ComponentBatchLike``)."""

    __slots__ = ("array",)

    def __init__(self, array: pa.Array):
        self.array = array

    def as_arrow_array(self) -> pa.Array:
        return self.array


@cache
def _descriptor(archetype: str, field: str) -> Any:
    import rerun as rr

    return getattr(getattr(rr, archetype), f"descriptor_{field}")()


def field(archetype: str, name: str) -> Any:
    """The component descriptor of ``archetype``'s field ``name`` (e.g. ``field("Points2D", "positions")``)."""
    return _descriptor(archetype, name)


def row(archetype: str, **fields: pa.Array | None) -> dict[Any, pa.Array]:
    """A row as :func:`log_row` sends it: {component descriptor: array} for ``archetype``'s ``fields`` (None left
    out). Join rows with ``|`` (constants made once first: a row's first array for a component is kept)."""
    return {_descriptor(archetype, name): array for name, array in fields.items() if array is not None}


def components(archetype: str, **fields: pa.Array | None) -> list[Any]:
    """What ``rr.<archetype>(**fields).as_component_batches()`` gives for arrays made here (same descriptors,
    same arrays; fields given None are left out), without the archetype's per-field conversion machinery:
    log it with ``log(path, components(...))``."""
    from rerun import DescribedComponentBatch

    return [DescribedComponentBatch(_Ready(array), _descriptor(archetype, field))
            for field, array in fields.items() if array is not None]


def log_row(stream: Any, path: str, archetypes: Sequence[Any] | dict[Any, pa.Array], static: bool = False,
            held: dict[Any, pa.Array] | None = None, native: Any = None) -> None:
    """``stream.log(path, *archetypes, static=static)`` without the SDK's per-call Python layers.

    ``archetypes`` are archetypes or lists of component batches (:func:`components`, :func:`batches`), or a
    ready row (:func:`row`: what the view draws per event is made so, without a batch object per array).
    The row goes to Rerun's own binding as ``RecordingStream.log`` sends it (a component given twice
    keeps its first batch; the timelines set on this thread and the log time are added by Rerun):
    ``log`` spends ~15 us per call on checks and wrappers before that, a third of a drawn event's
    logging. Errors raise (``log`` would turn them into warnings).

    ``held`` (descriptor -> array, kept by the caller per stream and entity): the arrays this entity
    already holds in the viewer. A component whose array is the very object sent before (a constant
    made once: a radius, a flag, a draw order, a caption's anchor) is left out of the row, since the
    viewer shows the latest value of each component (latest-at); the caller empties ``held`` when the
    entity is cleared.
    """
    if isinstance(archetypes, dict):
        sent = archetypes
    else:
        sent = {}
        for item in archetypes:
            as_batches = getattr(item, "as_component_batches", None)
            for batch in (as_batches() if as_batches is not None else item):
                descriptor = batch.component_descriptor()
                if descriptor not in sent:
                    array = batch.as_arrow_array()
                    if array is not None:
                        sent[descriptor] = array
    send_row(native if native is not None else stream.to_native(), path, sent, held, static)


@cache
def _bindings() -> Any:
    """``rerun.bindings`` (imported on first use, not with this module: see :func:`.rrdfile.quiet_footer_warning`)."""
    from rerun import bindings

    return bindings


def send_row(native: Any, path: str, row: dict[Any, pa.Array], held: dict[Any, pa.Array] | None,
             static: bool = False) -> None:
    """Send a ready row (:func:`row`) to the native recording ``native`` through Rerun's binding, leaving out
    what ``held`` says the entity holds (see :func:`log_row`)."""
    if held is not None:
        row = {descriptor: array for descriptor, array in row.items() if held.get(descriptor) is not array}
        if not row:
            return
        held.update(row)
    _bindings().log_arrow_msg(path, components=row, static_=static, recording=native)
