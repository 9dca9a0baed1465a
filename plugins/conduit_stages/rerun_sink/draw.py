"""Turns the numpy-only primitives of :mod:`.plot2d` into Rerun 0.41 archetypes.

Every component goes in as an Arrow array of Rerun's own type (:mod:`.arrow`), which
the SDK takes without converting it.

Radii given as negative numbers are in UI points (constant on screen whatever
the zoom), which keeps lines and text anchors the same size in a small grid
cell and a maximized view.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from . import arrow
from .plot2d import Figure, Lines, Picture, Texts

__all__ = ["figure_archetypes", "log_figure", "compact"]


def compact(figure: Figure) -> Figure:
    """The same drawing in as few parts as possible: all lines in one part (in the order they were added,
    at the highest draw order), texts in one part per kind. Fewer parts, fewer log calls.

    Used for what is redrawn with every event; the run panels keep their named parts.
    """
    lines = [p for p in figure.parts.values() if isinstance(p, Lines)]
    texts: dict[bool, list[Texts]] = {}
    out = Figure()
    for name, part in figure.parts.items():
        if isinstance(part, Texts):
            texts.setdefault(part.hover_only, []).append(part)
        elif not isinstance(part, Lines):
            out.add(name, part)
    if lines:
        strips = [s for part in lines for s in part.strips]
        colors = np.vstack([_rows(part.color, len(part.strips)) for part in lines]).reshape(-1, 3)
        widths = np.concatenate([np.full(len(part.strips), part.width, dtype=np.float32) if np.isscalar(part.width)
                                 else np.broadcast_to(np.asarray(part.width, dtype=np.float32), (len(part.strips),))
                                 for part in lines])
        out.add("lines", Lines(strips, colors, widths, None, max(p.draw_order for p in lines)))
    for hover, group in sorted(texts.items()):
        positions = np.vstack([np.asarray(p.positions, dtype=np.float64).reshape(-1, 2) for p in group])
        colors = np.vstack([_rows(p.color, len(p.labels)) for p in group]).reshape(-1, 3)
        out.add("hover" if hover else "texts", Texts(positions, [t for p in group for t in p.labels], colors, hover,
                                                     group[0].radius, max(p.draw_order for p in group)))
    return out


def _rows(color, n: int) -> np.ndarray:
    """(n, 3) uint8 colours of the ``n`` items of a part whose colour is one RGB triple or one row per item."""
    rows = np.asarray(color).astype(np.uint8).reshape(-1, 3)
    return np.repeat(rows, n, axis=0) if len(rows) == 1 else rows[:n]


def _archetypes(rr: Any, part: Lines | Texts | Picture) -> list[Any]:
    if isinstance(part, Lines):
        width = part.width if np.isscalar(part.width) else np.asarray(part.width)
        return [arrow.components("LineStrips2D", strips=arrow.strips(part.strips), radii=arrow.floats(-0.5 * width),
                                 colors=arrow.colors(part.color),
                                 labels=arrow.texts(part.labels) if part.labels is not None else None,
                                 show_labels=arrow.flag(False),
                                 draw_order=arrow.floats(float(part.draw_order), "DrawOrder"))]
    if isinstance(part, Texts):
        return [arrow.components("Points2D", positions=arrow.positions(part.positions, 2),
                                 radii=arrow.floats(-float(part.radius)), colors=arrow.colors(part.color),
                                 labels=arrow.texts(part.labels), show_labels=arrow.flag(not part.hover_only),
                                 draw_order=arrow.floats(float(part.draw_order), "DrawOrder"))]
    rgb = np.ascontiguousarray(part.rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    # What rr.Image(rgb, draw_order=...) and its Transform3D give, without the SDK converting the pixels
    # (~0.4 ms per heat map at every refresh): the pixels as they are, the format and placement made once.
    return [arrow.components("Image", buffer=arrow.blob(rgb), format=_image_format(rr, rgb.shape),
                             draw_order=arrow.floats(float(part.draw_order), "DrawOrder")),
            _placement(rr, float(part.left), float(part.top), part.width / w, part.height / h)]


@functools.lru_cache(maxsize=64)
def _image_format(rr: Any, shape: tuple[int, ...]) -> Any:
    """ImageFormat data of a uint8 image of ``shape`` (rows, columns[, channels]), as ``rr.Image`` makes it."""
    return arrow.fixed(rr.Image(np.zeros(shape, dtype=np.uint8)))[rr.Image.descriptor_format()]


@functools.lru_cache(maxsize=256)
def _placement(rr: Any, left: float, top: float, sx: float, sy: float) -> list[Any]:
    """The Transform3D putting an image's pixel grid on its rectangle (the same few for every refresh)."""
    return arrow.batches(rr.Transform3D(translation=[left, top, 0.0], scale=[sx, sy, 1.0]))


def figure_archetypes(rr: Any, path: str, figure: Figure) -> list[tuple[str, list[Any]]]:
    """(entity path, archetypes) for every part of ``figure`` under ``path``."""
    return [(f"{path}/{name}", _archetypes(rr, part)) for name, part in figure.parts.items()]


def log_figure(log: Callable[..., None], rr: Any, path: str, figure: Figure, sent: dict[str, tuple] | None = None
               ) -> None:
    """Log every part of ``figure`` under ``path`` through ``log(entity, *archetypes)`` (one row per part).

    With ``sent`` (entity -> (part, content) last logged there), a part equal to what its entity already
    shows is not logged again (nor compared when it is the very object logged before): the viewer's latest-at keeps showing it, and axes, titles and gates of the run
    panels, which rarely change, cost nothing at a refresh.
    """
    for name, part in figure.parts.items():
        entity = f"{path}/{name}"
        if sent is not None:
            previous = sent.get(entity)
            if previous is not None and previous[0] is part:  # the very part sent last (axes made once)
                continue
            key = _content(part)
            sent[entity] = (part, key)
            if previous is not None and previous[1] == key:
                continue
        log(entity, *_archetypes(rr, part))


def _content(part: Lines | Texts | Picture) -> tuple:
    """Everything that decides how a part looks, as comparable values (exact bytes of its arrays)."""
    def raw(value) -> tuple:
        array = np.asarray(value)
        return array.dtype.str, array.shape, array.tobytes()

    if isinstance(part, Lines):
        return ("lines", tuple(raw(s) for s in part.strips), raw(part.color), raw(part.width),
                None if part.labels is None else tuple(part.labels), part.draw_order)
    if isinstance(part, Texts):
        return ("texts", raw(part.positions), tuple(part.labels), raw(part.color), part.hover_only, part.radius,
                part.draw_order)
    return ("picture", raw(part.rgb), part.left, part.top, part.width, part.height, part.draw_order)
